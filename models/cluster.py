r"""Cluster-based SSL with a latent cluster label (Sansone & Manhaeve, Definitions 5–7).

Each pair :math:`(x_i, x'_i)` carries a latent cluster :math:`y_i \in \{1..c\}` predicted from
:math:`x_i` by prototypes :math:`U \in \mathbb{R}^{h \times c}`,

.. math::

    p(y_i \mid x_i; \Theta) = \mathrm{softmax}(U^\top g(x_i) / \tau),

and an auxiliary posterior :math:`q(y_i \mid x'_i)` read from the other view. Three choices:

``"sinkhorn"`` (SwAV; Lemma 3, Appendix D)
    :math:`q` = Sinkhorn-Knopp codes of the stop-gradient scores :math:`U^\top g(x')`. The derived
    term of each label site is the ELBO
    :math:`\mathbb{E}_q[\log p(y_i \mid x_i)] + H_q(y_i \mid x'_i)`.
``"hard"`` (DeepCluster-style)
    :math:`q` = a point mass at the nearest prototype of the stop-gradient scores (the
    :math:`\beta \to \infty`, degenerate ensemble); the entropy term vanishes.
``"self"`` (GEDI; Definition 7, Proposition 1, Appendix J)
    :math:`q(y_i \mid x'_i) = p(y_i \mid x'_i; \Theta)`, no stop-gradient. Proposition 1 bounds
    :math:`\log \sum_y p(y \mid x_i) = 0` from below by :math:`\log \sum_y p(y \mid x_i)\, p(y \mid x'_i)`
    (eq. 25), the log-probability that the augmented view *agrees* with the label, and then by
    Jensen with weights :math:`q`. As a program: the model draws :math:`y_i \sim p(y \mid x_i)` and
    observes the agreement event with likelihood :math:`p(y_i \mid x'_i) \le 1` (site
    ``agreement``); the guide draws :math:`y_i \sim p(y \mid x'_i)`. The two terms sum to
    :math:`-\mathrm{CE}(p(\cdot \mid x'_i), p(\cdot \mid x_i))`, i.e. :math:`-\mathcal{L}_{INV}`.

The **prior term** of Proposition 1 (eq. 24–27) arises the same way: a label :math:`u_i` drawn
from the prior :math:`p(y)` (site ``prior_label``, whose guide is the prior itself) is accepted by
the batch marginal :math:`\bar q(u) = \tfrac1n \sum_j p(y_j = u \mid x_j)` with likelihood
:math:`\bar q(u_i) \le 1` (site ``balance``), giving :math:`-\mathrm{CE}(p(y), \bar q)` per draw,
i.e. :math:`-\mathcal{L}_{PRIOR}`. Each added event has probability at most one, so every program
here lower-bounds the log-likelihood of the pairs up to :math:`-H_p(x_{1:n})` and a constant.
"""

from __future__ import annotations

import math
from typing import Literal

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
import torch.nn.functional as F
from pyro.nn import pyro_method
from pyro.ops.indexing import Vindex
from thermossl.inference.gibbs_ensembles import generalized_gibbs_ensemble
from thermossl.inference.sinkhorn import sinkhorn_knopp
from thermossl.models.two_view import TwoViewProgram
from thermossl.objectives.sharing import shared
from torch import Tensor, nn

from thermossl._validation import check_positive, check_positive_integer, check_probability_vector

__all__ = ["ClusterSSL"]

Auxiliary = Literal["self", "sinkhorn", "hard"]


