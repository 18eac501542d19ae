r"""Contrastive predictive coding (CPC) as latent distribution matching over time (paper 004, §6).

An encoder maps each frame to a latent on the sphere, :math:`z_t = f(o_t) / \|f(o_t)\|`; a context
network summarizes the past, :math:`c_t = g(z_{\le t})` (a GRU), and a linear head predicts the next
latent's direction, :math:`\mu_t = W c_t / \|W c_t\|`. In LDM terms (Table 1: "empirical +
predictive conditional vMF"), the latent model is

.. math::

    p(z_{t+1} \mid z_{\le t}) = \mathrm{vMF}(z_{t+1};\, \mu_t,\, \kappa),

and with the empirical prior the goal with MI is :math:`\mathbb{E}\log p(z_{t+1} \mid z_{\le t}) +
H(z_{t+1})` (Appendix A.2.3, eq. 20). The entropy is estimated by a vMF-kernel KDE whose kernel
centres are the batch's *predictions* (a valid KDE of the next latents' law, as the predictions
are spread like the latents they predict):

.. math::

    \hat H(z) = -\frac1M \sum_i \log \frac1M \sum_j C_d(\kappa)\, e^{\kappa\, z_i^\top \mu_j},

over the :math:`M = B(T-1)` (sequence, step) pairs of the batch. The derived bound is then exactly
CPC's InfoNCE (van den Oord et al. 2018) with negatives from every other sequence and time step:

.. math::

    \mathcal{L} / M = -\ell_{\mathrm{InfoNCE}}(z_{t+1} \text{ anchors}, \mu_t \text{ candidates};
    \tau = 1/\kappa) + \log M,

which a test checks in value and gradient.
"""

from __future__ import annotations

import math

import pyro
import torch
from pyro.nn import PyroModule, pyro_method
from thermossl.models.ldm_encoding import encode_frames
from thermossl.objectives.bound import Bound, DerivedELBO
from torch import Tensor, nn

from thermossl._validation import check_finite, check_positive, check_positive_integer
from thermossl.distributions import VonMisesFisher, log_von_mises_fisher_normalizer

__all__ = ["PredictiveCPC"]


class PredictiveCPC(PyroModule):
    r"""CPC as a Pyro program over a batch of sequences (see the module docstring for the math).

    :param torch.nn.Module encoder: maps frames ``[N, ...]`` to ``[N, L]``; applied to all frames.
    :param int latent_dim: :math:`L`.
    :param int context_dim: the GRU's hidden size (the context :math:`c_t`).
    :param float concentration: :math:`\kappa = 1/\tau` of the predictive vMF and of the KDE.

    Sample site: ``z_next`` (observed, in plate ``predictions``); factor: ``entropy``.

    Example::

        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> program = PredictiveCPC(nn.Linear(4, 3), latent_dim=3, context_dim=5)
        >>> sorted(program.bound(torch.randn(6, 7, 4)).terms)
        ['entropy', 'z_next']
    """

    def __init__(
        self,
        encoder: nn.Module,
        latent_dim: int,
        context_dim: int = 32,
        concentration: float = 5.0,
    ):
        super().__init__()
        check_positive_integer("latent_dim", latent_dim)
        check_positive_integer("context_dim", context_dim)
        check_positive("concentration", concentration)
        if latent_dim < 2:
            raise ValueError(f"latent_dim must be >= 2 for latents on the sphere, got {latent_dim}")
        self.encoder = encoder
        self.latent_dim = int(latent_dim)
        self.concentration = float(concentration)
        self.context = nn.GRU(latent_dim, context_dim, batch_first=True)
        self.head = nn.Linear(context_dim, latent_dim)

    def latents(self, frames: Tensor) -> Tensor:
        r""":math:`z_{bt}` on the sphere, ``[B, T, L]``."""
        z = encode_frames(self.encoder, frames, self.latent_dim, min_steps=2)
        return z / z.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(z.dtype).tiny)

    def contexts(self, z: Tensor) -> Tensor:
        r""":math:`c_t = \mathrm{GRU}(z_{\le t})`, ``[B, T, context_dim]`` (the features a probe reads)."""
        return self.context(z)[0]

    def predictions(self, z: Tensor) -> Tensor:
        r""":math:`\mu_t = W c_t / \|W c_t\|` for :math:`t = 1..T-1`, ``[B, T-1, L]``."""
        mu = self.head(self.contexts(z)[:, :-1])
        return mu / mu.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(mu.dtype).tiny)

    @pyro_method
    def model(self, frames: Tensor) -> None:
        """``z_next ~ vMF(mu, kappa)`` observed at the next latents, and the KDE entropy factor."""
        check_finite("frames", frames)
        z = self.latents(frames)
        mu = self.predictions(z).reshape(-1, self.latent_dim)
        targets = z[:, 1:].reshape(-1, self.latent_dim)
        count = targets.shape[0]
        with pyro.plate("predictions", count):
            pyro.sample("z_next", VonMisesFisher(mu, self.concentration), obs=targets)
        kernel = self.concentration * targets @ mu.T
        log_density = (
            torch.logsumexp(kernel, dim=-1)
            - math.log(count)
            + log_von_mises_fisher_normalizer(self.latent_dim, self.concentration)
        )
        pyro.factor("entropy", -log_density.sum())

    @pyro_method
    def guide(self, frames: Tensor) -> None:
        """No latent sites: every latent is observed."""

    def bound(self, frames: Tensor) -> Bound:
        """The derived bound: terms ``z_next`` and ``entropy``."""
        return DerivedELBO(max_plate_nesting=1).bound(self.model, self.guide, frames)
