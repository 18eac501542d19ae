"""The training loop: reproducible, resumable after an interruption, clear about bad input."""

from __future__ import annotations

import json

import pytest
import torch
from thermossl.models.datasets import load_dataset
from typer.testing import CliRunner

from thermossl import training
from thermossl.cli import app
from thermossl.training import TrainingConfig, load_checkpoint, start, train


def small_config(method: str = "gedi", iterations: int = 12) -> TrainingConfig:
    config = TrainingConfig(
        method=method,
        data="moons",
        seed=3,
        iterations=iterations,
        batch_size=32,
        checkpoint_every=5,
        log_every=2,
    )
    config.settings.langevin["buffer_size"] = 200
    return config


def parameters(run) -> list[torch.Tensor]:
    return [p.detach().clone() for p in run.method.parameters()]


@pytest.mark.parametrize("method", ["gedi", "swav", "barlow"])
def test_a_run_is_reproducible(tmp_path, method):
    first, _ = train(small_config(method), tmp_path / "a", progress=False)
    second, _ = train(small_config(method), tmp_path / "b", progress=False)
    for p, q in zip(parameters(first), parameters(second), strict=True):
        assert torch.equal(p, q)


def test_an_interrupted_run_resumes_to_the_same_parameters(tmp_path, monkeypatch):
    """Ctrl-C at iteration 8 leaves a checkpoint; resuming ends where an uninterrupted run ends."""
    reference, _ = train(small_config(), tmp_path / "reference", progress=False)
    step = training.training_step

    def interrupting(run, config, inputs):
        if run.iteration == 7:
            raise KeyboardInterrupt
        return step(run, config, inputs)

    monkeypatch.setattr(training, "training_step", interrupting)
    with pytest.raises(KeyboardInterrupt):
        train(small_config(), tmp_path / "run", progress=False)
    monkeypatch.setattr(training, "training_step", step)
    fresh = start(small_config(), load_dataset("moons", 3))
    assert load_checkpoint(fresh, tmp_path / "run" / "checkpoint.pt").iteration == 7
    resumed, _ = train(small_config(), tmp_path / "run", resume=True, progress=False)
    assert resumed.iteration == 12
    for p, q in zip(parameters(resumed), parameters(reference), strict=True):
        assert torch.equal(p, q)
    assert [row["iteration"] for row in resumed.history] == [2, 4, 6, 8, 10, 12]


@pytest.mark.parametrize(
    "change, match",
    [
        ({"method": "gedii"}, "unknown method 'gedii'; choose one of gedi, "),
        ({"data": "mnist"}, "unknown dataset 'mnist'; choose one of moons, circles, digits"),
        ({"batch_size": 6000}, "batch_size 6000 exceeds the 5000 training examples"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"iterations": 0}, "iterations"),
        ({"settings.activation": "tanh"}, "unknown activation 'tanh'; choose one of relu, "),
        ({"settings.energy_penalty": -0.1}, "energy_penalty must be >= 0, got -0.1"),
    ],
)
def test_bad_settings_are_named(tmp_path, change, match):
    config = small_config()
    for key, value in change.items():
        owner, _, name = key.rpartition(".")
        setattr(config.settings if owner else config, name, value)
    with pytest.raises(ValueError, match=match):
        train(config, tmp_path, progress=False)


def test_bad_langevin_step_size(tmp_path):
    config = small_config()
    config.settings.langevin["step_size"] = -1.0
    with pytest.raises(ValueError, match="langevin step_size"):
        train(config, tmp_path, progress=False)


