"""The cycle recorder on real networks: its bookkeeping against hand computations from the
methods' scores and published losses, the demon's first-order law on SwAV, the classes, and the
``thermossl thermo`` / ``thermossl demon`` run folders."""

from __future__ import annotations

import csv
import functools
import itertools
import json
import math

import pytest
import torch
from thermossl.objectives import losses
from typer.testing import CliRunner

from thermossl.cli import app
from thermossl.methods import build_method
from thermossl.thermo_cycles import (
    CycleRecorder,
    classify,
    cycle_rule,
    demon_alignment,
    fit_temperature,
    heat_systems,
    system_energies,
)
from thermossl.thermo_study import THERMO_METHODS, ThermoConfig, run_demon_study, run_thermo


def _pairs(n: int = 64, seed: int = 0, dim: int = 2):
    generator = torch.Generator().manual_seed(seed)
    x1 = torch.randn(n, dim, generator=generator)
    return x1, x1 + 0.03 * torch.randn(n, dim, generator=generator)


def _method(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_method(name, input_dim=2)


def _sgd_step(method, optimizer, x1, x2):
    def step():
        optimizer.zero_grad()
        loss, _ = method.loss(x1, x2)
        loss.backward()
        optimizer.step()
        method.after_step()
        return {"loss": loss.item()}

    return step


def _recorder(method):
    return CycleRecorder(functools.partial(system_energies, method), cycle_rule(method), method)


# -- bookkeeping against the methods' own numbers ---------------------------------------------------


def test_swav_cycle_matches_a_hand_computation_from_scores_and_codes():
    """Heat of the heating (from the Gibbs ensemble at 1/tau), swap heat and W_irr, recomputed from
    the prototype scores before and after the step with SwAV's published codes (float64)."""
    method = _method("swav")
    x1, x2 = _pairs()
    optimizer = torch.optim.SGD(method.parameters(), lr=0.05)
    recorder = _recorder(method)
    program, n, tau = method.program, x1.shape[0], method.program.temperature

    def scores():
        buffers = [b.clone() for b in method.buffers()]
        with torch.no_grad():
            s = torch.stack([program.scores(x1), program.scores(x2)]).double()
        for buffer, saved in zip(method.buffers(), buffers, strict=True):
            buffer.copy_(saved)
        return s

    before = scores()
    row = recorder.cycle(x1, x2, _sgd_step(method, optimizer, x1, x2))
    after = scores()

    codes = torch.stack([losses.swav_codes(s) for s in before]) / n  # heated ensembles, rows 1/N
    start = torch.softmax(before / tau, -1) / n  # the Gibbs ensemble the first heating leaves
    heat = ((start - codes) * -before).sum((-2, -1)).mean()
    swap = ((codes[0] - codes[1]) * (before[1] - before[0])).sum() / 2
    assert row["heating_heat"] == pytest.approx(float(heat), rel=1e-9, abs=1e-12)
    assert row["swap_heat"] == pytest.approx(float(swap), rel=1e-9, abs=1e-12)

    def cross_entropy(s):  # SwAV's loss with the codes fixed: targets from the other view
        log_p = torch.log_softmax(s / tau, -1)
        return -(n * codes.flip(0) * log_p).sum(-1).mean(-1).mean()

    assert row["irreversible_work"] == pytest.approx(
        float(cross_entropy(after) - cross_entropy(before)), rel=1e-9, abs=1e-12
    )
    assert abs(row["first_law_residual"]) <= 1e-12


def test_swav_demon_extracts_first_order_irreversible_work():
    """W_irr = -gamma |grad loss|^2 (1 + O(gamma)) for SGD on SwAV (eq. 17); the codes are
    stop-gradient, so the loss's gradient is the demon's. The relative error halves with gamma."""
    x1, x2 = (x.double() for x in _pairs())
    reference = _method("swav", seed=3).double()
    loss, _ = reference.loss(x1, x2)
    squared_norm = sum(
        float(g.square().sum()) for g in torch.autograd.grad(loss, list(reference.parameters()))
    )
    errors = []
    for gamma in (4e-6, 2e-6, 1e-6):  # |grad|^2 ~ 2e3: the linear regime needs gamma << 1e-4
        method = _method("swav", seed=3).double()
        optimizer = torch.optim.SGD(method.parameters(), lr=gamma)
        row = _recorder(method).cycle(x1, x2, _sgd_step(method, optimizer, x1, x2))
        assert row["irreversible_work"] < 0
        errors.append(row["irreversible_work"] / (-gamma * squared_norm) - 1)
    assert all(1.6 < a / b < 2.4 for a, b in itertools.pairwise(errors)), errors


def test_byol_internal_energy_is_its_loss_and_its_heating_exchanges_no_heat():
    """Eq. 29–30: under the uniform ensemble <E> is BYOL's loss per pair; q never changes."""
    method = _method("byol")
    x1, x2 = _pairs()
    optimizer = torch.optim.SGD(method.parameters(), lr=0.05)
    recorder = _recorder(method)
    rows = []
    for _ in range(3):
        buffers = [b.clone() for b in method.buffers()]
        with torch.no_grad():
            loss = float(method.loss(x1, x2)[0])
        for buffer, saved in zip(method.buffers(), buffers, strict=True):
            buffer.copy_(saved)
        rows.append(recorder.cycle(x1, x2, _sgd_step(method, optimizer, x1, x2)))
        assert rows[-1]["internal_energy"] == pytest.approx(loss, rel=1e-5)
    assert all(row["heating_heat"] == 0.0 and row["irreversible_work"] == 0.0 for row in rows)
    assert classify(rows)["class"] == "adiabatic"


def test_the_recorder_does_not_change_training():
    """Parameters and batch-norm statistics after three recorded cycles equal those of three plain
    steps: the energy evaluations leave no trace."""
    x1, x2 = _pairs()
    trained = []
    for record in (False, True):
        method = _method("swav", seed=1)
        optimizer = torch.optim.SGD(method.parameters(), lr=0.05)
        recorder = _recorder(method)
        for _ in range(3):
            step = _sgd_step(method, optimizer, x1, x2)
            recorder.cycle(x1, x2, step) if record else step()
        trained.append(method.state_dict())
    for key, value in trained[0].items():
        assert torch.equal(value, trained[1][key]), key


@pytest.mark.parametrize(
    "name, expected_class, temperature",
    [
        ("swav", "sinkhorn-knopp", 0.05),
        ("sela", "sinkhorn-knopp", 0.05),
        ("deepcluster", "degenerate", 0.0),
        ("gedi", "gibbs", 1.0),
        ("byol", "adiabatic", math.inf),
    ],
)
def test_each_method_is_measured_in_its_class(name, expected_class, temperature):
    """The class and temperature are read off the heated ensembles alone (fit of eq. 24)."""
    method = _method(name)
    x1, x2 = _pairs(seed=2)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.01)
    recorder = _recorder(method)
    step = _sgd_step(method, optimizer, x1, x2)
    if name == "gedi":  # the recorder needs no generative term; the invariance term suffices

        def step():
            optimizer.zero_grad()
            logits1, logits2 = method.logits(x1), method.logits(x2)
            loss = losses.gedi_invariance(logits1, logits2)
            loss.backward()
            optimizer.step()
            return {"loss": loss.item()}

    rows = [recorder.cycle(x1, x2, step) for _ in range(3)]
    measured = classify(rows)
    assert measured["class"] == expected_class
    low, high = measured["temperature_range"]
    assert low == pytest.approx(temperature, rel=1e-9) and high == pytest.approx(
        temperature, rel=1e-9
    )
    assert measured["largest_gge_residual"] <= 1e-9
    assert max(abs(row["first_law_residual"]) for row in rows) <= 1e-12


