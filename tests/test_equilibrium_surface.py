"""The iso-classification driver on digits (paper 002): bookkeeping, resume, schedules, bad input.

The numerical engines it composes are tested against closed forms in
tests/inference/test_quasi_static.py; here: the functionals it logs equal the derived bound's, a
resumed run equals a straight one, and its schedules are the documented ones."""

from __future__ import annotations

import csv
import itertools

import pytest
import torch
from thermossl.inference.quasi_static import rise_and_anneal
from thermossl.models.therml_digits import DIGITS_SITES, DigitsWorlds, digits_data
from thermossl.objectives.therml import functionals
from typer.testing import CliRunner

from thermossl.cli import app
from thermossl.equilibrium_surface import (
    SurfaceConfig,
    equilibrate,
    evaluate_functionals,
    path_metrics,
    run_iso_classification,
    weight_entropy,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SMALL = {"initial_steps": 30, "equilibration_steps": 10, "latent_dim": 2, "hidden": 8}


def test_evaluated_functionals_are_the_derived_bounds_averaged_over_the_fixed_draws():
    data = digits_data()
    worlds = DigitsWorlds(latent_dim=2, hidden=8)
    pixels, labels = data.train_pixels[:100], data.train_labels[:100]
    values = evaluate_functionals(worlds, pixels, labels, draws=3, seed=5)
    noise = torch.randn(3, 100, 2, generator=torch.Generator().manual_seed(5))
    expected = [
        functionals(worlds.model, worlds.guide, pixels, labels, None, noise[k], None,
                    num_examples=100, sites=DIGITS_SITES)
        for k in range(3)
    ]  # fmt: skip
    for key, name in (("R", "rate"), ("D", "distortion"), ("C", "classification")):
        mean = sum(float(getattr(e, name)) for e in expected) / 3
        assert values[key] == pytest.approx(mean, rel=1e-5)


def test_equilibration_steps_at_the_scheduled_rate():
    """Adam's first step moves the parameter with the largest gradient by the learning rate
    (|m / sqrt(v)| = 1): one equilibration step of T = 1 is scheduled at rise_and_anneal(1, 2)."""
    data = digits_data()
    worlds = DigitsWorlds(latent_dim=2, hidden=8)
    before = [p.detach().clone() for p in worlds.parameters()]
    equilibrate(worlds, data, 0.5, 5.0, steps=1, peak_learning_rate=1e-3, seed=0)
    moved = max(
        float((p - b).abs().max()) for p, b in zip(worlds.parameters(), before, strict=True)
    )
    assert moved == pytest.approx(rise_and_anneal(1, 2, 1e-3), rel=1e-4)
    with pytest.raises(ValueError, match="schedule"):
        equilibrate(worlds, data, 0.5, 5.0, steps=1, peak_learning_rate=1e-3, seed=0, schedule="x")


def _rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_a_resumed_process_equals_a_straight_one(tmp_path):
    config = SurfaceConfig(steps=2, **SMALL)
    run_iso_classification(config, tmp_path / "straight", progress=False)
    run_iso_classification(SurfaceConfig(steps=1, **SMALL), tmp_path / "split", progress=False)
    run_iso_classification(config, tmp_path / "split", resume=True, progress=False)
    straight, split = (
        _rows(tmp_path / "straight" / "path.csv"),
        _rows(tmp_path / "split" / "path.csv"),
    )
    assert straight == split and len(straight) == 3
    assert {"step", "lambda", "gamma", "R", "D", "C"} <= set(straight[0])


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["iso", "--lambda", "0"], "lambda_ must be"),
        (["iso", "--gamma", "-2"], "gamma must be"),
        (["iso", "--data", "moons"], "only digits"),
        (["iso", "--steps", "0"], "steps must be"),
        (["iso", "--beta", "0"], "beta must be"),
        (["iso-figure"], "no path.csv"),
    ],
)
def test_cli_rejects_bad_input(tmp_path, arguments, message):
    if arguments[0] == "iso-figure":
        arguments = [*arguments, str(tmp_path)]
    result = CliRunner().invoke(app, [*arguments, "--out", str(tmp_path / "x")])
    assert result.exit_code != 0
    assert message in result.output


