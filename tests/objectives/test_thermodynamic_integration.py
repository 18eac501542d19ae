"""Thermodynamic integration (TherML's S and log Z from sampled posteriors) on a linear-Gaussian
world, where the equilibrium law, log Z and S = KL(p* || q) are closed-form.

Three separate claims: each rung's mean objective equals the closed-form mean under the SGLD
chain's own stationary law within 4 Monte Carlo standard errors (the sampler is right); the
estimate equals the same quadrature applied to those closed-form means within 4 standard errors;
and that quadrature differs from the exact log Z and S by less than the stated systematic budget.
"""

from __future__ import annotations

import pytest
import torch
from thermossl.inference import Potential
from thermossl.objectives.linear_gaussian import LinearGaussianRegression
from thermossl.objectives.thermodynamic_integration import (
    integrate_ladder,
    inverse_temperature_ladder,
    thermodynamic_integration,
)

TEMPERATURE = 0.5


@pytest.fixture(scope="module")
def setting():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(30, 3, generator=generator, dtype=torch.float64)
    targets = features @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    targets = targets + 0.3 * torch.randn(30, generator=generator, dtype=torch.float64)
    world = LinearGaussianRegression(features, targets, noise_scale=0.3, prior_scale=2.0)
    potential = Potential.from_callable(
        lambda parameters, batch: world.objective(parameters["theta"]),
        {"theta": (3,)},
        [world.targets],
        log_prior=lambda parameters: world.log_prior(parameters["theta"]),
    )
    stiffness = float(torch.linalg.eigvalsh(world.curvature).max())

    def step(beta: float) -> float:  # 5 % of the stability limit of the scaled potential
        return 0.05 / (beta * stiffness + 1 / world.prior_scale**2)

    prior_draws = world.prior_scale * torch.randn(64, 3, generator=generator, dtype=torch.float64)
    result = thermodynamic_integration(
        potential,
        TEMPERATURE,
        step_size=step,
        num_rungs=12,
        num_chains=64,
        num_draws=100,
        num_warmup=400,
        initial_position=prior_draws,
        dtype=torch.float64,
        progress=False,
    )
    stationary_means = torch.stack(
        [
            world.mean_objective(world.sgld_stationary(1 / beta, step(beta) * beta))
            for beta in result.inverse_temperatures.tolist()
        ]
    )
    return world, result, stationary_means


def test_every_rung_samples_the_chains_stationary_law(setting):
    _, result, stationary_means = setting
    z = (result.mean_objective - stationary_means) / result.standard_error
    assert float(z.abs().max()) < 4, z


def test_estimates_match_the_quadrature_of_the_exact_rung_means(setting):
    world, result, stationary_means = setting
    reference_log_partition = -(result.quadrature_weights * stationary_means).sum()
    assert abs(float(result.log_partition - reference_log_partition)) < 4 * float(
        result.log_partition_error
    )
    reference_entropy = -reference_log_partition - stationary_means[-1] / TEMPERATURE
    assert abs(float(result.entropy - reference_entropy)) < 4 * float(result.entropy_error)
    # the systematic part (12-rung quadrature + the kernel's step bias) is deterministic: 0.20
    # nats for log Z and 0.17 for S at these settings (0.27 and 0.25 with the plain trapezoid
    # rule); the bound fails if the ladder or the step gets coarser
    assert abs(float(reference_log_partition - world.log_partition(TEMPERATURE))) < 0.3
    assert abs(float(reference_entropy - world.entropy(TEMPERATURE))) < 0.3
    # and the posterior at the target temperature is kept as ArviZ data
    assert result.posterior.posterior["theta"].shape == (64, 100, 3)


def test_bad_arguments_are_named(setting):
    world, _, _ = setting
    potential = Potential.from_callable(
        lambda parameters, batch: world.objective(parameters["theta"]),
        {"theta": (3,)},
        [world.targets],
    )
    with pytest.raises(ValueError, match="temperature"):
        thermodynamic_integration(potential, -1.0, step_size=1e-3)
    with pytest.raises(ValueError, match="exponent"):
        thermodynamic_integration(potential, 1.0, step_size=1e-3, exponent=1.0)
    with pytest.raises(ValueError, match="step_size"):
        thermodynamic_integration(potential, 1.0, step_size=lambda beta: -1.0, num_rungs=1)


def test_the_standalone_quadrature_reproduces_the_estimate(setting):
    """The ladder and the quadrature, fed the rung means, give the estimate's numbers exactly."""
    _, result, _ = setting
    ladder = inverse_temperature_ladder(TEMPERATURE, 12, 4.0)
    assert torch.equal(ladder, result.inverse_temperatures)
    again = integrate_ladder(
        result.mean_objective, result.standard_error, temperature=TEMPERATURE, exponent=4.0
    )
    for name in ("quadrature_weights", "log_partition", "log_partition_error", "entropy"):
        assert torch.equal(getattr(again, name), getattr(result, name)), name
    assert torch.equal(again.entropy_error, result.entropy_error)
    # the weights integrate a constant exactly; without that correction the rule is the
    # trapezoid rule in t of <J>_beta(t) * dbeta/dt, whose value at t = 0 is 0
    assert float(again.quadrature_weights.sum()) == pytest.approx(1 / TEMPERATURE, rel=1e-14)
    plain = integrate_ladder(
        result.mean_objective,
        result.standard_error,
        temperature=TEMPERATURE,
        exponent=4.0,
        exact_for_constants=False,
    )
    fractions = torch.linspace(0, 1, 13, dtype=torch.float64)
    integrand = 4.0 / TEMPERATURE * fractions[1:] ** 3 * result.mean_objective
    trapezoid = torch.trapezoid(torch.cat([integrand.new_zeros(1), integrand]), fractions)
    assert float(plain.log_partition) == pytest.approx(-float(trapezoid), rel=1e-12)
    with pytest.raises(ValueError, match="one length"):
        integrate_ladder(
            result.mean_objective, result.standard_error[:-1], temperature=1.0, exponent=4.0
        )
