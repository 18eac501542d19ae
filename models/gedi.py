r"""GEDI: a cluster-based SSL classifier read as an energy-based model (paper 001, §3–4).

The classifier :math:`p(y \mid x; \Theta) = \mathrm{softmax}(U^\top g(x) / \tau)` defines a joint
:math:`p(y, x; \Theta) = e^{U_{:y}^\top g(x)/\tau} / \Gamma(\Theta)` and so a density on the data
(eq. 2 and 6),

.. math::

    p(x; \Theta) = \frac{e^{-E(x; \Theta)}}{\Gamma(\Theta)}, \qquad
    E(x; \Theta) = -\log \sum_{y=1}^{c} e^{U_{:y}^\top g(x) / \tau}.

GEDI's bound on the expected log-likelihood of the pairs (eq. 5) adds the generative term to the
two discriminative terms of Proposition 1:

.. math::

    \mathcal{L} = w_{GEN}\, \mathcal{L}_{GEN}(\Theta) + w_{INV}\, \mathcal{L}_{INV}(\Theta)
    + w_{PRIOR}\, \mathcal{L}_{PRIOR}(\Theta), \qquad
    \mathcal{L}_{GEN} = -\mathrm{CE}(p, p_\Theta) = \textstyle\sum_i -E(x_i) - n \log \Gamma(\Theta).

As a Pyro program: the model *observes* each :math:`x_i` under :class:`EnergyModel` (site ``x``),
then draws its label and the agreement and balance events of
:class:`~thermossl.models.cluster.ClusterSSL` (``auxiliary="self"``); each term sits under
:func:`pyro.poutine.scale` with its weight. A weight of zero removes the term's sites, which gives
the paper's ablations: JEM (:math:`\mathcal{L}_{GEN}` only), *no gen*, *no inv*, *no prior*.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions import TorchDistribution
from pyro.nn import pyro_method
from thermossl.inference.quadrature import QuadratureGrid
from thermossl.models.cluster import ClusterSSL
from torch import Tensor, nn
from torch.distributions import constraints

from thermossl._validation import check_finite

__all__ = ["GEDI", "EnergyModel", "GEDIWeights"]


class GEDIWeights(NamedTuple):
    r"""Weights :math:`(w_{GEN}, w_{INV}, w_{PRIOR}) \ge 0` of the three terms; zero removes one.

    The defaults are paper 001's synthetic-data settings (Table 7).
    """

    generative: float = 1.0
    invariance: float = 50.0
    prior: float = 10.0

    def checked(self) -> GEDIWeights:
        """These weights as floats, after checking each is >= 0 and one is positive.

        :raises ValueError: naming the first negative weight, or when all are zero.

        Example::

            >>> GEDIWeights(1, 0, 0).checked()
            GEDIWeights(generative=1.0, invariance=0.0, prior=0.0)
        """
        weights = GEDIWeights(*(float(w) for w in self))
        for name, value in weights._asdict().items():
            if not value >= 0:
                raise ValueError(f"the weight of the {name} term must be >= 0, got {value!r}")
        if not any(weights):
            raise ValueError("weights must be >= 0 with at least one positive, got all zero")
        return weights


class EnergyModel(TorchDistribution):
    r"""The density :math:`p(x; \Theta) \propto e^{-E(x; \Theta)}` of ``batch_size`` examples, with
    a Monte Carlo stand-in for its log-normalizer.

    .. math::

        \log \tilde p(x) = -E(x) - \widehat{\log\Gamma}, \qquad
        \widehat{\log\Gamma} = \tfrac1m \textstyle\sum_j -E(\tilde x_j),

    where :math:`\tilde x_{1:m}` are samples of :math:`p(x; \Theta)` given without gradient.
    Because :math:`\nabla_\Theta \log \Gamma = \mathbb{E}_{p_\Theta}[-\nabla_\Theta E(x)]`, the
    :math:`\Theta`-gradient of :math:`\log \tilde p` is an unbiased estimate of that of
    :math:`\log p(x; \Theta)` when the samples are exact (eq. 7). Its *value* is not the
    log-density: :math:`\log \Gamma(\Theta)` is unknown.

    :param callable energy: :math:`E`, mapping ``[n, *event_shape]`` to ``[n]``.
    :param samples: :math:`\tilde x`, ``[m, *event_shape]`` (detached here), or a
        :class:`~thermossl.inference.quadrature.QuadratureGrid` for low-dimensional data.
    :param int batch_size: the batch shape ``[batch_size]`` of the observed examples.

    Example: a quadratic energy with samples from its exact law :math:`N(0, I)`::

        >>> energy = lambda x: 0.5 * (x**2).sum(-1)
        >>> model = EnergyModel(energy, torch.zeros(3, 2), batch_size=1)
        >>> float(model.log_prob(torch.ones(1, 2)))  # -E(1, 1) - (-E(0, 0))
        -1.0
    """

    arg_constraints: dict = {}  # noqa: RUF012 (torch.distributions' convention)
    support = constraints.real_vector

    def __init__(
        self,
        energy: Callable[[Tensor], Tensor],
        samples: Tensor | QuadratureGrid,
        batch_size: int,
    ):
        self.energy = energy
        if isinstance(samples, QuadratureGrid):
            points = samples.points.detach()
            self.samples = samples._replace(points=points)
        else:
            points = self.samples = samples.detach()
        super().__init__(
            batch_shape=torch.Size([batch_size]),
            event_shape=points.shape[1:],
            validate_args=False,
        )

    def log_normalizer_estimate(self) -> Tensor:
        r""":math:`\widehat{\log\Gamma} = \tfrac1m \sum_j -E(\tilde x_j)`, differentiable in
        :math:`\Theta`; with a :class:`~thermossl.inference.quadrature.QuadratureGrid` in place of
        the samples, the quadrature :math:`\log \sum_j e^{-E(x_j)} + \log \Delta` instead (exact
        in value and gradient up to the grid's discretization)."""
        if isinstance(self.samples, QuadratureGrid):
            return self.samples.log_normalizer(self.energy)
        return -self.energy(self.samples).mean()

    def log_prob(self, value: Tensor) -> Tensor:
        return -self.energy(value) - self.log_normalizer_estimate()

    def sample(self, sample_shape=()):
        raise NotImplementedError(
            "EnergyModel has no direct sampler; draw from p(x) with "
            "thermossl.inference.langevin.PersistentLangevin"
        )

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        if batch_shape != self.batch_shape:
            raise ValueError(f"EnergyModel cannot expand to batch shape {tuple(batch_shape)}")
        return self


class GEDI(ClusterSSL):
    r"""GEDI's bound (eq. 5) as a Pyro program over pairs :math:`(x_i, x'_i)` and model samples.

    **Derived bound and the published losses** (``n`` pairs, logits
    :math:`\ell = U^\top g(x)/\tau`, samples :math:`\tilde x_{1:m}`):

    .. math::

        \mathcal{L} = -n \left( w_{GEN}\, \texttt{gedi\_generative}(E(x), E(\tilde x))
        + w_{INV}\, \texttt{gedi\_invariance}(\ell, \ell')
        + w_{PRIOR}\, \texttt{gedi\_prior}(\ell, p(y)) \right),

    the generative part exact in gradient and equal in value up to the unknown
    :math:`n \log\Gamma(\Theta)` (see :class:`EnergyModel`).

    :param torch.nn.Module network: :math:`g`, mapping a view to ``[n, feature_dim]``.
    :param int feature_dim: :math:`h`.
    :param int num_clusters: :math:`c`.
    :param float temperature: :math:`\tau > 0`.
    :param GEDIWeights weights: the three weights (Table 7's by default); zero removes a term.
    :param torch.Tensor prior: :math:`p(y)` (uniform when ``None``).

    Sample sites: ``x`` (observed, when :math:`w_{GEN} > 0`) and ``y``, ``agreement`` in plate
    ``pairs``; ``prior_label``, ``balance`` in plate ``prior_draws``.

    Example::

        >>> from thermossl.objectives.losses import gedi_generative, gedi_invariance, gedi_prior
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> program = GEDI(nn.Linear(2, 4), feature_dim=4, num_clusters=3, temperature=1.0)
        >>> x1 = torch.randn(10, 2)
        >>> x2 = x1 + 0.03 * torch.randn(10, 2)
        >>> samples = torch.randn(6, 2)
        >>> bound = program.bound(x1, x2, samples)
        >>> list(bound.terms)
        ['x', 'y', 'agreement', 'prior_label', 'balance']
        >>> l1, l2 = program.logits(x1), program.logits(x2)
        >>> published = (
        ...     1.0 * gedi_generative(program.energy(x1), program.energy(samples))
        ...     + 50.0 * gedi_invariance(l1, l2) + 10.0 * gedi_prior(l1)
        ... )
        >>> torch.allclose(bound.total, -10 * published)
        True
    """

    def __init__(
        self,
        network: nn.Module,
        feature_dim: int,
        num_clusters: int,
        temperature: float = 1.0,
        weights: GEDIWeights | None = None,
        prior: Tensor | None = None,
    ):
        weights = GEDIWeights(*(weights or GEDIWeights())).checked()
        super().__init__(
            network,
            feature_dim,
            num_clusters,
            temperature=temperature,
            auxiliary="self",
            prior=prior,
            prior_term=weights.prior > 0,
            symmetric=False,
        )
        self.weights = weights

    @contextmanager
    def reweighted(self, **weights: float) -> Iterator[GEDI]:
        r"""Within the block, the named weights are replaced (e.g. ``invariance=0, prior=0`` trains
        :math:`\mathcal{L}_{GEN}` alone); the configured weights are restored afterwards.

        Example::

            >>> program = GEDI(nn.Linear(2, 4), feature_dim=4, num_clusters=2)
            >>> with program.reweighted(invariance=0.0, prior=0.0):
            ...     program.weights
            GEDIWeights(generative=1.0, invariance=0.0, prior=0.0)
            >>> program.weights.invariance
            50.0
        """
        saved = self.weights
        self.weights = saved._replace(**weights).checked()
        try:
            yield self
        finally:
            self.weights = saved

    def energy(self, x: Tensor) -> Tensor:
        r""":math:`E(x; \Theta) = -\log \sum_y e^{U_{:y}^\top g(x)/\tau}`, ``[n]`` (eq. 6)."""
        return -torch.logsumexp(self.logits(x), dim=-1)

    def check_inputs(self, x1: Tensor, x2: Tensor, samples: Tensor | None = None) -> None:
        """Raise a ``ValueError`` unless the views match and, with the generative term, the samples
        are finite and shaped like the data."""
        super().check_inputs(x1, x2)
        if self.weights.generative > 0:
            self._check_samples(samples, x1)

    def _check_samples(self, samples: Tensor | QuadratureGrid | None, x1: Tensor) -> None:
        if samples is None:
            raise ValueError(
                "the generative term needs samples of p(x); pass samples=..., or set the "
                "generative weight to 0"
            )
        if isinstance(samples, QuadratureGrid):
            samples = samples.points
        if samples.dim() != x1.dim() or samples.shape[1:] != x1.shape[1:]:
            raise ValueError(
                f"samples must have shape [m, {', '.join(map(str, x1.shape[1:]))}], "
                f"got {tuple(samples.shape)}"
            )
        check_finite("samples", samples)

    @pyro_method
    def model(self, x1: Tensor, x2: Tensor, samples: Tensor | None = None) -> None:
        r"""Observe :math:`x_i \sim p(x; \Theta)`, then the labels, agreement and balance events."""
        self.check_inputs(x1, x2, samples)
        pairs = pyro.plate("pairs", x1.shape[0])
        if self.weights.generative > 0:
            with pairs, poutine.scale(scale=self.weights.generative):
                pyro.sample("x", EnergyModel(self.energy, samples, x1.shape[0]), obs=x1)
        if self.weights.invariance > 0:
            with poutine.scale(scale=self.weights.invariance):
                self._label_model(x1, x2, pairs)
        if self.weights.prior > 0:
            with poutine.scale(scale=self.weights.prior):
                self._prior_model(x1, x2)

    @pyro_method
    def guide(self, x1: Tensor, x2: Tensor, samples: Tensor | None = None) -> None:
        r"""The auxiliary :math:`q(y_i \mid x'_i) = p(y_i \mid x'_i; \Theta)` and the prior draws."""
        self.check_inputs(x1, x2, samples)
        if self.weights.invariance > 0:
            with poutine.scale(scale=self.weights.invariance):
                self._label_guide(x1, x2)
        if self.weights.prior > 0:
            with poutine.scale(scale=self.weights.prior):
                self._prior_guide(x1, x2)