class ClusterSSL(TwoViewProgram):
    r"""A latent cluster label per pair, with a pluggable auxiliary posterior.

    **Derived bounds and the published losses** (``n`` pairs, scores :math:`s = U^\top g(x)`):

    * ``auxiliary="sinkhorn"``, ``symmetric=True``: label sites ``y`` (predicted from :math:`x`,
      codes from :math:`x'`) and ``y_prime`` (the swap), each weighted one half, so

      .. math:: \mathcal{L} = -n \cdot \texttt{swav}(s, s', \tau, \epsilon)
                + \tfrac12 \textstyle\sum_i \left(H(q'_i) + H(q_i)\right),

      the constant being the entropy of the stop-gradient codes (Lemma 3's :math:`H_q`).
    * ``auxiliary="hard"``, ``symmetric=True``:
      :math:`\mathcal{L} = -n \cdot \texttt{deepcluster}(s, s', \tau)`.
    * ``auxiliary="self"``, ``symmetric=False``, with the prior term:

      .. math:: \mathcal{L} = -n \cdot \left(\texttt{gedi\_invariance}(s/\tau, s'/\tau)
                + \texttt{gedi\_prior}(s/\tau, p(y))\right).

    With ``symmetric=True`` the program holds both directions, each weighted one half, so the
    bound is the average of two bounds on the same likelihood.

    :param torch.nn.Module network: :math:`g`, mapping a view to ``[n, feature_dim]``.
    :param int feature_dim: :math:`h`, the size of :math:`g`'s output.
    :param int num_clusters: :math:`c`.
    :param float temperature: :math:`\tau > 0` of the predictive softmax.
    :param str auxiliary: ``"self"``, ``"sinkhorn"`` or ``"hard"``.
    :param torch.Tensor prior: :math:`p(y)`, a probability vector of length ``num_clusters``
        (uniform when ``None``). With ``"sinkhorn"`` it is also the label marginal of the codes:
        the GGE heats to :math:`\sum_i q_{ij} = p(y = j)` instead of :math:`1/c` (paper 000, §V).
    :param bool prior_term: include :math:`\mathcal{L}_{PRIOR}`; by default only for ``"self"``.
    :param bool symmetric: include the swapped direction; by default for ``"sinkhorn"`` and
        ``"hard"`` (SwAV's swapped prediction) and not for ``"self"`` (Proposition 1 as stated).
    :param bool normalize: cosine scores, with :math:`g(x)` and the prototypes L2-normalized, as
        SwAV does.
    :param float sinkhorn_epsilon: SwAV's :math:`\epsilon`: codes are Sinkhorn-Knopp on
        :math:`s / \epsilon`.
    :param int sinkhorn_iterations: SwAV's fixed number of sweeps (3); ``None`` iterates to
        convergence (SeLa's self-labelling, Asano et al. 2020).

    :attr:`code_constraints` (empty by default) holds user-declared
    :class:`~thermossl.inference.LinearConstraint` s on the codes of a batch of ``[n, c]``
    (paper 000, §V: for instance labelled samples pinned to their class with a confidence); with
    them the codes are the converged generalized Gibbs ensemble
    (:func:`~thermossl.inference.generalized_gibbs_ensemble`) instead of SwAV's fixed sweeps.

    Sample sites: ``y`` (and ``y_prime``) in plate ``pairs``; with ``"self"`` also ``agreement``
    (and ``agreement_prime``); with the prior term ``prior_label`` and ``balance`` (and their
    ``_prime`` versions) in plate ``prior_draws``.

    Example: GEDI's two discriminative terms as a derived bound::

        >>> from thermossl.objectives.losses import gedi_invariance, gedi_prior
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> program = ClusterSSL(nn.Linear(2, 4), feature_dim=4, num_clusters=3)
        >>> x1 = torch.randn(10, 2)
        >>> x2 = x1 + 0.03 * torch.randn(10, 2)
        >>> bound = program.bound(x1, x2)
        >>> list(bound.terms)
        ['y', 'agreement', 'prior_label', 'balance']
        >>> logits1, logits2 = program.logits(x1), program.logits(x2)
        >>> published = gedi_invariance(logits1, logits2) + gedi_prior(logits1)
        >>> torch.allclose(bound.total, -10 * published)
        True
    """

    def __init__(
        self,
        network: nn.Module,
        feature_dim: int,
        num_clusters: int,
        temperature: float = 0.1,
        auxiliary: Auxiliary = "self",
        prior: Tensor | None = None,
        prior_term: bool | None = None,
        symmetric: bool | None = None,
        normalize: bool = False,
        sinkhorn_epsilon: float = 0.05,
        sinkhorn_iterations: int | None = 3,
    ):
        super().__init__()
        check_positive_integer("feature_dim", feature_dim)
        check_positive("temperature", temperature)
        check_positive("sinkhorn_epsilon", sinkhorn_epsilon)
        if sinkhorn_iterations is not None:
            check_positive_integer("sinkhorn_iterations", sinkhorn_iterations)
        if not isinstance(num_clusters, int) or num_clusters < 2:
            raise ValueError(f"num_clusters must be an integer >= 2, got {num_clusters!r}")
        if auxiliary not in ("self", "sinkhorn", "hard"):
            raise ValueError(f"auxiliary must be 'self', 'sinkhorn' or 'hard', got {auxiliary!r}")
        if prior is None:
            prior = torch.full((num_clusters,), 1.0 / num_clusters, dtype=torch.float64)
        check_probability_vector("prior", prior, size=num_clusters)
        self.network = network
        self.prototypes = nn.Linear(feature_dim, num_clusters, bias=False)  # weight = U^T
        self.register_buffer("prior", prior.detach().clone())
        self._uniform_prior = bool(torch.all(prior == 1.0 / num_clusters))
        self.temperature = float(temperature)
        self.auxiliary = auxiliary
        self.prior_term = (auxiliary == "self") if prior_term is None else bool(prior_term)
        self.symmetric = (auxiliary != "self") if symmetric is None else bool(symmetric)
        self.normalize = bool(normalize)
        self.sinkhorn_epsilon = float(sinkhorn_epsilon)
        self.sinkhorn_iterations = sinkhorn_iterations
        self.code_constraints: tuple = ()

    # Scores and distributions -------------------------------------------------------------------

    def scores(self, x: Tensor) -> Tensor:
        r"""Prototype scores :math:`s = U^\top g(x)`, ``[n, c]`` (cosine when ``normalize``)."""

        def compute() -> Tensor:
            features = self.network(x)
            if not self.normalize:
                return self.prototypes(features)
            prototypes = F.normalize(self.prototypes.weight, dim=-1)
            return F.normalize(features, dim=-1) @ prototypes.T

        return shared((id(self), "scores", id(x)), compute)

    def logits(self, x: Tensor) -> Tensor:
        r"""Logits :math:`s / \tau` of :math:`p(y \mid x; \Theta)`, ``[n, c]``."""
        return self.scores(x) / self.temperature

    def auxiliary_distribution(self, x_prime: Tensor) -> dist.Distribution:
        r""":math:`q(y_i \mid x'_i)` for every pair, batch shape ``[n]``.

        A categorical for ``"self"`` and ``"sinkhorn"``; for ``"hard"`` a point mass
        (:class:`~pyro.distributions.Delta`) at the nearest prototype, whose term
        :math:`-\mathrm{KL}(\delta_{\hat y} \| p) = \log p(\hat y \mid x)` is exact without
        enumerating the labels.
        """
        if self.auxiliary == "self":
            return dist.Categorical(logits=self.logits(x_prime))
        scores = self.scores(x_prime).detach()
        if self.auxiliary == "sinkhorn" and self.code_constraints:
            marginal = self.code_marginal()
            plan = generalized_gibbs_ensemble(
                -scores,
                beta=1.0 / self.sinkhorn_epsilon,
                constraints=self.code_constraints,
                col_marginal="uniform" if marginal is None else marginal.to(scores.dtype),
            ).plan
            return dist.Categorical(probs=plan * scores.shape[0])
        if self.auxiliary == "sinkhorn":
            plan = sinkhorn_knopp(
                -scores,
                beta=1.0 / self.sinkhorn_epsilon,
                col_marginal=self.code_marginal(),
                iterations=self.sinkhorn_iterations,
            )
            return dist.Categorical(probs=plan * scores.shape[0])
        return dist.Delta(scores.argmax(-1))

    def code_marginal(self) -> Tensor | None:
        """The label marginal of the Sinkhorn codes: the prior, or ``None`` when it is uniform
        (decided at construction, so that a recorded program holds no data-dependent branch)."""
        return None if self._uniform_prior else self.prior

    def _views(self, x1: Tensor, x2: Tensor) -> list[tuple[str, Tensor, Tensor]]:
        """(site suffix, predicting view, auxiliary view) for each direction."""
        directions = [("", x1, x2)]
        if self.symmetric:
            directions.append(("_prime", x2, x1))
        return directions

    def _direction_weight(self) -> float:
        return 0.5 if self.symmetric else 1.0

    # The program --------------------------------------------------------------------------------

    @pyro_method
    def model(self, x1: Tensor, x2: Tensor) -> None:
        r"""Labels :math:`y_i \sim p(y \mid x_i)`, the agreement events (``"self"``) and the prior term."""
        self.check_inputs(x1, x2)
        with poutine.scale(scale=self._direction_weight()):
            self._label_model(x1, x2, pyro.plate("pairs", x1.shape[0]))
            if self.prior_term:
                self._prior_model(x1, x2)

    @pyro_method
    def guide(self, x1: Tensor, x2: Tensor) -> None:
        r"""Auxiliary posteriors :math:`q(y_i \mid x'_i)`; the prior draws follow the prior."""
        self.check_inputs(x1, x2)
        with poutine.scale(scale=self._direction_weight()):
            self._label_guide(x1, x2)
            if self.prior_term:
                self._prior_guide(x1, x2)

    # Pieces of the program, composed by subclasses ----------------------------------------------

    def _label_model(self, x1: Tensor, x2: Tensor, pairs: pyro.plate) -> None:
        """Sites ``y`` (and ``agreement`` for ``"self"``) of each direction, in plate ``pairs``."""
        with pairs:
            for suffix, x, x_prime in self._views(x1, x2):
                y = pyro.sample("y" + suffix, dist.Categorical(logits=self.logits(x)))
                if self.auxiliary == "self":
                    log_agreement = F.log_softmax(self.logits(x_prime), dim=-1)
                    index = torch.arange(x.shape[0], device=x.device)
                    pyro.factor("agreement" + suffix, Vindex(log_agreement)[index, y])

    def _label_guide(self, x1: Tensor, x2: Tensor) -> None:
        with pyro.plate("pairs", x1.shape[0]):
            for suffix, _, x_prime in self._views(x1, x2):
                pyro.sample("y" + suffix, self.auxiliary_distribution(x_prime))

    def _prior_model(self, x1: Tensor, x2: Tensor) -> None:
        """Sites ``prior_label`` and ``balance`` of each direction, in plate ``prior_draws``."""
        with pyro.plate("prior_draws", x1.shape[0]):
            for suffix, x, _ in self._views(x1, x2):
                log_probs = F.log_softmax(self.logits(x), dim=-1)
                # log q̄(u) = log (1/n) Σ_j p(y_j = u | x_j)
                log_marginal = torch.logsumexp(log_probs, dim=0) - math.log(x.shape[0])
                label = pyro.sample("prior_label" + suffix, self._prior_distribution(x))
                pyro.factor("balance" + suffix, log_marginal[label])

    def _prior_guide(self, x1: Tensor, x2: Tensor) -> None:
        with pyro.plate("prior_draws", x1.shape[0]):
            for suffix, x, _ in self._views(x1, x2):
                pyro.sample("prior_label" + suffix, self._prior_distribution(x))

    def _prior_distribution(self, x: Tensor) -> dist.Categorical:
        return dist.Categorical(probs=self.prior.to(dtype=x.dtype, device=x.device))
