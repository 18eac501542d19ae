"""Predictive LDM on videos: probe and coverage helpers against exact cases, a short training run,
and the CLI's run folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from thermossl.models.ldm_data import render_frames

from thermossl.ldm_sequences import (
    SequenceConfig,
    fit_sequence_model,
    in_frame,
    injectivity_check,
    interval_coverage,
    linear_probe_r2,
    make_sequence_model,
    run_sequence_study,
    sequence_data,
    train_sequence_model,
)


def test_probe_r2_is_one_for_an_affine_feature_map_and_zero_for_noise():
    generator = np.random.default_rng(0)
    positions = generator.normal(size=(2, 50, 2))
    mixing = np.array([[1.0, 2.0, 0.5], [-1.0, 0.3, 2.0]])
    features = positions @ mixing + 0.7
    r2, weights, _ = linear_probe_r2(features[0], positions[0], features[1], positions[1])
    assert r2 == pytest.approx(1.0, abs=1e-12)
    assert weights.shape == (2, 3)
    noise, targets = generator.normal(size=(2, 20_000, 3)), generator.normal(size=(2, 20_000, 2))
    r2, _, _ = linear_probe_r2(noise[0], targets[0], noise[1], targets[1])
    assert abs(r2) < 0.002  # the out-of-sample R^2 of noise features: O(1/n)


def test_coverage_of_calibrated_gaussian_intervals_is_95_percent():
    """Truth = prediction + W e with e ~ N(0, P): each coordinate is covered with probability
    0.95; the binomial sd over 2 x 20,000 draws is 0.0011."""
    generator = torch.Generator().manual_seed(0)
    count, D = 20_000, 3
    weights = torch.tensor([[1.0, 0.5, 0.0], [0.0, -1.0, 2.0]], dtype=torch.float64)
    root = torch.randn(count, D, D, generator=generator, dtype=torch.float64)
    covariances = root @ root.mT / D + 0.1 * torch.eye(D, dtype=torch.float64)
    e = (
        torch.linalg.cholesky(covariances)
        @ torch.randn(count, D, 1, generator=generator, dtype=torch.float64)
    )[..., 0]
    predictions = np.zeros((count, 2))
    truth = (e @ weights.T).numpy()
    coverage = interval_coverage(weights.numpy(), predictions, covariances, truth)
    assert abs(coverage - 0.95) < 4 * (0.95 * 0.05 / (2 * count)) ** 0.5
    assert interval_coverage(weights.numpy(), predictions, covariances / 4, truth) < 0.8


def test_injectivity_check_passes_invertible_maps_and_flags_folds():
    """An affine map of a 2-D sample is injective (latent neighbours are state neighbours); the
    fold (s1, s2) -> (|s1|, s2) sends mirror images together: a frame's latent neighbour is its
    mirror image whenever that is nearer than its own state neighbours, i.e. about half of the
    frames farther than 0.5 from the fold line (|s1| > 0.25)."""
    generator = np.random.default_rng(1)
    states = generator.uniform(-1, 1, size=(4000, 2))
    affine = injectivity_check(states @ np.array([[2.0, 1.0], [0.5, -3.0]]) + 4.0, states)
    assert affine["folded_fraction"] == 0.0
    assert affine["max_distance"] < 0.2
    folded = injectivity_check(np.stack([np.abs(states[:, 0]), states[:, 1]], -1), states)
    wanted = 0.5 * np.mean(np.abs(states[:, 0]) > 0.25)  # = 0.375
    binomial_sd = (wanted * (1 - wanted) / 4000) ** 0.5
    assert abs(folded["folded_fraction"] - wanted) < 5 * binomial_sd + 0.02
    with pytest.raises(ValueError, match="same number"):
        injectivity_check(states[:10], states[:9])


def test_in_frame_marks_the_positions_the_renderer_does_not_pin():
    positions = torch.tensor([[0.0, 0.0], [2.3, -2.9], [2.5, 0.0], [0.0, -3.1]])
    assert in_frame(positions).tolist() == [True, True, False, False]
    # outside the frame, moving the dot no longer changes the image
    pinned = render_frames(torch.tensor([[2.5, 0.0], [2.9, 0.0]]))
    assert torch.equal(pinned[0], pinned[1])


def test_predictor_steps_move_the_latent_model_and_leave_the_encoder_alone():
    """Adam's first step moves every parameter by at most its learning rate; with 3 predictor-only
    steps before the joint one, the encoder still moves by one step and the latent model by more."""
    config = SequenceConfig(
        model="kalman-stopgrad",
        steps=1,
        batch_size=4,
        num_frames=6,
        train_sequences=8,
        test_sequences=4,
        predictor_steps=3,
        learning_rate=1e-3,
    )
    train, _ = sequence_data(config)
    torch.manual_seed(0)
    program = make_sequence_model(config, train.flattened_frames.shape[-1])
    before = {name: p.detach().clone() for name, p in program.named_parameters()}
    fit_sequence_model(program, config, train)
    moved = {
        name: float((p.detach() - before[name]).abs().max())
        for name, p in program.named_parameters()
    }
    encoder = [v for name, v in moved.items() if name.startswith("encoder.")]
    latent_model = [v for name, v in moved.items() if not name.startswith("encoder.")]
    assert 0 < max(encoder) <= 1e-3 * (1 + 1e-4)
    assert max(latent_model) > 2.5e-3
    with pytest.raises(ValueError, match="predictor_steps"):
        SequenceConfig(predictor_steps=-1)


def test_latent_normalization_ends_the_encoder_with_the_named_layer():
    """Standardized latents have sd sqrt(v / (v + eps)) for raw variance v; whitened ones have
    identity covariance up to eps over the raw covariance's smallest eigenvalue."""
    frames = torch.randn(6, 10, 100, generator=torch.Generator().manual_seed(2))
    eps = 1e-5
    for name in ("standardize", "whiten"):
        torch.manual_seed(0)
        program = make_sequence_model(
            SequenceConfig(model="kalman-stopgrad", latent_normalization=name), 100
        )
        raw = program.encoder[:-1](frames.reshape(60, 100)).detach()
        z = program.latents(frames).reshape(-1, 2).detach()
        if name == "standardize":
            variance = raw.var(0)
            assert torch.allclose(z.std(0), (variance / (variance + eps)).sqrt(), atol=1e-6)
        else:
            smallest = torch.linalg.eigvalsh(torch.cov(raw.T))[0]
            assert torch.allclose(torch.cov(z.T), torch.eye(2), atol=float(2 * eps / smallest))
    with pytest.raises(ValueError, match="latent_normalization"):
        SequenceConfig(latent_normalization="batchnorm")


