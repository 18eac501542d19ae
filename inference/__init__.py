"""Numerical engines that move: SG-MCMC kernels, samplers, transport, filters.

This layer imports neither :mod:`thermossl.objectives` nor :mod:`thermossl.models`; it takes
potentials and objectives as callables (or as Pyro programs, through Pyro itself).
"""

from thermossl.inference.gibbs_ensembles import (
    GeneralizedGibbsEnsemble,
    LinearConstraint,
    generalized_gibbs_ensemble,
)
from thermossl.inference.gradients import TracedGradient, minibatch_gradient
from thermossl.inference.kalman import KalmanFilterResult, kalman_filter
from thermossl.inference.potentials import ParameterLayout, Potential, Site
from thermossl.inference.psgld import PreconditionedSGLD
from thermossl.inference.quasi_static import (
    conserving_rates,
    data_tangent,
    equilibrium_tangents,
    geodesic_transfer_rates,
    rise_and_anneal,
)
from thermossl.inference.sampling import sample
from thermossl.inference.schedules import CyclicalSchedule
from thermossl.inference.sghmc import SGHMC
from thermossl.inference.sgld import SGLD
from thermossl.inference.sinkhorn import sinkhorn_knopp

__all__ = [
    "SGHMC",
    "SGLD",
    "CyclicalSchedule",
    "GeneralizedGibbsEnsemble",
    "KalmanFilterResult",
    "LinearConstraint",
    "ParameterLayout",
    "Potential",
    "PreconditionedSGLD",
    "Site",
    "TracedGradient",
    "conserving_rates",
    "data_tangent",
    "equilibrium_tangents",
    "generalized_gibbs_ensemble",
    "geodesic_transfer_rates",
    "kalman_filter",
    "minibatch_gradient",
    "rise_and_anneal",
    "sample",
    "sinkhorn_knopp",
]