def test_fit_temperature_recovers_a_constructed_gge_and_rejects_other_ensembles():
    generator = torch.Generator().manual_seed(4)
    energies = torch.randn(7, 4, generator=generator, dtype=torch.float64)
    u = torch.randn(7, 1, generator=generator, dtype=torch.float64)
    v = torch.randn(1, 4, generator=generator, dtype=torch.float64)
    log_q = -2.5 * energies - u - v
    fit = fit_temperature(torch.softmax(log_q.flatten(), 0).view(7, 4), energies)
    assert fit.beta == pytest.approx(2.5, rel=1e-12) and fit.residual <= 1e-12
    assert fit.label_potential_spread == pytest.approx(float(v.max() - v.min()), rel=1e-9)
    other = torch.rand(7, 4, generator=generator, dtype=torch.float64)
    assert fit_temperature(other / other.sum(), energies).residual > 1e-3


# -- run folders, resume, CLI -----------------------------------------------------------------------


def _rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_run_thermo_resumes_to_the_same_record(tmp_path):
    config = ThermoConfig("swav", "moons", cycles=6, system_size=32, checkpoint_every=3)
    run_thermo(config, tmp_path / "straight", progress=False)
    run_thermo(ThermoConfig(**{**config.__dict__, "cycles": 3}), tmp_path / "split", progress=False)
    run_thermo(config, tmp_path / "split", resume=True, progress=False)
    assert _rows(tmp_path / "straight" / "cycles.csv") == _rows(tmp_path / "split" / "cycles.csv")
    metrics = json.loads((tmp_path / "split" / "metrics.json").read_text())
    assert metrics["cycles"] == 6 and metrics["class"] == "sinkhorn-knopp"
    assert (tmp_path / "split" / "thermo_cycles.png").stat().st_size > 10_000


