"""TherML's frontier on digits (paper 003): the run folder, and the sampler against an independent answer.

The run folder is exercised with a tiny configuration (tens of steps). The θ-chains and the
thermodynamic integration are checked where an independent estimate exists: at a temperature high
enough for the prior to be a good importance-sampling proposal, plain Monte Carlo over prior draws
gives log Z, <J> and S of the Gibbs law (eq. 19–20) without any Markov chain.
"""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from thermossl.models.therml_digits import DigitsWorlds, digits_data
from thermossl.objectives.therml import Multipliers

from thermossl.therml_digits import (
    DIGITS_PRESETS,
    DigitsConfig,
    markdown_digits_frontier,
    run_digits_frontier,
)
from thermossl.therml_digits_chains import ThetaChains, integrate_chains

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*ArviZ is undergoing a major refactor.*")
    import arviz as az

TINY = DigitsConfig(
    steps=30,
    chain_steps=10,
    latent_dim=2,
    hidden=8,
    num_chains=3,
    num_rungs=3,
    num_warmup=4,
    num_draws=5,
    thin=2,
    evaluation_draws=2,
)


def test_presets_sweep_each_multiplier_with_rho_one():
    assert all(multipliers.rho == 1 for multipliers in DIGITS_PRESETS.values())
    deltas = [m.delta for m in DIGITS_PRESETS.values() if m.gamma == 0 and m.sigma == 0]
    gammas = [m.gamma for m in DIGITS_PRESETS.values() if m.delta == 1 and m.sigma == 0]
    sigmas = [m.sigma for m in DIGITS_PRESETS.values() if m.sigma > 0]
    assert len(deltas) >= 3 and len(set(gammas)) >= 3 and len(sigmas) >= 3


def test_run_folder_metrics_posterior_and_resumption(tmp_path):
    presets = ["gamma_10", "sigma_10"]
    metrics = run_digits_frontier(presets, tmp_path, TINY, progress=False)
    stored = json.loads((tmp_path / "metrics.json").read_text())
    assert list(stored) == presets
    for splits in stored.values():
        for label in ("train", "exact"):
            assert set(splits[label]) == {"R", "D", "C", "S"}
            assert 0 <= splits["accuracy"][label] <= 1
    assert stored["gamma_10"]["train"]["S"] is None and "thermodynamics" not in stored["gamma_10"]
    entropy = stored["sigma_10"]["train"]["S"]
    assert entropy == stored["sigma_10"]["exact"]["S"] and math.isfinite(entropy)
    assert set(stored["sigma_10"]["thermodynamics"]) >= {"S_error", "log_partition", "free_energy"}
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["num_chains"] == 3 and "held-out 450" in config["exact_estimate"]
    for name in presets:
        assert (tmp_path / name / "history.csv").exists() and (
            tmp_path / name / "model.pt"
        ).exists()
    assert not (tmp_path / "gamma_10" / "posterior.nc").exists()
    posterior = az.from_netcdf(tmp_path / "sigma_10" / "posterior.nc")
    theta = posterior.posterior["theta"]
    assert theta.dims[:2] == ("chain", "draw") and theta.shape == (3, 5, 4 * 8 + 4)
    assert posterior.sample_stats["objective"].shape == (3, 5)
    assert posterior.attrs["temperature"] == 10.0 and posterior.attrs["preset"] == "sigma_10"
    assert (tmp_path / "frontier.png").stat().st_size > 10_000
    assert "| gamma_10 | 1, 1, 10, 0 |" in (tmp_path / "frontier.md").read_text()
    assert (tmp_path / "frontier.csv").read_text().count("\n") == 1 + 2 * len(presets)

    model = tmp_path / "sigma_10" / "model.pt"
    stamp = model.stat().st_mtime_ns
    assert run_digits_frontier(presets, tmp_path, TINY, progress=False) == metrics
    assert model.stat().st_mtime_ns == stamp  # resumed: nothing retrained
    with pytest.raises(ValueError, match="other settings"):
        run_digits_frontier(presets, tmp_path, TINY.__class__(**{**vars(TINY), "steps": 31}))
    with pytest.raises(ValueError, match="unknown preset"):
        run_digits_frontier(["sigma_0.5"], tmp_path / "other", TINY, progress=False)


def test_markdown_reports_the_entropy_with_its_error():
    values = {"R": 1.0, "D": 2.0, "C": 0.5, "S": 0.25}
    row = {
        "train": values,
        "exact": values,
        "accuracy": {"train": 1.0, "exact": 0.5},
        "thermodynamics": {"S_error": 0.01},
    }
    assert "| 0.250 ± 0.010 | 0.500 |" in markdown_digits_frontier({"sigma_1": row})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"steps": 0}, "steps"),
        ({"num_chains": 1}, "num_chains"),
        ({"kernel": "hmc"}, "kernel"),
        ({"step_fraction": 2.5}, "step_fraction"),
        ({"exponent": 1.0}, "exponent"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"prior_scale": -1.0}, "prior_scale"),
    ],
)
def test_bad_settings_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        DigitsConfig(**change)


