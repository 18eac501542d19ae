"""Reproduction of the README's TherML frontier tables (slow: `make reproduce`).

The digits sweep (about 13 min on 2 cores) and the toy's sampled Gibbs laws for the seven σ > 0
presets (about 20 min: ten minutes of training, ten of sampling). What is asserted is what the
README reads off the tables, each with a margin from the measured error bars.
"""

from __future__ import annotations

import pytest

from thermossl.therml_digits import DIGITS_PRESETS, DigitsConfig, run_digits_frontier
from thermossl.therml_toy import TOY_PRESETS, run_toy_frontier

pytestmark = pytest.mark.slow


def test_the_digits_sweep_maps_the_frontier(tmp_path):
    metrics = run_digits_frontier(list(DIGITS_PRESETS), tmp_path, DigitsConfig(), progress=False)
    rates = [metrics[f"delta_{delta:g}"]["train"]["R"] for delta in (0.1, 0.3, 1, 3)]
    distortions = [metrics[f"delta_{delta:g}"]["train"]["D"] for delta in (0.1, 0.3, 1, 3)]
    assert rates == sorted(rates) and distortions == sorted(distortions, reverse=True)
    for name in ("gamma_1", "gamma_10", "gamma_100", "sigma_1", "sigma_10", "sigma_100"):
        assert metrics[name]["accuracy"]["exact"] > 0.9, name
    entropies = [metrics[f"sigma_{sigma:g}"]["train"]["S"] for sigma in (1, 10, 100)]
    errors = [metrics[f"sigma_{sigma:g}"]["thermodynamics"]["S_error"] for sigma in (1, 10, 100)]
    for step in range(2):  # S falls as sigma rises
        assert entropies[step] - entropies[step + 1] > 4 * (errors[step] + errors[step + 1])
    assert (tmp_path / "sigma_1" / "posterior.nc").exists()


def test_the_toy_gibbs_principle_where_sigma_is_comparable(tmp_path):
    sampled = [name for name, preset in TOY_PRESETS.items() if preset.multipliers.sigma > 0]
    metrics = run_toy_frontier(sampled, tmp_path, progress=False)
    for name in (
        "entropy_regularized_classifier",
        "bayesian_neural_network",
        "entropy_regularized_vib",
    ):
        gibbs = metrics[name]["gibbs"]
        assert gibbs["J_star"] - 4 * gibbs["J_star_error"] <= gibbs["J_fitted"], name
