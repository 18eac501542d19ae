"""The toy's sampled Gibbs law p*(θ) ∝ q(θ) exp(−U(θ)/σ) (TherML eq. 19–20).

The potential is checked against a hand computation from the toy's probability tables; the whole
pipeline (derived potential, SGLD ladder, thermodynamic integration) against a two-latent toy whose
θ is two-dimensional, so that log Z, S and every rung's mean are sums over a fine grid. As in
tests/objectives/test_thermodynamic_integration.py, three separate claims: each rung's mean
matches the grid within 4 Monte Carlo standard errors (the sampler is right), the estimate matches
the same quadrature of the grid's rung means within 4 standard errors, and that quadrature is
within its stated systematic budget of the grid's exact log Z and S.
"""

from __future__ import annotations

import math

import arviz as az
import pytest
import torch
from thermossl.models.therml import ToyWorlds, toy_data
from thermossl.objectives.therml import Multipliers

from thermossl.therml_gibbs import GibbsConfig, gibbs_potential, sample_toy_gibbs
from thermossl.therml_toy import ToyConfig, run_toy_frontier

SIGMA = 20.0
MULTIPLIERS = Multipliers(rho=1, delta=1, gamma=1, sigma=SIGMA)


def _hand_energy(worlds: ToyWorlds, theta: torch.Tensor, data, num_examples: int) -> torch.Tensor:
    """ρR + δD + γC (sums over the examples) from the tables, with R = E log e(z|x)/q(z) etc."""
    x, y, probability = data.cells()
    weight = num_examples * probability
    u = worlds.bin_positions[x][:, None]
    encoder = torch.log_softmax(-((theta * u - worlds.encoder_bias) ** 2), -1)  # [M, K]
    marginal = torch.log_softmax(worlds.marginal, -1)
    decoder = torch.log_softmax(worlds.decoder_logits(), -1)[:, x].T  # [M, K]
    classifier = torch.log_softmax(worlds.classifier_logits(), -1)[:, y].T  # [M, K]
    e = encoder.exp()
    rate = (weight * (e * (encoder - marginal)).sum(-1)).sum()
    distortion = -(weight * (e * decoder).sum(-1)).sum()
    classification = -(weight * (e * classifier).sum(-1)).sum()
    return (
        MULTIPLIERS.rho * rate + MULTIPLIERS.delta * distortion + MULTIPLIERS.gamma * classification
    )


