r"""The toy's :math:`\sigma > 0` objectives with the parameter law sampled, not fitted (paper 003).

For world Q fixed, the law :math:`p(\theta \mid \text{data})` minimizing
:math:`J = \rho R + \delta D + \gamma C + \sigma S` over *all* laws of :math:`\theta` is the Gibbs
law of eq. 19, and the minimum is the free energy of eq. 20:

.. math::

    p^*(\theta) = \frac{q(\theta)\, e^{-U(\theta)/\sigma}}{\mathcal{Z}}, \qquad
    U(\theta) = \rho R(\theta) + \delta D(\theta) + \gamma C(\theta), \qquad
    J^* = \langle U \rangle_{p^*} + \sigma S[p^*] = -\sigma \log \mathcal{Z},

with :math:`R(\theta), D(\theta), C(\theta)` the functionals of the encoder at the point
:math:`\theta` (sums over the :math:`N` examples). :class:`~thermossl.models.therml.ToyWorlds`
fits a log-normal family to this minimum (Achille & Soatto's weight noise, Appendix B); here
:math:`p^*` is drawn by SG-MCMC along a ladder of inverse temperatures and
:math:`S = \mathrm{KL}(p^* \| q)` and :math:`\log\mathcal{Z}` come from thermodynamic
integration (:func:`~thermossl.objectives.thermodynamic_integration.thermodynamic_integration`).

Because :math:`p^*` is the exact minimizer, the Gibbs variational principle is a law to check on
numbers: :math:`J^* \le J[p]` for the fitted log-normal :math:`p` with the same world Q.

:math:`U(\theta)` and :math:`\log q(\theta)` are **derived**: both programs are conditioned on
:math:`\theta` and :class:`~thermossl.objectives.DerivedELBO` reads the ``z``, ``x``, ``y`` terms
(:math:`-R, -D, -C`) and world Q's ``theta`` term (:math:`\log q(\theta)`) off their traces.
The chains move :math:`u = \log\theta` (the encoder weights are positive).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import NamedTuple

import arviz as az
import pyro.poutine as poutine
import torch
from torch import Tensor
from torch.distributions import biject_to, constraints

from thermossl._validation import check_positive, check_positive_integer
from thermossl.inference import ParameterLayout, Potential, Site
from thermossl.inference.sampling import KERNELS
from thermossl.models.therml import ToyData, ToyWorlds
from thermossl.objectives.bound import DerivedELBO
from thermossl.objectives.therml import Functionals, Multipliers, objective
from thermossl.objectives.thermodynamic_integration import (
    ThermodynamicIntegration,
    thermodynamic_integration,
)
from thermossl.objectives.traced import ParameterPassthrough

__all__ = [
    "GibbsConfig",
    "ToyGibbs",
    "conditioned_worlds",
    "gibbs_potential",
    "sample_toy_gibbs",
    "sampled_functionals",
]

# The toy's plates sit at fixed dimensions (parameter_draws -2, data -1). Giving the nesting
# skips the derivation's guessing run, which would draw z at random inside the sampler's vmap.
_DERIVATION = DerivedELBO(max_plate_nesting=2)


@dataclass(frozen=True)
class GibbsConfig:
    r"""Settings of the sampled :math:`p^*` and its thermodynamic integration.

    :ivar str kernel: ``"sgld"``, ``"sghmc"`` or ``"psgld"``.
    :ivar int num_chains: chains per rung, started from prior draws.
    :ivar int num_rungs: :math:`K` of the ladder :math:`\beta_k = \beta^* (k/K)^a`.
    :ivar float exponent: :math:`a`.
    :ivar int num_warmup: discarded steps per rung.
    :ivar int num_draws: kept draws per chain and rung.
    :ivar float step_fraction: :math:`c` of the step :math:`h(\beta) = c / (\beta\lambda + 1/s_q^2)`
        on the scaled potential, with :math:`\lambda` the largest Hessian eigenvalue of
        :math:`U` in :math:`u = \log\theta` at the fitted weights and :math:`1/s_q^2` the prior's
        curvature: a fixed fraction of the stability limit near the fitted weights.
    :ivar int evaluation_draws: draws of :math:`p^*` (thinned from the last rung) over which
        :math:`R, D, C` are averaged.
    :ivar int seed: seeds the prior draws and the sampler.
    """

    kernel: str = "sgld"
    num_chains: int = 32
    num_rungs: int = 24
    exponent: float = 4.0
    num_warmup: int = 500
    num_draws: int = 200
    step_fraction: float = 0.05
    evaluation_draws: int = 1024
    seed: int = 0

    def __post_init__(self):
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {self.kernel!r}")
        for name in ("num_chains", "num_rungs", "num_warmup", "num_draws", "evaluation_draws"):
            check_positive_integer(name, getattr(self, name))
        check_positive("step_fraction", self.step_fraction)
        if not self.exponent > 1:
            raise ValueError(f"exponent must be > 1, got {self.exponent!r}")


def conditioned_worlds(worlds: ToyWorlds, theta: Tensor) -> tuple:
    r"""World Q and world P with the encoder weights fixed at the draws ``theta`` ``[P, K]``.

    :returns: ``(model, guide, plate_sizer)``: the conditioned programs and the ``[P, K]``
        tensor to pass as their ``parameter_noise`` argument, which only sizes the
        ``parameter_draws`` plate (the conditioned site ignores its values). Their derived bound
        averages over the ``P`` draws; its ``theta`` term is :math:`\langle\log q(\theta)\rangle`.
    """
    values = {"theta": theta.unsqueeze(-2)}
    model = poutine.condition(worlds.model, data=values)
    # world P's theta is given, not drawn: hidden from the derivation, which then scores world
    # Q's observed theta as log q(theta) and the z, x, y sites at these weights
    guide = poutine.block(poutine.condition(worlds.guide, data=values), hide=["theta"])
    return model, guide, torch.zeros_like(theta)


def gibbs_potential(
    worlds: ToyWorlds, data: ToyData, multipliers: Multipliers, num_examples: int
) -> Potential:
    r"""The potential of :math:`p^*` for a trained toy: :math:`U(\theta)` and :math:`\log q(\theta)`.

    Its single parameter ``theta`` (``[K]``, positive) is sampled as :math:`u = \log\theta`; the
    point parameters of ``worlds`` (world Q, the biases) stay fixed. :math:`U` sums over the
    ``num_examples`` examples of ``data``, so a sampler at temperature :math:`\sigma` targets
    :math:`p^*` of eq. 19.

    :raises ValueError: on a zero or negative ``multipliers.sigma`` (:math:`p^*` needs
        :math:`\sigma > 0`), or when ``rho``, ``delta`` and ``gamma`` are all zero.

    Example: at :math:`\sigma = 1` the Bayesian classifier's potential at its fitted weights::

        >>> from thermossl.models.therml import toy_data
        >>> worlds, data = ToyWorlds(seed=0, dtype=torch.float64), toy_data(50)
        >>> potential = gibbs_potential(worlds, data, Multipliers(0, 0, 1, 1), 50)
        >>> u = worlds.encoder_log_weight.detach()
        >>> U, log_prior, log_jacobian = potential.terms(u, None)
        >>> bool(torch.isclose(log_prior, worlds.parameter_prior().log_prob(u.exp())))
        True
    """
    multipliers = multipliers.checked()
    check_positive("sigma", multipliers.sigma)
    energy_multipliers = multipliers._replace(sigma=0.0)
    if not any(energy_multipliers):
        raise ValueError("rho, delta and gamma are all zero: the Gibbs law is the prior itself")
    cells = data.cells()
    layout = ParameterLayout(
        [Site("theta", tuple(worlds.encoder_log_weight.shape), biject_to(constraints.positive))]
    )

    def terms(u: Tensor, indices: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        values, log_jacobian = layout.constrain(u)
        model, guide, plate_sizer = conditioned_worlds(worlds, values["theta"].unsqueeze(0))
        with ParameterPassthrough():  # the param store cannot register inside torch.func
            bound = _DERIVATION.bound(model, guide, *cells, num_examples, plate_sizer)
        energy = objective(Functionals.from_bound(bound, 1), energy_multipliers)
        return energy, bound.terms["theta"], log_jacobian

    return Potential(terms, layout, data_size=cells[0].shape[0])


def sampled_functionals(
    worlds: ToyWorlds, theta: Tensor, data: ToyData, num_examples: int
) -> dict[str, float]:
    r""":math:`R, D, C` per example on ``data``, averaged over the parameter draws ``theta`` ``[P, K]``."""
    model, guide, plate_sizer = conditioned_worlds(worlds, theta)
    with torch.no_grad():
        bound = _DERIVATION.bound(model, guide, *data.cells(), num_examples, plate_sizer)
    values = Functionals.from_bound(bound, num_examples).as_floats()
    return {symbol: values[symbol] for symbol in ("R", "D", "C")}


class ToyGibbs(NamedTuple):
    r"""A sampled :math:`p^*` and what was measured on it (per example unless noted).

    :ivar integration: the thermodynamic integration (sums over the :math:`N` examples), whose
        ``posterior`` holds the chains at :math:`\beta^* = 1/\sigma`.
    :ivar float stiffness: :math:`\lambda`, the largest Hessian eigenvalue of :math:`U(u)` at the
        fitted weights, which sets the step sizes.
    :ivar dict functionals: ``{"train": {R, D, C, S}, "exact": {...}}`` under :math:`p^*`.
    :ivar dict free_energy: ``J_star`` :math:`= -\sigma\log\mathcal{Z}/N` and its error, the
        error of :math:`S`, and ``rhat_max``, the largest split R-hat of the last rung's chains.
    """

    integration: ThermodynamicIntegration
    stiffness: float
    functionals: dict[str, dict[str, float]]
    free_energy: dict[str, float]


def sample_toy_gibbs(
    worlds: ToyWorlds,
    multipliers: Multipliers,
    train: ToyData,
    exact: ToyData,
    num_examples: int,
    config: GibbsConfig = GibbsConfig(),
    progress: bool = True,
) -> ToyGibbs:
    r"""Sample :math:`p^*` of a trained toy at :math:`\sigma`; measure :math:`S, J^*` and :math:`R, D, C`.

    The chains start from prior draws at the ladder's first rung; each rung starts where the
    previous one ended, with the step :math:`h(\beta) = c/(\beta\lambda + s_q^{-2})` on the
    scaled potential (``config.step_fraction``). :math:`R, D, C` are averaged over
    ``config.evaluation_draws`` draws of the last rung, on the training set and on the exact law;
    :math:`S` is the same on both (it is a property of the parameter law). Runs in float64.

    .. warning:: SG-MCMC explores one basin at a time. Where :math:`p^*` is sharp (small
        :math:`\sigma`, large multipliers) chains annealed from the prior can settle in
        different basins or fail to relax within the rung; :math:`S` and :math:`\log\mathcal{Z}`
        are then wrong. Two diagnostics are returned: ``rhat_max`` (between-chain agreement at
        :math:`\beta^*`) and the Gibbs variational principle, :math:`J^*` must not exceed the
        fitted family's :math:`J`.
    """
    worlds = copy.deepcopy(worlds).double().requires_grad_(False)  # world Q is fixed under p*
    potential = gibbs_potential(worlds, train, multipliers, num_examples)
    fitted = worlds.encoder_log_weight.detach()
    stiffness = float(torch.linalg.eigvalsh(_curvature(potential, fitted)).max().clamp_min(0.0))
    prior_curvature = 1.0 / worlds.prior_scale**2

    def step(beta: float) -> float:
        return config.step_fraction / (beta * stiffness + prior_curvature)

    generator = torch.Generator().manual_seed(config.seed)
    start = worlds.prior_loc + worlds.prior_scale * torch.randn(
        config.num_chains, fitted.shape[0], generator=generator, dtype=fitted.dtype
    )
    integration = thermodynamic_integration(
        potential,
        multipliers.sigma,
        step_size=step,
        num_rungs=config.num_rungs,
        exponent=config.exponent,
        num_chains=config.num_chains,
        num_draws=config.num_draws,
        num_warmup=config.num_warmup,
        kernel=config.kernel,
        initial_position=start,
        seed=config.seed,
        dtype=fitted.dtype,
        progress=progress,
    )
    posterior = integration.posterior
    draws = torch.as_tensor(posterior.posterior["theta"].values, dtype=fitted.dtype)
    draws = draws.reshape(-1, draws.shape[-1])
    draws = draws[:: max(1, draws.shape[0] // config.evaluation_draws)][: config.evaluation_draws]
    entropy = float(integration.entropy) / num_examples
    functionals = {
        label: {**sampled_functionals(worlds, draws, data, num_examples), "S": entropy}
        for label, data in (("train", train), ("exact", exact))
    }
    scale = multipliers.sigma / num_examples
    free_energy = {
        "J_star": -scale * float(integration.log_partition),
        "J_star_error": scale * float(integration.log_partition_error),
        "S_error": float(integration.entropy_error) / num_examples,
        "rhat_max": float(az.rhat(posterior)["theta"].max()),
    }
    return ToyGibbs(integration, stiffness, functionals, free_energy)


def _curvature(potential: Potential, at: Tensor) -> Tensor:
    """The Hessian of :math:`U` at ``at`` (unconstrained), symmetrized."""

    def energy(u: Tensor) -> Tensor:
        return potential.terms(u, None)[0]

    hessian = torch.autograd.functional.hessian(energy, at.detach())
    return (hessian + hessian.T) / 2
