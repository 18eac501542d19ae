"""TherML's inequalities on toy models (eq. 11-12) and the toy's equilibrium solver.

Eq. 12's gap is checked against its closed form: with world P's joint :math:`p(x, z)` at the same
parameter draws, :math:`R + D - H(X) - I(Z; \\Theta \\mid X) = \\mathrm{KL}(e(z) \\,\\|\\, q(z)) +
\\sum_z e(z)\\, \\mathrm{KL}(p(x \\mid z) \\,\\|\\, q(x \\mid z))`, a sum of divergences computed
from the tables, not from the functionals.
"""

from __future__ import annotations

import json

import pytest
import torch
from thermossl.models.therml import HandCraftedToy, ToyWorlds, toy_data
from thermossl.objectives.therml import Multipliers
from typer.testing import CliRunner

from thermossl.therml_laws import LawsConfig, ToyEquilibrium, frontier_bounds, model_bounds
from thermossl.therml_toy import ToyConfig, run_toy_frontier


def _divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    ratio = torch.where(p > 0, p / q, torch.ones_like(p))
    return (p * ratio.log()).sum(-1)


def _eq12_gap(worlds: ToyWorlds, p_x: torch.Tensor, noise: torch.Tensor) -> float:
    theta = worlds.parameter_posterior(noise).rsample().reshape(-1, 1, 30)
    encoder = worlds.encoder_logits(torch.arange(30), theta).softmax(-1).double().mean(0)
    joint = p_x[:, None] * encoder  # p(x, z), [X, K]
    marginal = joint.sum(0)
    decoder = worlds.decoder_logits().softmax(-1).double()  # q(x | z), [K, X]
    induced = (joint / marginal).T  # p(x | z)
    prior = worlds.marginal_logits().softmax(-1).double()
    gap = _divergence(marginal, prior) + (marginal * _divergence(induced, decoder)).sum()
    return float(gap.detach())


@pytest.mark.parametrize("num_examples", [None, 50])
def test_eq12_gap_is_the_sum_of_the_two_divergences(num_examples):
    worlds = ToyWorlds(seed=3, initial_log_alpha=-1.0, dtype=torch.float64)
    data = toy_data(num_examples, seed=1)
    noise = torch.randn(16, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    bounds = model_bounds(worlds, data, 50, noise)
    expected = _eq12_gap(worlds, data.joint.sum(-1), noise)
    assert expected > 0.1  # an untrained model is far from the bound
    assert bounds["eq12_gap"] == pytest.approx(expected, rel=1e-10)
    assert bounds["eq11_gap"] >= 0


def test_the_hand_crafted_model_meets_eq12_with_equality():
    bounds = model_bounds(HandCraftedToy(), toy_data(), 1, None)
    assert bounds["eq12_gap"] == pytest.approx(0.0, abs=1e-12)
    assert bounds["R+D"] == pytest.approx(bounds["H(X)+I(Z;Theta|X)"], rel=1e-12)
    assert bounds["eq11_gap"] > 0  # C > H(Y | X): q(y | z) cannot see x


def test_frontier_bounds_read_the_frontier_models(tmp_path):
    config = ToyConfig(steps=20)
    metrics = run_toy_frontier(["hand_crafted", "vae"], tmp_path, config, progress=False)
    bounds = frontier_bounds(tmp_path)
    assert list(bounds) == ["hand_crafted", "vae"]
    for name in bounds:
        for split in ("train", "exact"):
            values = metrics[name][split]
            left = values["R"] + values["C"] + values["D"] + values["S"]
            assert bounds[name][split]["R+C+D+S/N"] == pytest.approx(left, rel=1e-6)
            assert bounds[name][split]["eq12_gap"] >= 0 and bounds[name][split]["eq11_gap"] >= 0


def test_equilibria_are_kept_and_refused_under_other_settings(tmp_path):
    config = LawsConfig(parameter_draws=2, warmup_steps=10, max_iterations=10)
    solve = ToyEquilibrium(config, cache=tmp_path)
    point = solve(Multipliers(1.0, 1.0, 1.0, 0.1))
    again = ToyEquilibrium(config, cache=tmp_path)
    assert again.points[point.multipliers] == point
    assert again(point.multipliers) is again.points[point.multipliers]
    saved = json.loads((tmp_path / "points.json").read_text())
    assert len(saved["points"]) == 1
    with pytest.raises(ValueError, match="other settings"):
        ToyEquilibrium(LawsConfig(parameter_draws=3), cache=tmp_path)


def test_a_warm_started_solve_lowers_the_objective_of_its_start():
    config = LawsConfig(parameter_draws=2, warmup_steps=50, max_iterations=50)
    solve = ToyEquilibrium(config)
    first = solve(Multipliers(1.0, 1.0, 1.0, 0.1))
    moved = Multipliers(1.0, 1.05, 1.0, 0.1)
    start = first.value + 0.05 * first.distortion  # J at the new multipliers, old parameters
    assert solve(moved).value <= start + 1e-12


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"sigma": 0.0}, "sigma must be > 0"),
        ({"step": 0.0}, "step"),
        ({"step": 1.0}, "relative step must be < 1"),
        ({"num_intervals": 3}, "even"),
        ({"gamma": -1.0}, "gamma must be a finite number >= 0"),
        ({"parameter_draws": 0}, "parameter_draws"),
    ],
)
def test_laws_config_bad_input(settings, message):
    with pytest.raises(ValueError, match=message):
        LawsConfig(**settings)


def test_cli_laws_bad_input(tmp_path):
    from thermossl.cli import app

    runner = CliRunner(env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
    result = runner.invoke(app, ["laws", "--data", "digits", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "must be 'toy'" in result.output
    result = runner.invoke(app, ["laws", "--frontier", str(tmp_path), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "holds no frontier run" in result.output
    result = runner.invoke(app, ["laws", "--sigma", "0", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "sigma must be > 0" in result.output


def test_solver_error_restarts_from_the_solution_and_leaves_it_alone():
    config = LawsConfig(parameter_draws=2, warmup_steps=20, max_iterations=5)
    solve = ToyEquilibrium(config)
    at = Multipliers(1.0, 1.0, 1.0, 0.1)
    point = solve(at)
    before = {name: value.clone() for name, value in solve.states[at].items()}
    error = solve.solver_error(at)
    assert set(error) == {"D", "C", "S"}
    assert any(abs(value) > 0 for value in error.values())  # 5 iterations: far from converged
    assert solve(at) is point
    assert all(torch.equal(before[name], solve.states[at][name]) for name in before)