def _surface_path(steps: int, concave: bool = True) -> list[dict[str, float]]:
    """Rows on the closed-form surface F = ∓(λ³/6 + λγ/4 + γ²/2) along a curved path: D = F_λ,
    C = F_γ, R = F − λD − γC, and the derivatives as the process logs them. (A cubic: on a
    quadratic F the midpoint sums telescope exactly and would measure nothing.)"""
    sign = -1.0 if concave else 1.0
    rows = []
    for k in range(steps + 1):
        lambda_, gamma = 0.5 + (k / steps) ** 2, 5.0 - 2 * k / steps
        free = sign * (lambda_**3 / 6 + lambda_ * gamma / 4 + gamma**2 / 2)
        d, c = sign * (lambda_**2 / 2 + gamma / 4), sign * (lambda_ / 4 + gamma)
        row = {"step": k, "lambda": lambda_, "gamma": gamma, "R": free - lambda_ * d - gamma * c}
        row |= {"D": d, "C": c}
        if k:
            row |= {"dD/dlambda": sign * lambda_, "dD/dgamma": sign / 4}
            row |= {"dC/dlambda": sign / 4, "dC/dgamma": sign}
        rows.append(row)
    return rows


def test_path_metrics_check_the_first_law_to_second_order_and_the_concavity_of_F():
    """dR = −λ dD − γ dC on the surface (eq. 29's premise), summed with midpoint multipliers: the
    quadrature error is O(h²), so it falls 4× when the steps halve; the Hessian of
    F is read from the logged derivatives and its symmetric part's sign decides concavity."""
    gaps = []
    for steps in (10, 20):
        metrics = path_metrics(_surface_path(steps), [])
        law = metrics["sum_of_minus_lambda_dD"] + metrics["sum_of_minus_gamma_dC"]
        gaps.append(abs(metrics["change_of_R"] - law))
        assert gaps[-1] > 1e-6  # the quadrature error is there to be measured
        assert metrics["share_of_steps_with_concave_F"] == 1.0
        lambda_ = 0.5 + 1 / steps**2  # at the first logged step
        hessian = torch.tensor([[-lambda_, -0.25], [-0.25, -1.0]], dtype=torch.float64)
        largest = float(torch.linalg.eigvalsh(hessian).max())
        assert metrics["free_energy_hessian_largest_eigenvalues"][0] == pytest.approx(largest)
        assert metrics["maxwell_asymmetry"] == [0.0] * steps
    assert gaps[0] / gaps[1] == pytest.approx(4, rel=0.05)  # 4 (1 + O(h))
    assert path_metrics(_surface_path(10, concave=False), [])["share_of_steps_with_concave_F"] == 0


def test_the_first_law_gap_is_the_descent_beyond_the_quasi_static_one():
    """With J across each equilibration recorded consistently (start: the previous parameters at
    the new multipliers; end: the step's point), eq. 29's gap equals the descent in the
    equilibrations minus the quasi-static 1/2 (dD dlambda + dC dgamma), whatever the points; on
    the closed-form surface the two descents agree to O(h^3) per step."""

    def trace(rows, extra):
        entries = []
        for k, (a, b) in enumerate(itertools.pairwise(rows), start=1):
            start = a["R"] + b["lambda"] * a["D"] + b["gamma"] * a["C"] + a.get("S", 0.0)
            end = b["R"] + b["lambda"] * b["D"] + b["gamma"] * b["C"] + b.get("S", 0.0)
            entries += [{"step": k, "t": 0, "J": start}, {"step": k, "t": 1, "J": end + extra}]
        return entries

    shares = []
    for steps in (10, 20):
        rows = _surface_path(steps)
        metrics = path_metrics(rows, trace(rows, 0.0))
        law = metrics["sum_of_minus_lambda_dD"] + metrics["sum_of_minus_gamma_dC"]
        gap = metrics["change_of_R"] + metrics["change_of_S"] - law
        descent, quasi = metrics["descent_in_equilibrations"], metrics["quasi_static_descent"]
        assert gap == pytest.approx(descent - quasi, abs=1e-12)
        assert quasi < 0
        shares.append((descent - quasi) / quasi)  # O(h^3) per step against O(h^2): O(h)
    assert shares[0] / shares[1] == pytest.approx(2, rel=0.05)
    # points off the surface: relax every row's R by -0.1 after the first (training that goes on)
    rows = [dict(row, R=row["R"] - 0.1 * (row["step"] > 0)) for row in _surface_path(10)]
    rows = [dict(row, S=0.01 * row["step"]) for row in rows]
    metrics = path_metrics(rows, trace(rows, 0.0))
    law = metrics["sum_of_minus_lambda_dD"] + metrics["sum_of_minus_gamma_dC"]
    gap = metrics["change_of_R"] + metrics["change_of_S"] - law
    assert gap == pytest.approx(
        metrics["descent_in_equilibrations"] - metrics["quasi_static_descent"], abs=1e-12
    )