def test_thermodynamic_integration_matches_importance_sampling_at_high_temperature():
    """At beta * sd_q(J) = 1.5 a Gaussian near the prior is a good proposal: log Z, <J>_beta and
    S = -log Z - beta <J> by self-normalized importance sampling (bootstrap errors), no chain.

    The reference is the chains' own stationary law: in the whitened coordinates the prior is
    N(0, I) and the Gibbs factor at this temperature barely bends it (curvature ~1), where SGLD
    with step h samples the variance 1 / (1 - h/2) (``thermossl.inference.diffusions``), so the
    proposal is the prior widened by that factor; the prior itself is the target as h -> 0,
    checked with a budget for the O(h) bias. The latent noise enters both estimates the same way
    (one draw per example and evaluation); its Jensen gap, beta^2 Var(noise) / 2 ~ 1e-3, is
    negligible.
    """
    data = digits_data(dtype=torch.float64)
    pixels, labels = data.train_pixels[:120], data.train_labels[:120]
    worlds = DigitsWorlds(latent_dim=2, hidden=8, num_components=3, dtype=torch.float64)
    worlds.requires_grad_(False).train(False)
    chains = ThetaChains(
        worlds,
        Multipliers(1, 1, 1),
        pixels,
        labels,
        prior_scale=0.5,
        batch_size=40,
        step_fraction=0.1,
    )
    generator = torch.Generator().manual_seed(0)
    standard = torch.randn(2000, worlds.head_size, generator=generator, dtype=torch.float64)

    def energies(draws):
        with torch.no_grad():
            return torch.cat(
                [
                    chains.objective(part, chains.batch(len(part), generator))
                    for part in draws.split(500)
                ]
            )

    beta = 1.5 / float(energies(0.5 * standard).std())
    metric = chains.kronecker_curvature(worlds.head_vector(), generator)
    curvature = chains.largest_curvature(worlds.head_vector(), beta, metric, generator)
    assert 0.9 < curvature < 1.2  # the Gibbs factor barely bends the whitened prior
    step = chains.step_fraction / curvature
    widening = 1 / math.sqrt(1 - step / 2)

    result = integrate_chains(
        chains,
        1 / beta,
        0.5 * standard[:12],
        metric=metric,
        curvature=curvature,
        num_rungs=12,
        exponent=4.0,
        num_warmup=60,
        num_draws=15,
        thin=4,
        generator=generator,
        progress=False,
    )
    estimate = torch.stack([result.log_partition, result.entropy])
    error = torch.stack([result.log_partition_error, result.entropy_error])

    def reference(scale):
        """log <exp(-beta J)>_q and S under q = N(0, scale^2), with bootstrap errors."""
        values = energies(scale * standard)

        def importance_sampling(values):
            log_weights = -beta * values
            log_partition = torch.logsumexp(log_weights, 0) - math.log(len(values))
            mean = (torch.softmax(log_weights, 0) * values).sum()
            return torch.stack([log_partition, -log_partition - beta * mean])

        resamples = torch.randint(len(values), (200, len(values)), generator=generator)
        errors = torch.stack([importance_sampling(values[r]) for r in resamples]).std(0)
        return importance_sampling(values), errors

    stationary, stationary_error = reference(0.5 * widening)
    z = (estimate - stationary) / (error**2 + stationary_error**2).sqrt()
    assert float(z.abs().max()) < 4, (estimate, stationary, z)
    assert float(stationary[1]) > 3 * float(error[1])  # S is resolved: the check is not 0 vs 0
    target, _ = reference(0.5)
    assert float((stationary - target).abs().max()) < 0.05  # the O(h) bias at step_fraction 0.1


def test_frontier_cli_dispatches_to_digits(tmp_path):
    from typer.testing import CliRunner

    from thermossl.cli import app

    runner = CliRunner(env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
    arguments = ["frontier", "--data", "digits", "--preset", "delta_1", "--steps", "5"]
    result = runner.invoke(app, [*arguments, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "| delta_1 | 1, 1, 0, 0 |" in result.output
    stored = json.loads((tmp_path / "metrics.json").read_text())
    assert set(stored["delta_1"]["exact"]) == {"R", "D", "C", "S"}
    bad = runner.invoke(
        app, ["frontier", "--data", "digits", "--preset", "delta_9", "--out", str(tmp_path / "x")]
    )
    assert bad.exit_code != 0 and "unknown preset" in bad.output
