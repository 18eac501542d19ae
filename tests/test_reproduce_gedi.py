"""Reproduction runs of paper 001's synthetic experiments (slow: `make reproduce`).

Theorem 1 predicts which failure mode each ablation admits; training finds it and the diagnostics
report it. Each run is one seed of the paper's 7k iterations (§6.1) with Table 7's settings; the
five-seed tables come from `thermossl compare` (README, "GEDI end to end"), where these
predictions held on 5 of 5 seeds.
"""

from __future__ import annotations

import pytest

from thermossl.evaluation import evaluate
from thermossl.training import TrainingConfig, train

pytestmark = pytest.mark.slow


def failure_modes(method: str, normalizer: str, folder) -> dict:
    config = TrainingConfig(method=method, data="moons", seed=0, iterations=7000)
    config.settings.normalizer = normalizer
    run, data = train(config, folder, progress=False)
    return evaluate(run.method, data, config.augmentation_noise)["failure_modes"]


@pytest.mark.parametrize("method", ["jem", "gedi_no_prior"])
def test_without_the_prior_term_the_clusters_collapse(method, tmp_path):
    """L_PRIOR is what rules out cluster collapse (Theorem 1)."""
    modes = failure_modes(method, "langevin", tmp_path)
    assert modes["cluster_collapse"]
    assert modes["prior_loss"] > modes["prior_optimum"] + 0.1


def test_without_the_invariance_term_the_labels_are_inconsistent(tmp_path):
    """L_INV is what rules out label inconsistency (Theorem 1): shuffling the labels across
    inputs costs (almost) nothing."""
    modes = failure_modes("gedi_no_inv", "quadrature", tmp_path)
    assert modes["label_inconsistency"]