def test_potential_is_the_hand_computed_energy_and_prior():
    worlds = ToyWorlds(seed=3, dtype=torch.float64).requires_grad_(False)
    data = toy_data(50)
    potential = gibbs_potential(worlds, data, MULTIPLIERS, 50)
    u = torch.randn(30, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 1.0
    energy, log_prior, log_jacobian = potential.terms(u, None)
    assert float(energy) == pytest.approx(float(_hand_energy(worlds, u.exp(), data, 50)), rel=1e-12)
    assert float(log_prior) == pytest.approx(
        float(worlds.parameter_prior().log_prob(u.exp())), rel=1e-12
    )
    assert float(log_jacobian) == pytest.approx(float(u.sum()), rel=1e-12)


def test_bad_multipliers_are_named():
    worlds, data = ToyWorlds(seed=0), toy_data(50)
    with pytest.raises(ValueError, match="sigma"):
        gibbs_potential(worlds, data, Multipliers(0, 0, 1, 0), 50)
    with pytest.raises(ValueError, match="all zero"):
        gibbs_potential(worlds, data, Multipliers(0, 0, 0, 1), 50)
    with pytest.raises(ValueError, match="gamma"):
        gibbs_potential(worlds, data, Multipliers(0, 0, -1, 1), 50)
    with pytest.raises(ValueError, match="kernel"):
        GibbsConfig(kernel="hmc")


@pytest.fixture(scope="module")
def two_latent_toy():
    worlds = ToyWorlds(num_latents=2, seed=0, dtype=torch.float64).requires_grad_(False)
    train, exact = toy_data(50), toy_data()
    config = GibbsConfig(num_chains=64, num_rungs=12, num_warmup=300, num_draws=100)
    result = sample_toy_gibbs(worlds, MULTIPLIERS, train, exact, 50, config, progress=False)
    # the grid: u = log θ over ±7 prior sds, 241² points
    potential = gibbs_potential(worlds, train, MULTIPLIERS, 50)
    axis = torch.linspace(-7, 7, 241, dtype=torch.float64) + worlds.prior_loc
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    energy, log_prior, log_jacobian = torch.vmap(lambda u: potential.terms(u, None))(grid)
    log_cell = 2 * math.log(float(axis[1] - axis[0]))
    return result, energy, log_prior + log_jacobian, log_cell


def _grid_law(energy, log_base, beta):
    log_weight = log_base - beta * energy
    normalizer = torch.logsumexp(log_weight, 0)
    return (log_weight - normalizer).exp(), normalizer


def test_every_rung_samples_the_gibbs_law(two_latent_toy):
    result, energy, log_base, _ = two_latent_toy
    integration = result.integration
    exact_means = torch.stack(
        [
            (_grid_law(energy, log_base, beta)[0] * energy).sum()
            for beta in integration.inverse_temperatures.tolist()
        ]
    )
    z = (integration.mean_objective - exact_means) / integration.standard_error
    assert float(z.abs().max()) < 4, z


def test_log_partition_and_entropy_match_the_grid(two_latent_toy):
    result, energy, log_base, log_cell = two_latent_toy
    integration = result.integration
    exact_means = torch.stack(
        [
            (_grid_law(energy, log_base, beta)[0] * energy).sum()
            for beta in integration.inverse_temperatures.tolist()
        ]
    )
    quadrature = -(integration.quadrature_weights * exact_means).sum()
    assert abs(float(integration.log_partition - quadrature)) < 4 * float(
        integration.log_partition_error
    )
    quadrature_entropy = -quadrature - exact_means[-1] / SIGMA
    assert abs(float(integration.entropy - quadrature_entropy)) < 4 * float(
        integration.entropy_error
    )
    # the 12-rung ladder's systematic error is deterministic: 0.005 nats for log Z and for S (out
    # of 27.4 and 0.92; 0.18 with the plain trapezoid rule, which misses U's constant part)
    law, normalizer = _grid_law(energy, log_base, 1 / SIGMA)
    log_partition = normalizer + log_cell
    entropy = -log_partition - (law * energy).sum() / SIGMA
    assert abs(float(quadrature - log_partition)) < 0.05
    assert abs(float(quadrature_entropy - entropy)) < 0.05
    # and the per-example entropy and free energy reported are these, divided by N
    assert result.functionals["train"]["S"] == pytest.approx(float(integration.entropy) / 50)
    assert result.free_energy["J_star"] == pytest.approx(
        -SIGMA * float(integration.log_partition) / 50
    )


def test_frontier_run_samples_the_sigma_presets_and_writes_their_chains(tmp_path):
    gibbs = GibbsConfig(num_chains=8, num_rungs=6, num_warmup=100, num_draws=50)
    short = ToyConfig(steps=40, evaluation_draws=32)
    presets = ["vae", "bayesian_neural_network"]
    metrics = run_toy_frontier(presets, tmp_path, short, progress=False, gibbs=None)
    assert all("gibbs" not in splits for splits in metrics.values())
    metrics = run_toy_frontier(presets, tmp_path, short, progress=False, gibbs=gibbs)
    assert "gibbs" not in metrics["vae"]  # sigma = 0: no Gibbs law
    sampled = metrics["bayesian_neural_network"]["gibbs"]
    assert set(sampled["exact"]) == {"R", "D", "C", "S"}
    # the Gibbs variational principle: p* has the least free energy for this world Q
    assert sampled["J_star"] - 4 * sampled["J_star_error"] <= sampled["J_fitted"]
    chains = az.from_netcdf(tmp_path / "bayesian_neural_network" / "posterior.nc")
    assert chains.posterior["theta"].shape == (8, 50, 30)
    assert chains.posterior.attrs["preset"] == "bayesian_neural_network"
    assert "train_gibbs" in (tmp_path / "frontier.csv").read_text()
    assert "J* = −σ log Z" in (tmp_path / "gibbs.md").read_text()
    with pytest.raises(ValueError, match="Gibbs laws sampled with other settings"):
        run_toy_frontier(presets, tmp_path, short, progress=False, gibbs=GibbsConfig(seed=1))
