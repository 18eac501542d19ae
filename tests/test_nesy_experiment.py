"""The addition experiment: its loss is GEDI's plus the exact constraint, its schedule is the
paper's, its studies resume, and the constraint alone collapses onto the all-zeros reading."""

from __future__ import annotations

import math

import pytest
import torch

from tests.objectives.test_nesy import brute_force_log_probability
from thermossl.methods import MethodSettings, build_method
from thermossl.nesy_experiment import (
    NesyConfig,
    evaluate_classifier,
    nesy_step_loss,
    run_nesy,
    run_nesy_study,
)


def small_gedi(seed=0):
    torch.manual_seed(seed)
    settings = MethodSettings.for_data("digits", num_clusters=10)
    return build_method("gedi", 64, settings)


def batch(seed=0, n=4):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 64, generator=generator)
    augmented = images + 0.2 * torch.randn(images.shape, generator=generator)
    samples = torch.rand(3 * n, 64, generator=generator)
    return images, augmented, samples


def test_nesy_mode_is_the_weighted_constraint_loss_of_a_brute_force_enumeration():
    method = small_gedi()
    images, augmented, _ = batch()
    config = NesyConfig(mode="nesy", triplets=10, nesy_weight=3.0)
    loss, terms = nesy_step_loss(method, config, images, augmented, None)
    logits = method.logits(images.reshape(-1, 64)).reshape(4, 3, 10).double().detach()
    expected = -float(brute_force_log_probability(logits[:, 0], logits[:, 1], logits[:, 2]).mean())
    assert float(loss.detach()) == pytest.approx(3.0 * expected, rel=1e-5)
    assert set(terms) == {"nesy"}


def test_gedi_nesy_mode_adds_the_per_image_gedi_loss_and_the_constraint():
    method = small_gedi()
    images, augmented, samples = batch()
    config = NesyConfig(mode="gedi_nesy", triplets=10)
    loss, terms = nesy_step_loss(method, config, images, augmented, samples)
    gedi, _ = method.loss(images.reshape(12, 64), augmented.reshape(12, 64), samples)
    logits = method.logits(images.reshape(-1, 64)).reshape(4, 3, 10).double().detach()
    constraint = -float(
        brute_force_log_probability(logits[:, 0], logits[:, 1], logits[:, 2]).mean()
    )
    assert float(loss.detach()) == pytest.approx(float(gedi.detach()) + 25.0 * constraint, rel=1e-5)
    assert terms["nesy"] == pytest.approx(constraint, rel=1e-5)
    assert {"x", "y", "agreement", "balance"} <= set(terms)


def test_gedi_mode_has_no_constraint_term():
    method = small_gedi()
    images, augmented, samples = batch()
    loss, terms = nesy_step_loss(
        method, NesyConfig(mode="gedi", triplets=10), images, augmented, samples
    )
    gedi, _ = method.loss(images.reshape(12, 64), augmented.reshape(12, 64), samples)
    assert float(loss.detach()) == pytest.approx(float(gedi.detach()))
    assert "nesy" not in terms


@pytest.mark.parametrize(
    ("triplets", "epochs", "iterations"), [(100, 500, 1000), (1000, 100, 1700), (10_000, 25, 4175)]
)
def test_schedule_is_the_papers_epochs_times_batches(triplets, epochs, iterations):
    config = NesyConfig(mode="gedi", triplets=triplets)
    assert config.schedule_epochs == epochs
    assert config.iterations == iterations == epochs * math.ceil(triplets / 60)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mode": "jem"}, "unknown mode"),
        ({"triplets": 0}, "triplets"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"weight_decay": -1e-4}, "weight_decay"),
        ({"epochs": 0}, "epochs"),
        ({"weights": (1.0, -1.0, 400.0)}, "invariance term must be >= 0"),
        ({"weights": (0.0, 0.0, 0.0)}, "at least one positive"),
    ],
)
def test_bad_settings_are_refused(change, message):
    config = NesyConfig(**{"mode": "nesy", "triplets": 10, **change})
    with pytest.raises(ValueError, match=message):
        config.validate()


def test_evaluation_reads_the_arg_max_as_the_digit(digits):
    method = small_gedi()
    inputs, labels = digits.test_inputs[:50], digits.test_labels[:50]
    result = evaluate_classifier(method, inputs, labels)
    with torch.no_grad():
        predicted = method.logits(inputs).argmax(-1)
    assert result["accuracy"] == pytest.approx(float((predicted == labels).float().mean()))
    assert result["predicted_zero_share"] == pytest.approx(float((predicted == 0).float().mean()))


def test_constraint_alone_collapses_onto_the_all_zeros_reading(digits):
    """Paper 001, Table 6 ('No GEDI'): 0 + 0 = 0 satisfies every triplet, and training the
    constraint alone finds it: every test digit read as 0, accuracy = the share of zeros."""
    result = run_nesy(NesyConfig(mode="nesy", triplets=100, epochs=250), digits, progress=False)
    assert result["predicted_zero_share"] == 1.0
    assert result["history"][-1]["nesy"] < 1e-3
    zeros = float((digits.test_labels == 0).float().mean())
    assert result["accuracy"] == pytest.approx(zeros)
    assert result["nmi"] == pytest.approx(0.0, abs=1e-12)


def test_study_resumes_without_retraining_and_retrains_changed_settings(tmp_path, monkeypatch):
    import thermossl.nesy_experiment as experiment

    calls = []
    real = experiment.run_nesy

    def counted(config, data=None, *, progress=True):
        calls.append((config.mode, config.seed, config.epochs))
        return real(config, data, progress=progress)

    monkeypatch.setattr(experiment, "run_nesy", counted)
    rows = run_nesy_study(["nesy"], [10], [0, 1], tmp_path, progress=False, epochs=2)
    assert len(rows) == 2 and len(calls) == 2
    again = run_nesy_study(["nesy"], [10], [0, 1], tmp_path, progress=False, epochs=2)
    assert len(calls) == 2
    assert [r["accuracy"] for r in again] == [r["accuracy"] for r in rows]
    run_nesy_study(["nesy"], [10], [0], tmp_path, progress=False, epochs=3)
    assert calls[-1] == ("nesy", 0, 3)
    assert (tmp_path / "summary.md").read_text().startswith("| triplets |")
    with pytest.raises(ValueError, match="at least one"):
        run_nesy_study([], [10], [0], tmp_path)
    with pytest.raises(ValueError, match="unknown mode"):
        run_nesy_study(["bogus"], [10], [0], tmp_path)


def test_cli_prints_the_table_and_refuses_bad_counts(tmp_path):
    from typer.testing import CliRunner

    from thermossl.cli import app

    runner = CliRunner(env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
    args = ["nesy", "--triplets", "10", "--modes", "nesy", "--seeds", "1", "--out", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| 10 | 0.1" in result.output  # every digit read as 0: accuracy = the share of zeros
    assert (tmp_path / "runs.csv").exists()
    bad = runner.invoke(app, ["nesy", "--triplets", "0", "--out", str(tmp_path)])
    assert bad.exit_code != 0
    assert "triplets" in bad.output
