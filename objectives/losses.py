r"""Published SSL losses, written from their papers in the convention of a named implementation.

These are the closed forms the derived bounds are checked against (see each model's docstring for
the affine map). Every loss is **minimized** and **averages over the batch** as its reference
implementation does; the docstrings say which implementation fixes each convention.

References:

* Chen et al. 2020, *A simple framework for contrastive learning* (SimCLR); lightly's
  ``NTXentLoss``.
* van den Oord et al. 2018, *Representation learning with contrastive predictive coding*.
* Zbontar et al. 2021, *Barlow Twins*; facebookresearch/barlowtwins ``main.py``.
* Bardes et al. 2022, *VICReg*; facebookresearch/vicreg ``main_vicreg.py``.
* Ozsoy et al. 2022, *Self-supervised learning with an information maximization criterion*
  (CorInfoMax); serdarozsoy/corinfomax-ssl ``loss.py``.
* Caron et al. 2020, *Unsupervised learning of visual features by contrasting cluster
  assignments* (SwAV); facebookresearch/swav ``main_swav.py``.
* Grill et al. 2020, *Bootstrap your own latent* (BYOL); deepmind-research ``byol``
  ``regression_loss``.
* Caron et al. 2018, *Deep clustering for unsupervised learning of visual features*.
* Sansone & Manhaeve, *Unifying self-supervised clustering and energy-based models* (GEDI),
  Proposition 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from thermossl.objectives.similarity import pairwise_cosine
from torch import Tensor

from thermossl._validation import (
    check_finite,
    check_positive,
    check_positive_integer,
    check_probability_vector,
    check_tensor,
    check_views,
)

__all__ = [
    "barlow_twins",
    "byol",
    "corinfomax",
    "deepcluster",
    "gedi_generative",
    "gedi_invariance",
    "gedi_prior",
    "info_nce",
    "nt_xent",
    "swav",
    "swav_codes",
    "vicreg",
]


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    r"""SimCLR's normalized temperature-scaled cross-entropy over :math:`2n` anchors.

    With :math:`u = [z_1; z_2]` and :math:`s_{ab} = \cos(u_a, u_b) / \tau`,

    .. math::

        \ell = -\frac{1}{2n} \sum_{a=1}^{2n}
        \log \frac{e^{s_{a, p(a)}}}{\sum_{b \ne a} e^{s_{ab}}},

    :math:`p(a)` the other view of :math:`a`'s example. The self-similarity is excluded from the
    denominator; the value is the one lightly's ``NTXentLoss`` (and solo-learn) return.

    :param torch.Tensor z1: ``[n, d]`` embeddings of the first views.
    :param torch.Tensor z2: ``[n, d]`` embeddings of the second views.
    :param float temperature: :math:`\tau > 0` (lightly's default 0.5).
    :returns: scalar loss, mean over the :math:`2n` anchors.

    Example::

        >>> z = torch.eye(2)
        >>> round(float(nt_xent(z, z, temperature=1.0)), 4)  # log(1 + 2 e^{-1})
        0.5514
    """
    check_views("z1", z1, "z2", z2)
    check_positive("temperature", temperature)
    n = z1.shape[0]
    u = torch.cat([z1, z2])
    logits = pairwise_cosine(u, u) / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=u.device), -torch.inf)
    index = torch.arange(n, device=u.device)
    return F.cross_entropy(logits, torch.cat([index + n, index]))


def info_nce(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    r"""One-directional InfoNCE: anchors :math:`z_1`, candidates :math:`z_2`, cosine similarity.

    .. math::

        \ell = -\frac{1}{n} \sum_{i=1}^{n}
        \log \frac{e^{\cos(z_{1i}, z_{2i}) / \tau}}{\sum_{k=1}^{n} e^{\cos(z_{1i}, z_{2k}) / \tau}}

    .. warning:: This is the loss, not the mutual-information estimate: the MI bound of
        van den Oord et al. is :math:`\log n - \ell` (:func:`thermossl.objectives.mi.infonce`).

    :param torch.Tensor z1: ``[n, d]`` anchors.
    :param torch.Tensor z2: ``[n, d]`` candidates; ``z2[i]`` is the positive of ``z1[i]``.
    :param float temperature: :math:`\tau > 0`.
    :returns: scalar loss, mean over the :math:`n` anchors.

    Example::

        >>> z = torch.eye(2)
        >>> round(float(info_nce(z, z, temperature=1.0)), 4)  # log(1 + e^{-1})
        0.3133
    """
    check_views("z1", z1, "z2", z2)
    check_positive("temperature", temperature)
    logits = pairwise_cosine(z1, z2) / temperature
    return F.cross_entropy(logits, torch.arange(z1.shape[0], device=z1.device))


def barlow_twins(z1: Tensor, z2: Tensor, lambda_offdiag: float = 5e-3) -> Tensor:
    r"""Barlow Twins' redundancy reduction on the cross-correlation of the standardized views.

    Each view is standardized per dimension with its batch mean and **biased** standard deviation
    (BatchNorm without affine parameters, :math:`\epsilon = 10^{-5}` inside the square root), then

    .. math::

        C = \tfrac1n \hat z_1^\top \hat z_2, \qquad
        \ell = \sum_i (1 - C_{ii})^2 + \lambda \sum_{i \ne j} C_{ij}^2,

    as in the official code and lightly's ``BarlowTwinsLoss``.

    .. warning:: Older lightly releases standardized with the unbiased deviation and no
        :math:`\epsilon`, and solo-learn multiplies the loss by 0.025; the official code uses
        :math:`\lambda = 0.0051`.

    :param torch.Tensor z1: ``[n, d]`` embeddings of the first views.
    :param torch.Tensor z2: ``[n, d]`` embeddings of the second views.
    :param float lambda_offdiag: :math:`\lambda \ge 0`, the weight of the off-diagonal terms.
    :returns: scalar loss, a sum over the :math:`d^2` entries of :math:`C`.

    Example::

        >>> z = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
        >>> round(float(barlow_twins(z, z)), 6)  # C ≈ I: only the BatchNorm epsilon remains
        0.0
    """
    check_views("z1", z1, "z2", z2)
    if not lambda_offdiag >= 0:
        raise ValueError(f"lambda_offdiag must be >= 0, got {lambda_offdiag!r}")
    n = z1.shape[0]
    standardized1 = F.batch_norm(z1, None, None, training=True, eps=1e-5)
    standardized2 = F.batch_norm(z2, None, None, training=True, eps=1e-5)
    c = standardized1.T @ standardized2 / n
    on_diagonal = (1 - torch.diagonal(c)).pow(2).sum()
    return on_diagonal + lambda_offdiag * _off_diagonal_squares(c)


def byol(predictions: Tensor, targets: Tensor) -> Tensor:
    r"""BYOL's regression of the online prediction onto the (stop-gradient) target projection.

    .. math::

        \ell = \tfrac1n \sum_i \left\| \bar p_i - \bar z'_i \right\|^2
              = \tfrac1n \sum_i \left(2 - 2\, \bar p_i^\top \bar z'_i\right),
        \qquad \bar a = a / \|a\|,

    one direction of the symmetric loss (the official ``regression_loss``, averaged over the batch
    here; the paper sums the two directions). The targets are detached.

    :param torch.Tensor predictions: ``[n, d]`` online predictions :math:`q_\theta(z_\theta)`.
    :param torch.Tensor targets: ``[n, d]`` target projections :math:`z'_\xi`.
    :returns: scalar loss in :math:`[0, 4]`.

    Example::

        >>> byol(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 3.0], [2.0, 2.0]]))
        tensor(1.)
    """
    check_views("predictions", predictions, "targets", targets)
    cosine = F.cosine_similarity(predictions, targets.detach(), dim=-1)
    return (2 - 2 * cosine).mean()


def vicreg(
    z1: Tensor,
    z2: Tensor,
    sim_weight: float = 25.0,
    var_weight: float = 25.0,
    cov_weight: float = 1.0,
    eps: float = 1e-4,
) -> Tensor:
    r"""VICReg's variance–invariance–covariance loss, as in the paper's official code.

    .. math::

        \ell = \lambda \,\tfrac{1}{nd}\|z_1 - z_2\|_F^2
        + \mu \,\tfrac12 \sum_{v=1,2} \tfrac1d \sum_j \max(0, 1 - \sqrt{\mathrm{Var}(z_{v,:j}) + \epsilon})
        + \nu \sum_{v=1,2} \tfrac1d \sum_{i \ne j} \mathrm{Cov}(z_v)_{ij}^2,

    with the **unbiased** batch variance and covariance (divisor :math:`n - 1`).

    .. warning:: solo-learn does not halve the variance term; its value at equal weights differs.

    :param torch.Tensor z1: ``[n, d]`` embeddings of the first views.
    :param torch.Tensor z2: ``[n, d]`` embeddings of the second views.
    :param float sim_weight: :math:`\lambda`, weight of the invariance (mean squared error).
    :param float var_weight: :math:`\mu`, weight of the variance hinge (averaged over the views).
    :param float cov_weight: :math:`\nu`, weight of the covariance penalty (summed over the views).
    :param float eps: :math:`\epsilon` added to the variance inside the square root.
    :returns: scalar loss.

    Example::

        >>> z = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]) * 2.0
        >>> float(vicreg(z, z))  # identical views, variances above one, no covariance
        0.0
    """
    check_views("z1", z1, "z2", z2)
    check_positive("eps", eps)
    n, d = z1.shape
    invariance = F.mse_loss(z1, z2)
    centred = [z - z.mean(0) for z in (z1, z2)]
    variance = sum(F.relu(1 - torch.sqrt(z.var(0) + eps)).mean() for z in centred) / 2
    covariance = sum(_off_diagonal_squares(z.T @ z / (n - 1)) / d for z in centred)
    return sim_weight * invariance + var_weight * variance + cov_weight * covariance


def corinfomax(
    z1: Tensor,
    z2: Tensor,
    sim_weight: float = 500.0,
    cov_weight: float = 1.0,
    eps: float = 1e-6,
) -> Tensor:
    r"""CorInfoMax with the covariance estimates frozen to the current batch (no running average).

    With :math:`C_v = \tfrac1n (z_v - \bar z_v)^\top (z_v - \bar z_v)` the **biased** covariance of
    view :math:`v`,

    .. math::

        \ell = \alpha \,\tfrac{1}{nd}\|z_1 - z_2\|_F^2
        - \tfrac{w}{d}\left[\log\det(C_1 + \epsilon I) + \log\det(C_2 + \epsilon I)\right],

    the reference code's ``CovarianceLoss`` with forgetting factors ``la_R = la_mu = 0`` plus
    ``sim_loss_weight * F.mse_loss(z1, z2)``.

    .. warning:: The reference code keeps exponential moving averages of the mean and the
        covariance across batches; this function uses only the batch. Its runs L2-normalize the
        embeddings before the loss and compute in float64; do both yourself if you want them.

    :param torch.Tensor z1: ``[n, d]`` embeddings of the first views.
    :param torch.Tensor z2: ``[n, d]`` embeddings of the second views.
    :param float sim_weight: :math:`\alpha`, the invariance weight (reference default 500).
    :param float cov_weight: :math:`w`, the covariance weight (reference default 1).
    :param float eps: :math:`\epsilon > 0` added to each covariance (reference default 1e-6).
    :returns: scalar loss.

    Example::

        >>> z = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype=torch.float64)
        >>> round(float(corinfomax(z, z, eps=1e-12)), 6)  # C = I/2 per view: -(1/2)(2 log 1/2) * 2
        1.386294
    """
    check_views("z1", z1, "z2", z2)
    check_positive("eps", eps)
    n, d = z1.shape
    ridge = eps * torch.eye(d, dtype=z1.dtype, device=z1.device)
    log_determinants = 0.0
    for z in (z1, z2):
        centred = z - z.mean(0)
        log_determinants = log_determinants + torch.logdet(centred.T @ centred / n + ridge)
    return sim_weight * F.mse_loss(z1, z2) - cov_weight * log_determinants / d


def swav(
    scores1: Tensor,
    scores2: Tensor,
    temperature: float = 0.1,
    epsilon: float = 0.05,
    sinkhorn_iterations: int = 3,
) -> Tensor:
    r"""SwAV's swapped prediction with Sinkhorn-Knopp codes from stop-gradient scores.

    For prototype scores :math:`s_v \in \mathbb{R}^{n \times c}` of view :math:`v` (cosine scores in
    SwAV), codes :math:`q_v = \mathrm{Sinkhorn}(\operatorname{sg}(s_v) / \epsilon)` with rows summing
    to one, and predictions :math:`p_v = \mathrm{softmax}(s_v / \tau)`,

    .. math::

        \ell = \tfrac12\left[\mathrm{CE}(q_2, p_1) + \mathrm{CE}(q_1, p_2)\right], \qquad
        \mathrm{CE}(q, p) = -\tfrac1n \sum_i \sum_k q_{ik} \log p_{ik}.

    The codes follow SwAV's ``distributed_sinkhorn`` line by line: :math:`Q = \exp(s/\epsilon)^\top`
    normalized to total one, then ``sinkhorn_iterations`` sweeps of prototype rows to
    :math:`1/c` and sample columns to :math:`1/n`, then scaled by :math:`n` (a global shift of
    :math:`s` before the exponential avoids overflow and cancels in the first normalization).

    :param torch.Tensor scores1: ``[n, c]`` prototype scores of the first views.
    :param torch.Tensor scores2: ``[n, c]`` prototype scores of the second views.
    :param float temperature: :math:`\tau > 0` of the predictions (SwAV: 0.1).
    :param float epsilon: :math:`\epsilon > 0` of the codes (SwAV: 0.05).
    :param int sinkhorn_iterations: sweeps (SwAV: 3).
    :returns: scalar loss, mean over the batch and the two directions.

    Example::

        >>> s = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
        >>> round(float(swav(s, s, temperature=1.0)), 4)  # one-hot codes: -log sigmoid(2)
        0.1269
    """
    check_views("scores1", scores1, "scores2", scores2)
    check_positive("temperature", temperature)
    check_positive("epsilon", epsilon)
    check_positive_integer("sinkhorn_iterations", sinkhorn_iterations)
    codes1 = swav_codes(scores1, epsilon, sinkhorn_iterations)
    codes2 = swav_codes(scores2, epsilon, sinkhorn_iterations)
    log_p1 = F.log_softmax(scores1 / temperature, dim=-1)
    log_p2 = F.log_softmax(scores2 / temperature, dim=-1)
    return -((codes2 * log_p1).sum(-1).mean() + (codes1 * log_p2).sum(-1).mean()) / 2


@torch.no_grad()
def swav_codes(scores: Tensor, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    r"""SwAV's codes: Sinkhorn-Knopp on :math:`\exp(s / \epsilon)` in the exponential domain.

    Line by line SwAV's ``distributed_sinkhorn`` on one device: :math:`Q = \exp(s/\epsilon)^\top`
    (``[c, n]``) divided by its total, then ``iterations`` times rows (prototypes) to :math:`1/c`
    and columns (samples) to :math:`1/n`, then multiplied by :math:`n`. The scores are shifted by
    their maximum first, which cancels in the first normalization.

    :param torch.Tensor scores: ``[n, c]`` prototype scores (no gradient flows through the codes).
    :raises ValueError: when a sample's scores lie so far below the maximum that its codes
        underflow (the exponential domain's limit; cosine scores never reach it).
    :param float epsilon: :math:`\epsilon > 0`.
    :param int iterations: Sinkhorn sweeps.
    :returns: ``[n, c]`` codes, each row a distribution over the prototypes.

    Example::

        >>> codes = swav_codes(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        >>> codes.sum(-1)
        tensor([1., 1.])
    """
    check_tensor("scores", scores, min_dim=2)
    check_finite("scores", scores)
    check_positive("epsilon", epsilon)
    check_positive_integer("iterations", iterations)
    n, c = scores.shape
    shifted = scores.detach() - scores.detach().max()
    q = torch.exp(shifted / epsilon).T  # [c, n]
    q = q / q.sum()
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True) / c
        q = q / q.sum(dim=0, keepdim=True) / n
    if not bool(torch.isfinite(q).all()):
        raise ValueError(
            "scores spread too widely for SwAV's exponential-domain codes (exp(s / epsilon) "
            "underflows for some sample); use cosine scores, a larger epsilon, or the log-domain "
            "thermossl.inference.sinkhorn_knopp"
        )
    return (q * n).T


def deepcluster(scores1: Tensor, scores2: Tensor, temperature: float = 0.1) -> Tensor:
    r"""Swapped prediction of hard (nearest-prototype) pseudo-labels, DeepCluster's degenerate ensemble.

    .. math::

        \ell = \tfrac12\left[\mathrm{CE}(\hat y_2, p_1) + \mathrm{CE}(\hat y_1, p_2)\right], \qquad
        \hat y_v = \arg\max_k \operatorname{sg}(s_v)_{:, k}, \quad p_v = \mathrm{softmax}(s_v / \tau).

    .. warning:: DeepCluster assigns pseudo-labels by k-means on the features of the whole data
        set and predicts them from the same view; this is the two-view, per-batch reading with the
        current prototypes (the :math:`\beta \to \infty` limit of the Sinkhorn codes without their
        marginal constraints), which is what :class:`~thermossl.models.ClusterSSL` with
        ``auxiliary="hard"`` derives.

    :param torch.Tensor scores1: ``[n, c]`` prototype scores of the first views.
    :param torch.Tensor scores2: ``[n, c]`` prototype scores of the second views.
    :param float temperature: :math:`\tau > 0`.
    :returns: scalar loss, mean over the batch and the two directions.

    Example::

        >>> s = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
        >>> round(float(deepcluster(s, s, temperature=1.0)), 4)  # log(1 + e^{-2})
        0.1269
    """
    check_views("scores1", scores1, "scores2", scores2)
    check_positive("temperature", temperature)
    labels1, labels2 = scores1.detach().argmax(-1), scores2.detach().argmax(-1)
    return (
        F.cross_entropy(scores1 / temperature, labels2)
        + F.cross_entropy(scores2 / temperature, labels1)
    ) / 2


def gedi_generative(energy_data: Tensor, energy_samples: Tensor) -> Tensor:
    r"""The contrastive-divergence loss whose gradient is GEDI's and JEM's :math:`-\mathcal{L}_{GEN}`
    gradient (paper 001, eq. 7), per example.

    .. math::

        \ell = \tfrac1n \sum_i E(x_i) - \tfrac1m \sum_j E(\tilde x_j), \qquad
        \tilde x_j \sim p(x; \Theta) \propto e^{-E(x; \Theta)},

    :math:`E(x) = -\log \sum_y e^{U_{:y}^\top g(x) / \tau}` (eq. 6). Its gradient is an unbiased
    estimate of :math:`-\tfrac1n \nabla_\Theta \mathcal{L}_{GEN}` when the samples are exact and
    carry no gradient; its *value* is not :math:`-\mathcal{L}_{GEN}/n`, which involves the
    unknown :math:`\log \Gamma(\Theta)`.

    .. warning:: Pass the samples' energies computed from detached samples; the samples' own
        dependence on :math:`\Theta` (through the sampler) is not part of eq. 7.

    :param torch.Tensor energy_data: ``[n]`` energies of the data.
    :param torch.Tensor energy_samples: ``[m]`` energies of samples of the model.
    :returns: scalar loss.

    Example::

        >>> float(gedi_generative(torch.tensor([1.0, 3.0]), torch.tensor([5.0])))
        -3.0
    """
    check_tensor("energy_data", energy_data, min_dim=1)
    check_tensor("energy_samples", energy_samples, min_dim=1)
    return energy_data.mean() - energy_samples.mean()


def gedi_invariance(logits1: Tensor, logits2: Tensor) -> Tensor:
    r"""GEDI's invariance term :math:`\mathcal{L}_{INV}` (Proposition 1), per pair.

    .. math::

        \mathcal{L}_{INV} = \tfrac1n \sum_i \mathrm{CE}\big(p(\cdot \mid x'_i), p(\cdot \mid x_i)\big)
        = -\tfrac1n \sum_i \sum_y \mathrm{softmax}(\ell'_i)_y \log \mathrm{softmax}(\ell_i)_y,

    with no stop-gradient on either view. Its minimum 0 is reached by confident predictions that
    agree across views (paper 001, Figure 4).

    .. warning:: The paper sums over the :math:`n` pairs; this is the batch mean, as in the
        author's ``gedi_nogen`` code (CPLearn repository), which also takes ``logits2`` as the target.

    :param torch.Tensor logits1: ``[n, c]`` logits :math:`U^\top g(x)/\tau` of the first views.
    :param torch.Tensor logits2: ``[n, c]`` logits of the second (augmented) views.
    :returns: scalar loss.

    Example::

        >>> l = torch.tensor([[20.0, 0.0], [0.0, 20.0]])
        >>> float(gedi_invariance(l, l)) < 1e-7  # confident and consistent
        True
    """
    check_views("logits1", logits1, "logits2", logits2)
    return -(F.softmax(logits2, dim=-1) * F.log_softmax(logits1, dim=-1)).sum(-1).mean()


def gedi_prior(logits: Tensor, prior: Tensor | None = None) -> Tensor:
    r"""GEDI's prior term :math:`\mathcal{L}_{PRIOR}` (Proposition 1): cross-entropy of the prior
    to the batch marginal of the cluster predictions.

    .. math::

        \mathcal{L}_{PRIOR} = \mathrm{CE}(p(y), \bar q) = -\sum_y p(y) \log \bar q(y), \qquad
        \bar q(y) = \tfrac1n \sum_j \mathrm{softmax}(\ell_j)_y.

    Its minimum :math:`H(p(y))` (:math:`\log c` for the uniform prior) is reached by balanced
    clusters (paper 001, Figure 4).

    .. warning:: The paper's :math:`\mathcal{L}_{PRIOR}` sums :math:`n` identical terms; this is
        one of them. The author's ``gedi_nogen`` code sums :math:`-\log \bar q(y)` over clusters,
        :math:`c` times this value for the uniform prior.

    :param torch.Tensor logits: ``[n, c]`` logits.
    :param torch.Tensor prior: ``[c]`` probability vector :math:`p(y)` (uniform when ``None``).
    :returns: scalar loss.

    Example::

        >>> l = torch.tensor([[20.0, 0.0], [0.0, 20.0]])
        >>> round(float(gedi_prior(l)), 4)  # balanced: log 2
        0.6931
    """
    check_tensor("logits", logits, min_dim=2)
    check_finite("logits", logits)
    c = logits.shape[-1]
    if prior is None:
        prior = torch.full((c,), 1.0 / c, dtype=logits.dtype, device=logits.device)
    check_probability_vector("prior", prior, size=c)
    log_marginal = torch.logsumexp(F.log_softmax(logits, dim=-1), dim=0) - math.log(logits.shape[0])
    return -(prior.to(logits.dtype) * log_marginal).sum()


def _off_diagonal_squares(matrix: Tensor) -> Tensor:
    r""":math:`\sum_{i \ne j} M_{ij}^2`."""
    return matrix.pow(2).sum() - torch.diagonal(matrix).pow(2).sum()