def test_cli_train_writes_metrics_and_figure(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "gedi_no_gen",
            "--data",
            "circles",
            "--iterations",
            "6",
            "--batch-size",
            "16",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["nmi"] <= 1.0
    assert set(metrics["failure_modes"]) >= {"largest_cluster_mass", "label_agreement"}
    assert (out / "clusters_density.png").stat().st_size > 0
    assert (out / "config.json").exists() and (out / "checkpoint.pt").exists()
    assert "test NMI" in result.output


def test_cli_rejects_unknown_method(tmp_path):
    result = CliRunner().invoke(app, ["train", "nope", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "unknown method 'nope'" in result.output


def test_digits_runs_report_probe_ood_and_samples(tmp_path):
    """On digits an energy method also gets a linear probe, the OOD table and a sample grid;
    the figures equal the read-outs computed directly from the trained networks."""
    from thermossl.downstream import SHIFTS, linear_probe_accuracy, ood_table
    from thermossl.evaluation import evaluate_downstream, evaluating

    config = small_config("gedi", iterations=3)
    config.data = "digits"
    run, data = train(config, tmp_path, progress=False)
    results = evaluate_downstream(run.method, data, tmp_path, buffer=run.buffer, sample_steps=5)
    with evaluating(run.method):
        direct = linear_probe_accuracy(
            run.method.representation(data.train_inputs),
            data.train_labels,
            run.method.representation(data.test_inputs),
            data.test_labels,
        )
    assert results["linear_probe"] == direct
    run.method.eval()
    direct_ood = ood_table(
        run.method.energy, data.test_inputs, generator=torch.Generator().manual_seed(2)
    )
    run.method.train()
    assert results["ood_auroc"] == direct_ood and set(direct_ood) == set(SHIFTS)
    assert (tmp_path / "samples.png").stat().st_size > 0
    assert run.method.training  # training mode restored
    plain = evaluate_downstream(build_method_for(run), data, tmp_path / "plain")
    assert set(plain) == {"linear_probe"}


def build_method_for(run):
    from thermossl.methods import build_method

    return build_method("barlow", input_dim=run.method.encoder[0].in_features)


def test_cli_demo_prints_terms_nmi_and_failure_modes(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--iterations", "3", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for expected in ("gedi on moons", "final bound terms", "test NMI", "cluster collapse"):
        assert expected in result.output
    assert (tmp_path / "clusters_density.png").exists()


def test_a_generative_warmup_trains_the_generative_term_alone_first(tmp_path):
    config = small_config("gedi", iterations=6)
    config.log_every, config.generative_warmup = 1, 3
    run, _ = train(config, tmp_path, progress=False)
    terms = [set(row) - {"iteration", "loss"} for row in run.history]
    assert terms[:3] == [{"x"}] * 3  # L_GEN only: the other sites are removed
    assert all({"x", "y", "agreement", "balance"} <= t for t in terms[3:])
    assert run.method.program.weights == (1.0, 50.0, 10.0)  # restored
    config.generative_warmup = -1
    with pytest.raises(ValueError, match="generative_warmup"):
        train(config, tmp_path / "bad", progress=False)


def test_reweighting_restores_the_weights_even_on_error():
    from thermossl.methods import build_method

    program = build_method("gedi", input_dim=2).program
    with pytest.raises(RuntimeError), program.reweighted(prior=0.0):
        assert program.weights.prior == 0.0
        raise RuntimeError
    assert program.weights.prior == 10.0
    with (
        pytest.raises(ValueError, match="one positive"),
        program.reweighted(generative=0.0, invariance=0.0, prior=0.0),
    ):
        pass


def test_restarts_keep_the_initialization_with_the_highest_bound(tmp_path):
    """Each restart trains on the same data from its own initialization; the run evaluated is the
    one with the lowest final loss, and every restart's loss and NMI are reported."""
    from thermossl.evaluation import evaluate
    from thermossl.training import final_loss
    from thermossl.training_cli import run_training

    config = small_config("gedi_no_gen", iterations=10)
    config.restarts = 3
    metrics = run_training(config, tmp_path, progress=False)
    runs = []
    for index in range(3):
        single = small_config("gedi_no_gen", iterations=10)
        single.restart = index
        run, data = train(single, tmp_path / f"check-{index}", progress=False)
        runs.append(run)
        reported = metrics["restarts"][index]
        assert reported["final_loss"] == final_loss(run.history)
        assert reported["nmi"] == evaluate(run.method, data, config.augmentation_noise, 3)["nmi"]
    losses = [r["final_loss"] for r in metrics["restarts"]]
    assert metrics["selected_restart"] == losses.index(min(losses))
    assert metrics["nmi"] == metrics["restarts"][metrics["selected_restart"]]["nmi"]
    first, second = parameters(runs[0]), parameters(runs[1])
    assert not all(torch.equal(p, q) for p, q in zip(first, second, strict=True))
    restart_zero, _ = train(
        small_config("gedi_no_gen", iterations=10), tmp_path / "plain", progress=False
    )
    for p, q in zip(first, parameters(restart_zero), strict=True):
        assert torch.equal(p, q)  # restart 0 is the seed's own run
    assert "selected by the bound" in metrics["report"]


def test_restarts_need_the_bounds_value(tmp_path):
    config = small_config("gedi")
    config.restarts = 2
    with pytest.raises(ValueError, match="quadrature"):
        config.validate()
    config.settings.normalizer = "quadrature"
    config.validate()
    config.restart = -1
    with pytest.raises(ValueError, match="restart must be"):
        config.validate()


def test_final_loss_averages_the_last_tenth():
    from thermossl.training import final_loss

    history = [{"loss": float(i)} for i in range(20)]
    assert final_loss(history) == (18 + 19) / 2
    with pytest.raises(ValueError, match="no logged"):
        final_loss([])


def test_cli_passes_restarts_learning_rate_and_grid_to_the_run(tmp_path):
    out = tmp_path / "run"
    args = ["train", "gedi", "--data", "moons", "--iterations", "4", "--batch-size", "16"]
    args += ["--normalizer", "quadrature", "--quadrature-points", "8", "--restarts", "2"]
    result = CliRunner().invoke(app, [*args, "--learning-rate", "0.002", "--out", str(out)])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["restarts"] == 2 and config["learning_rate"] == 0.002
    assert config["settings"]["quadrature_points"] == 8
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["restart"] for r in metrics["restarts"]] == [0, 1]
    assert (out / "restart-1" / "checkpoint.pt").exists()
    refused = CliRunner().invoke(app, ["train", "gedi", "--restarts", "2", "--out", str(out / "x")])
    assert refused.exit_code != 0 and "quadrature" in refused.output


@pytest.mark.parametrize(
    "method, setting, expected",
    [
        ("gedi", None, torch.nn.LeakyReLU),
        ("jem", None, torch.nn.LeakyReLU),
        ("swav", None, torch.nn.ReLU),
        ("barlow", None, torch.nn.ReLU),
        ("gedi", "relu", torch.nn.ReLU),
        ("swav", "leaky_relu", torch.nn.LeakyReLU),
    ],
)
def test_each_method_gets_its_activation_unless_one_is_set(method, setting, expected):
    from thermossl.methods import MethodSettings, build_method

    built = build_method(method, 2, MethodSettings(activation=setting))
    kinds = {type(m) for m in built.modules() if isinstance(m, torch.nn.ReLU | torch.nn.LeakyReLU)}
    assert kinds == {expected}
    if expected is torch.nn.LeakyReLU:
        assert all(m.negative_slope == 0.2 for m in built.modules() if isinstance(m, expected))


def test_a_config_saved_before_the_activation_setting_reads_as_relu():
    saved = small_config().to_dict()
    del saved["settings"]["activation"]
    assert TrainingConfig.from_dict(saved).settings.activation == "relu"
    assert TrainingConfig.from_dict(small_config().to_dict()).settings.activation is None


def test_cli_passes_the_activation_to_the_run(tmp_path):
    out = tmp_path / "run"
    args = ["train", "gedi", "--data", "moons", "--iterations", "2", "--batch-size", "16"]
    result = CliRunner().invoke(app, [*args, "--activation", "relu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["settings"]["activation"] == "relu"
    refused = CliRunner().invoke(app, [*args, "--activation", "tanh", "--out", str(out / "x")])
    assert refused.exit_code != 0 and "unknown activation 'tanh'" in refused.output


def test_gedi_loss_replays_the_derived_bound_for_each_set_of_weights():
    from thermossl.methods import MethodSettings, build_method

    torch.manual_seed(0)
    method = build_method("gedi", 2, MethodSettings(normalizer="quadrature", quadrature_points=8))
    x1 = torch.randn(16, 2)
    x2 = x1 + 0.03 * torch.randn(16, 2)
    grid = method.sampler.init(x1)
    for reweighting in ({}, {"invariance": 0.0, "prior": 0.0}, {}):
        with method.program.reweighted(**reweighting):
            for _ in range(2):  # the second call replays the recording
                loss, terms = method.loss(x1, x2, grid)
            derived = method.program.bound(x1, x2, grid)
        assert torch.allclose(loss, -derived.total / 16, rtol=1e-6)
        assert terms == pytest.approx({k: float(v.detach()) / 16 for k, v in derived.terms.items()})
        replayed = torch.autograd.grad(loss, list(method.parameters()))
        expected = torch.autograd.grad(-derived.total / 16, list(method.parameters()))
        for a, b in zip(replayed, expected, strict=True):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    assert len(method._recorded_bounds) == 2


def test_the_energy_penalty_adds_the_mean_squared_energies_of_data_and_samples():
    from thermossl.methods import MethodSettings, build_method

    torch.manual_seed(0)
    x1, samples = torch.randn(12, 2), torch.randn(20, 2)
    x2 = x1 + 0.03 * torch.randn(12, 2)
    plain = build_method("gedi", 2, MethodSettings())
    penalized = build_method("gedi", 2, MethodSettings(energy_penalty=0.5))
    penalized.load_state_dict(plain.state_dict())
    loss, _ = plain.loss(x1, x2, samples)
    with_penalty, terms = penalized.loss(x1, x2, samples)
    energies = plain.energy(x1), plain.energy(samples)
    expected = 0.5 * (energies[0].pow(2).mean() + energies[1].pow(2).mean())
    assert torch.allclose(with_penalty - loss, expected, rtol=1e-5)
    assert terms["energy_penalty"] == pytest.approx(float(expected.detach()), rel=1e-5)
    assert MethodSettings.for_data("digits").energy_penalty == 0.1
    assert MethodSettings.for_data("moons").energy_penalty == 0.0
    # with the quadrature normalizer the bound's value is exact and nothing is added
    quadrature = build_method("gedi", 2, MethodSettings(normalizer="quadrature", energy_penalty=1))
    grid = quadrature.sampler.init(x1)
    assert "energy_penalty" not in quadrature.loss(x1, x2, grid)[1]
