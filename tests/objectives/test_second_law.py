"""TherML's second law (paper 003, eq. 36–41) on a linear-Gaussian world, where it is closed-form.

An SGLD chain started from the prior has a Gaussian law at every step. Along it, the
non-equilibrium objective decreases monotonically from the prior's mean objective (eq. 40) to
minus sigma times the log partition function (eq. 41), up to the O(step^2) gap between the
discrete chain's stationary law and the equilibrium; the relative entropy to the chain's own
stationary law decreases exactly (the data-processing inequality). The closed-form laws are checked
against the library's SGLD kernel by Monte Carlo, with tolerances from the standard error.
"""

from __future__ import annotations

import math

import pytest
import torch
from thermossl.inference import SGLD, Potential
from thermossl.inference.gradients import minibatch_gradient
from thermossl.objectives.linear_gaussian import (
    GaussianLaw,
    LinearGaussianRegression,
    gaussian_relative_entropy,
)

TEMPERATURE = 0.5


@pytest.fixture(scope="module")
def world() -> LinearGaussianRegression:
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(30, 3, generator=generator, dtype=torch.float64)
    targets = features @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    targets = targets + 0.3 * torch.randn(30, generator=generator, dtype=torch.float64)
    return LinearGaussianRegression(features, targets, noise_scale=0.3, prior_scale=2.0)


def test_closed_forms_agree_with_quadrature_in_one_dimension():
    """log Z by numerical integration over a fine grid, for d = 1."""
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(8, 1, generator=generator, dtype=torch.float64)
    targets = 0.7 * features[:, 0] + 0.5 * torch.randn(8, generator=generator, dtype=torch.float64)
    world = LinearGaussianRegression(features, targets, noise_scale=0.5, prior_scale=1.5)
    grid = torch.linspace(-12, 12, 200_001, dtype=torch.float64)[:, None]
    integrand = world.log_prior(grid) - world.objective(grid) / TEMPERATURE
    numeric = torch.logsumexp(integrand, 0) + math.log(float(grid[1] - grid[0]))
    assert float(world.log_partition(TEMPERATURE)) == pytest.approx(float(numeric), abs=1e-9)
    law = world.equilibrium(TEMPERATURE)
    weights = torch.softmax(integrand, 0)
    assert float(law.mean[0]) == pytest.approx(float((weights * grid[:, 0]).sum()), abs=1e-9)


def test_nonequilibrium_objective_is_the_relative_entropy_to_equilibrium(world):
    """Eq. 36-37: J_noneq(p) = -sigma log Z + sigma KL(p || p*), for any Gaussian p."""
    generator = torch.Generator().manual_seed(2)
    factor = torch.randn(3, 3, generator=generator, dtype=torch.float64)
    law = GaussianLaw(torch.randn(3, generator=generator, dtype=torch.float64), factor @ factor.T)
    expected = -TEMPERATURE * world.log_partition(TEMPERATURE) + TEMPERATURE * (
        gaussian_relative_entropy(law, world.equilibrium(TEMPERATURE))
    )
    assert float(world.nonequilibrium_objective(law, TEMPERATURE)) == pytest.approx(
        float(expected), rel=1e-12
    )
    # at equilibrium J = -sigma log Z (eq. 35), and S = -log Z - <J>/sigma
    equilibrium = world.equilibrium(TEMPERATURE)
    assert float(world.nonequilibrium_objective(equilibrium, TEMPERATURE)) == pytest.approx(
        float(-TEMPERATURE * world.log_partition(TEMPERATURE)), rel=1e-12
    )


@pytest.mark.parametrize("step_size", [1e-3, 5e-4])
def test_sgld_from_the_prior_obeys_the_second_law(world, step_size):
    laws = world.sgld_laws(TEMPERATURE, step_size, num_steps=3000)
    objective = torch.stack([world.nonequilibrium_objective(law, TEMPERATURE) for law in laws])
    # eq. 40: the chain starts at the prior, where J_noneq = <J>_q
    assert float(objective[0]) == pytest.approx(float(world.mean_objective(world.prior())))
    # eq. 39: monotone decrease (increases only at round-off, once converged)
    assert float(objective.diff().max()) <= 1e-12 * float(objective.abs().max())
    # the relative entropy to the chain's own stationary law decreases at every step
    stationary = world.sgld_stationary(TEMPERATURE, step_size)
    to_stationary = torch.stack([gaussian_relative_entropy(law, stationary) for law in laws])
    assert float(to_stationary.diff().max()) <= 1e-12
    # eq. 41: the end point is -sigma log Z, up to sigma KL(stationary || p*) = O(step^2)
    gap = TEMPERATURE * gaussian_relative_entropy(stationary, world.equilibrium(TEMPERATURE))
    limit = -TEMPERATURE * world.log_partition(TEMPERATURE)
    assert float(objective[-1] - limit) == pytest.approx(float(gap), rel=1e-6)
    assert float(gap) < 1e-3 * float(objective[0] - limit)


def test_the_discretization_gap_shrinks_quadratically(world):
    gaps = [
        float(
            gaussian_relative_entropy(
                world.sgld_stationary(TEMPERATURE, step), world.equilibrium(TEMPERATURE)
            )
        )
        for step in (2e-4, 1e-4)
    ]
    assert 3.5 < gaps[0] / gaps[1] < 4.5


def test_closed_form_laws_match_the_sgld_kernel(world):
    """4000 chains of thermossl's SGLD: the mean objective at several steps, within 4 standard errors."""
    potential = Potential.from_callable(
        lambda parameters, batch: world.objective(parameters["theta"]),
        {"theta": (3,)},
        [world.targets],
        log_prior=lambda parameters: world.log_prior(parameters["theta"]),
    )
    step_size, checkpoints = 1e-3, (1, 10, 100, 400)
    kernel = SGLD(minibatch_gradient(potential.effective(TEMPERATURE)), step_size, TEMPERATURE)
    generator = torch.Generator().manual_seed(3)
    start = world.prior_scale * torch.randn(4000, 3, generator=generator, dtype=torch.float64)
    state = kernel.init(start)
    laws = world.sgld_laws(TEMPERATURE, step_size, max(checkpoints))
    indices = torch.arange(world.targets.shape[0])
    for step in range(1, max(checkpoints) + 1):
        state, _ = kernel.step(state, indices, generator=generator)
        if step in checkpoints:
            values = world.objective(state.position)
            error = float(values.std()) / math.sqrt(values.shape[0])
            expected = float(world.mean_objective(laws[step]))
            assert abs(float(values.mean()) - expected) <= 4 * error, (step, expected)
            # mean and covariance entries, each within 4 of its sampling standard errors
            law, count = laws[step], state.position.shape[0]
            variances = law.covariance.diagonal()
            mean_error = (variances / count).sqrt()
            assert bool(((state.position.mean(0) - law.mean).abs() <= 4 * mean_error).all())
            entry_error = ((variances[:, None] * variances + law.covariance**2) / count).sqrt()
            covariance = torch.cov(state.position.T)
            assert bool(((covariance - law.covariance).abs() <= 4 * entry_error).all()), step


def test_bad_inputs_are_named(world):
    with pytest.raises(ValueError, match="temperature"):
        world.equilibrium(0.0)
    with pytest.raises(ValueError, match="step_size"):
        world.sgld_stationary(TEMPERATURE, 1.0)
    with pytest.raises(ValueError, match="targets"):
        LinearGaussianRegression(world.features, world.targets[:3], 1.0, 1.0)
