"""Slow reproduction of the README's SSL-thermodynamics results (paper 000): ``make reproduce``.

* The learning demon (eq. 17): with plain SGD on SwAV, every cycle extracts irreversible work
  (W_irr <= 0) at small learning rates, and the share falls as the rate grows.
* The classes (§IV): each method's heated ensembles are measured in its class, at its temperature.
"""

from __future__ import annotations

import math

import pytest

from thermossl.thermo_study import ThermoConfig, run_demon_study, run_thermo

pytestmark = pytest.mark.slow


def test_swav_demon_extracts_irreversible_work_as_the_rate_falls(tmp_path):
    rates = [1e-6, 1e-4, 1e-2, 1e-1]
    results = run_demon_study(["swav"], "moons", rates, tmp_path, cycles=300, progress=False)
    shares = {row["learning_rate"]: row["share_nonpositive"] for row in results}
    assert shares[1e-6] == 1.0 and shares[1e-4] == 1.0
    assert shares[1e-1] < 1.0  # second order wins at large steps
    assert all(row["alignment_share_negative"] == 1.0 for row in results)


@pytest.mark.parametrize(
    "method, expected, temperature",
    [
        ("swav", "sinkhorn-knopp", 0.05),
        ("sela", "sinkhorn-knopp", 0.05),
        ("deepcluster", "degenerate", 0.0),
        ("gedi", "gibbs", 1.0),
        ("byol", "adiabatic", math.inf),
    ],
)
def test_each_method_trains_in_its_class(tmp_path, method, expected, temperature):
    metrics = run_thermo(ThermoConfig(method, "moons", cycles=500), tmp_path, progress=False)
    assert metrics["class"] == expected
    assert metrics["temperature_range"] == pytest.approx([temperature] * 2, rel=1e-9)
    assert metrics["largest_first_law_residual"] <= 1e-12