def test_path_metrics_measure_the_free_energy_during_equilibration():
    trace = [{"step": 1, "t": t, "J": value} for t, value in enumerate([100.0, 104.0, 101.0])]
    metrics = path_metrics(_surface_path(2), trace)
    assert metrics["largest_relative_change_of_J_within_an_equilibration"] == pytest.approx(0.04)
    assert metrics["largest_relative_change_of_J_across_an_equilibration"] == pytest.approx(0.01)


def test_the_recorded_free_energy_includes_the_weight_prior():
    """With weight decay ε, J = R + λD + γC + ε‖θ‖²/2 (Adam's coupled decay is the gradient of that
    last term); the first recorded value is J at the starting parameters."""
    data = digits_data()
    worlds = DigitsWorlds(latent_dim=2, hidden=8)
    squares = sum(float(p.detach().square().sum()) for p in worlds.parameters())
    values = evaluate_functionals(worlds, data.train_pixels, data.train_labels)
    expected = values["R"] + 0.5 * values["D"] + 5.0 * values["C"] + 0.5 * 0.1 * squares
    assert weight_entropy(worlds, 0.1) == pytest.approx(0.05 * squares, rel=1e-12)
    history = equilibrate(
        worlds, data, 0.5, 5.0, steps=1, peak_learning_rate=1e-3, seed=0, weight_decay=0.1,
        record_every=1,
    )  # fmt: skip
    assert history[0] == pytest.approx(expected, rel=1e-9)


def test_sampling_weights_are_checked():
    data = digits_data()
    worlds = DigitsWorlds(latent_dim=2, hidden=8)
    size = data.train_pixels.shape[0]
    for weights, message in (
        (torch.ones(3) / 3, "shape"),
        (torch.full((size,), -1.0 / size), "non-negative"),
        (torch.ones(size), "sum to 1"),
    ):
        with pytest.raises(ValueError, match=message):
            equilibrate(worlds, data, 0.5, 5.0, 1, 1e-3, seed=0, sampling_weights=weights)


@pytest.mark.parametrize("beta", [None, 2.0])
def test_the_multipliers_move_along_the_conserving_rates_of_the_logged_derivatives(tmp_path, beta):
    """Eq. 31 (Remark 7), or eq. 22 with G = C + R/β (Remark 8): Δλ = −α ∂G/∂γ, Δγ = α ∂G/∂λ
    with the derivatives the step logged."""
    config = SurfaceConfig(steps=1, alpha=2.0, beta=beta, **SMALL)
    run_iso_classification(config, tmp_path, progress=False)
    start, step = _rows(tmp_path / "path.csv")
    inverse = 0.0 if beta is None else 1 / beta
    g_lambda = float(step["dC/dlambda"]) + inverse * float(step["dR/dlambda"])
    g_gamma = float(step["dC/dgamma"]) + inverse * float(step["dR/dgamma"])
    assert float(step["lambda"]) - float(start["lambda"]) == pytest.approx(-2.0 * g_gamma)
    assert float(step["gamma"]) - float(start["gamma"]) == pytest.approx(2.0 * g_lambda)
    result = CliRunner().invoke(
        app, ["iso-figure", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "sweep.png")]
    )
    assert result.exit_code == 0 and (tmp_path / "sweep.png").stat().st_size > 0