def test_cli_thermo_and_demon_write_their_outputs(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["thermo", "--method", "deepcluster", "--data", "moons", "--cycles", "5", "--system-size",
         "32", "--out", str(tmp_path / "thermo")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "degenerate" in result.output
    assert {"cycles.csv", "metrics.json", "thermo_cycles.png", "config.json"} <= {
        p.name for p in (tmp_path / "thermo").iterdir()
    }
    result = runner.invoke(
        app,
        ["demon", "--methods", "swav", "--data", "moons", "--learning-rates", "0.001,0.1",
         "--cycles", "4", "--system-size", "32", "--out", str(tmp_path / "demon")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(_rows(tmp_path / "demon" / "demon.csv")) == 2


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["thermo", "--method", "simclr"], "unknown method"),
        (["thermo", "--method", "swav", "--optimizer", "rmsprop"], "optimizer"),
        (["thermo", "--method", "swav", "--learning-rate", "-1"], "learning_rate"),
        (["demon", "--learning-rates", "0.1,-2"], "learning rate"),
    ],
)
def test_cli_rejects_bad_input(tmp_path, arguments, message):
    result = CliRunner().invoke(app, [*arguments, "--out", str(tmp_path / "x")])
    assert result.exit_code != 0
    assert message in result.output


def test_demon_study_rejects_an_empty_grid(tmp_path):
    with pytest.raises(ValueError, match="at least one rate"):
        run_demon_study(["swav"], "moons", [], tmp_path)


@pytest.mark.parametrize(
    "name, label_marginals, heating_beta, iterations, demon_beta, swap, weights",
    [
        ("swav", True, 20.0, 3, 10.0, True, (0.5, 0.5)),
        ("sela", True, 20.0, None, 10.0, True, (1.0, 0.0)),
        ("deepcluster", False, math.inf, None, 10.0, True, (0.5, 0.5)),
        ("gedi", False, 1.0, None, 1.0, True, (1.0, 0.0)),
        ("byol", False, 0.0, None, 0.0, False, (0.5, 0.5)),
    ],
)
def test_each_thermo_method_gets_its_documented_rule(
    name, label_marginals, heating_beta, iterations, demon_beta, swap, weights
):
    """The rule read off each program's settings: SwAV/SeLa heat at 1/epsilon = 20 and predict at
    1/tau = 10, GEDI heats and predicts at its tau = 1, BYOL sits at beta = 0."""
    assert name in THERMO_METHODS
    rule = cycle_rule(_method(name))
    assert rule.label_marginals == label_marginals and rule.swap == swap
    assert rule.heating_beta == pytest.approx(heating_beta)
    assert rule.sinkhorn_iterations == iterations
    assert rule.demon_beta == pytest.approx(demon_beta)
    assert rule.demon_weights == weights


# -- the demon's alignment with each derived term ----------------------------------------------------


def test_swav_alignment_is_minus_the_squared_gradient_of_its_loss():
    """SwAV's codes are stop-gradient: its loss is the demon's potential up to log N, so the terms'
    shares sum to -|grad loss|^2."""
    x1, x2 = (x.double() for x in _pairs())
    method = _method("swav", seed=5).double()
    shares = demon_alignment(method, x1, x2)
    loss, _ = method.loss(x1, x2)
    squared_norm = sum(
        float(g.square().sum()) for g in torch.autograd.grad(loss, list(method.parameters()))
    )
    assert set(shares) == {"y", "y_prime", "total"}
    assert shares["total"] == pytest.approx(-squared_norm, rel=1e-9)


def test_gedi_alignment_predicts_the_recorded_irreversible_work_to_first_order():
    """GEDI's step is not the demon's gradient; the alignment still gives W_irr / gamma as
    gamma -> 0: the gap halves with gamma."""
    x1, x2 = (x.double() for x in _pairs(seed=6))
    predicted = demon_alignment(_method("gedi_no_gen", seed=6).double(), x1, x2)["total"]
    gaps = []
    for gamma in (4e-3, 2e-3, 1e-3):
        method = _method("gedi_no_gen", seed=6).double()
        optimizer = torch.optim.SGD(method.parameters(), lr=gamma)
        row = _recorder(method).cycle(x1, x2, _sgd_step(method, optimizer, x1, x2))
        gaps.append(row["irreversible_work"] / gamma - predicted)
    assert all(1.6 < a / b < 2.4 for a, b in itertools.pairwise(gaps)), (gaps, predicted)


# -- declared GGE classes (§V) ----------------------------------------------------------------------


def test_a_declared_label_prior_is_the_label_marginal_of_the_codes_and_of_the_heating():
    from thermossl.methods import MethodSettings

    prior = (0.7, 0.3)
    torch.manual_seed(0)
    method = build_method("sela", input_dim=2, settings=MethodSettings(label_prior=prior))
    x1, x2 = _pairs(seed=7)
    codes = method.program.auxiliary_distribution(x2).probs  # rows sum to one
    # the converged solve's float32 tolerance on the label sums, plus float32 rounding of the sums
    atol = 1e-6 + x1.shape[0] * torch.finfo(torch.float32).eps
    assert torch.allclose(codes.mean(0), torch.tensor(prior), atol=atol)
    rule = cycle_rule(method)
    assert rule.label_marginal == pytest.approx(prior)
    row = _recorder(method).cycle(
        x1, x2, _sgd_step(method, torch.optim.SGD(method.parameters(), lr=0.01), x1, x2)
    )
    assert abs(row["first_law_residual"]) <= 1e-12
    heated = heat_systems(rule, system_energies(method, x1, x2).detach().double())
    assert torch.allclose(heated.sum(-2), torch.tensor(prior, dtype=torch.float64), atol=1e-9)


def test_pinned_labels_hold_in_the_codes_and_the_heating():
    from thermossl.thermo_study import confidence_constraints

    torch.manual_seed(0)
    method = build_method("swav", input_dim=2)
    x1, x2 = _pairs(n=32, seed=8)
    labels = (x1[:, 0] > 0).long()
    method.program.code_constraints = confidence_constraints(labels, 2, per_class=3, confidence=0.9)
    pinned = [
        (int(c.features.argmax()) // 2, int(c.features.argmax()) % 2)
        for c in method.program.code_constraints
    ]
    codes = method.program.auxiliary_distribution(x2).probs
    for point, label in pinned:  # float32: violations up to the solver's 1e-6 in q, N q in codes
        assert float(codes[point, label]) == pytest.approx(0.9, abs=32 * 1e-6)
    heated = heat_systems(cycle_rule(method), system_energies(method, x1, x2).detach().double())
    for point, label in pinned:
        assert float(32 * heated[0, point, label]) == pytest.approx(0.9, abs=32 * 1e-9)
    assert torch.allclose(heated.sum(-2), torch.full((2, 2), 0.5, dtype=torch.float64), atol=1e-9)


def test_system_indices_follow_the_class_proportions_and_name_bad_input():
    from thermossl.thermo_study import system_indices

    labels = torch.tensor([0, 1] * 50)
    chosen = system_indices(labels, 20, (0.8, 0.2))
    assert int((labels[chosen] == 0).sum()) == 16 and int((labels[chosen] == 1).sum()) == 4
    with pytest.raises(ValueError, match="one share per class"):
        system_indices(labels, 20, (0.5, 0.3, 0.2))
    with pytest.raises(ValueError, match="training points"):
        system_indices(labels, 200, (0.9, 0.1))
    with pytest.raises(ValueError, match="labelled_per_class needs swav or sela"):
        ThermoConfig("gedi", "moons", labelled_per_class=2).validate()
    with pytest.raises(ValueError, match="label_confidence"):
        ThermoConfig("swav", "moons", labelled_per_class=2, label_confidence=1.0).validate()
