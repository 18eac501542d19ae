"""Pyro programs: the SSL families of paper 001 and, later, world-P data processes.

Every SSL program is a :class:`~pyro.nn.PyroModule` with ``model(x1, x2)`` and ``guide(x1, x2)``
over two views of a batch; :func:`thermossl.objectives.derive_bound` turns the pair into its loss.
"""

from thermossl.models.cluster import ClusterSSL
from thermossl.models.contrastive import ContrastiveSSL
from thermossl.models.correlated_gaussians import CorrelatedGaussians
from thermossl.models.gedi import GEDI, EnergyModel, GEDIWeights
from thermossl.models.ldm_cpc import PredictiveCPC
from thermossl.models.ldm_kalman import KalmanLDM, LinearGaussianStateSpace
from thermossl.models.ldm_pairs import PairLDM
from thermossl.models.ldm_recurrent import RecurrentLDM
from thermossl.models.negative_free import NegativeFreeSSL
from thermossl.models.two_view import TwoViewProgram

__all__ = [
    "GEDI",
    "ClusterSSL",
    "ContrastiveSSL",
    "CorrelatedGaussians",
    "EnergyModel",
    "GEDIWeights",
    "KalmanLDM",
    "LinearGaussianStateSpace",
    "NegativeFreeSSL",
    "PairLDM",
    "PredictiveCPC",
    "RecurrentLDM",
    "TwoViewProgram",
]
