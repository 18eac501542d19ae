"""Things that score: derived bounds, published losses, mutual-information bounds.

:func:`derive_bound` is the source of truth: it reads a lower bound off a Pyro (model, guide) pair,
term by term. :mod:`~thermossl.objectives.losses` holds the published closed forms it is checked
against, :mod:`~thermossl.objectives.mi` the variational bounds on mutual information, and
:mod:`~thermossl.objectives.nesy` the exact constraint probability of the addition task, and
:mod:`~thermossl.objectives.entropy` the sample entropy estimators of latent distribution matching.
"""

from thermossl.objectives import entropy, losses, mi, nesy
from thermossl.objectives.bound import Bound, DerivedELBO, derive_bound
from thermossl.objectives.sharing import shared, sharing_scope
from thermossl.objectives.traced import TracedBound

__all__ = [
    "Bound",
    "DerivedELBO",
    "TracedBound",
    "derive_bound",
    "entropy",
    "losses",
    "mi",
    "nesy",
    "shared",
    "sharing_scope",
]