def test_kalman_knn_training_improves_the_probe_on_circle_videos():
    config = SequenceConfig(
        steps=150, batch_size=16, num_frames=20, train_sequences=64, test_sequences=32
    )
    untrained = train_sequence_model(SequenceConfig(**{**config.__dict__, "steps": 1}), seed=0)
    trained = train_sequence_model(config, seed=0)
    assert trained["r2"] > untrained["r2"] + 0.02
    assert 0.0 <= trained["coverage_95"] <= 1.0


def test_the_study_resumes_and_the_cli_writes_its_table(tmp_path):
    from typer.testing import CliRunner

    from thermossl.cli import app

    config = SequenceConfig(
        model="cpc", steps=2, batch_size=4, num_frames=6, train_sequences=8, test_sequences=4
    )
    run_sequence_study(config, seeds=1, out=tmp_path / "cpc", progress=False)
    saved = json.loads((tmp_path / "cpc" / "seed-0.json").read_text())
    saved["r2"] = -5.0
    (tmp_path / "cpc" / "seed-0.json").write_text(json.dumps(saved))
    stored = json.loads((tmp_path / "cpc" / "config.json").read_text())
    del stored["settings"]["rendering"]  # a folder written before the setting existed
    (tmp_path / "cpc" / "config.json").write_text(json.dumps(stored))
    again = run_sequence_study(config, seeds=1, out=tmp_path / "cpc", progress=False)
    assert again["summary"]["r2"]["mean"] == -5.0  # read back, not retrained
    with pytest.raises(ValueError, match="other settings"):
        run_sequence_study(
            SequenceConfig(model="cpc", steps=3), 1, tmp_path / "cpc", progress=False
        )

    runner = CliRunner(env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
    arguments = ["ldm", "--data", "circle-video", "--model", "kalman", "--entropy", "stopgrad"]
    variant = ["--rendering", "random_mlp", "--jump-probability", "0.1"]
    result = runner.invoke(
        app, [*arguments, *variant, "--seeds", "1", "--steps", "2", "--out", str(tmp_path / "k")]
    )
    assert result.exit_code == 0, result.output
    assert "| circle-video, random_mlp frames, jumps p = 0.1 | kalman-stopgrad |" in result.output
    bad = runner.invoke(
        app, ["ldm", "--data", "wobbly", "--model", "pair", "--out", str(tmp_path / "x")]
    )
    assert bad.exit_code != 0 and "not available" in bad.output
    lstm = runner.invoke(
        app,
        [
            *("ldm", "--data", "wobbly", "--model", "lstm", "--seeds", "1", "--steps", "2"),
            *("--frames", "5", "--out", str(tmp_path / "w")),
        ],
    )
    assert lstm.exit_code == 0, lstm.output
    assert "| wobbly | lstm-knn |" in lstm.output and "→" in lstm.output
    saved = json.loads((tmp_path / "w" / "seed-0.json").read_text())
    assert saved["config"]["num_frames"] == 5
    assert 0.0 <= saved["injectivity"]["folded_fraction"] <= 1.0
    assert (tmp_path / "w" / "latents.png").exists()
