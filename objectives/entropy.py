r"""Sample estimators of differential entropy, the uniformity term of latent distribution matching.

Latent distribution matching (LDM; Mikulasch & Zenke, *Understanding self-supervised learning via
latent distribution matching*, eq. 21 and Appendix A.5) maximizes

.. math::

    \mathbb{E}_{q}[\log p_{\text{model}}(z)] + H(z),

the negative KL divergence between the latent distribution :math:`q` that the encoder induces and
a latent model, up to a constant. The entropy :math:`H(z) = -\mathbb{E}_q[\log q(z)]` has to be
estimated from a batch :math:`z_1, \dots, z_N \sim q`, and the choice of estimator recovers
different self-supervised families:

* :func:`kde_entropy`: kernel density resubstitution (A.5.1, eq. 32); with a von Mises–Fisher
  kernel on the sphere it is SimCLR's negative (contrastive) term (A.6.1, eq. 46–47);
* :func:`knn_entropy`: Kozachenko–Leonenko :math:`k`-nearest-neighbour estimator (A.5.2, eq. 33);
* :func:`logdet_entropy`: Gaussian plug-in :math:`\tfrac12 \log\det\hat\Sigma` (A.5.3, eq. 34),
  related to VICReg's variance–covariance terms (A.6.1, eq. 41–43);
* :func:`plugin_conditional_entropy`: the cross-entropy of a frozen predictor, an upper-bound
  estimate of a conditional entropy (A.5.4, eq. 35); with the model's own predictor it turns the
  LDM goal into the detached-target loss of BYOL/SimSiam and predictive models (A.6.2, eq. 54–55).

Every estimator takes ``z`` of shape ``[..., N, d]`` (leading dimensions are a batch of independent
sample sets), returns the estimate of :math:`H(z)` in nats for one draw of :math:`z` (an average
over the :math:`N` samples, not a sum) with shape ``[...]``, and is differentiable in ``z`` on any
device and dtype.

:func:`gaussian_entropy`, :func:`uniform_box_entropy` and :func:`uniform_sphere_entropy` are the
closed forms the estimators are tested against, and :func:`logdet_entropy_bias` is the exact
finite-sample bias of :func:`logdet_entropy` for Gaussian data.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
from scipy import special
from torch import Tensor
from torch.distributions import Distribution

from thermossl._validation import (
    check_finite,
    check_positive,
    check_positive_integer,
    check_tensor,
)
from thermossl.distributions import log_sphere_area, log_von_mises_fisher_normalizer

__all__ = [
    "gaussian_entropy",
    "kde_entropy",
    "knn_entropy",
    "logdet_entropy",
    "logdet_entropy_bias",
    "plugin_conditional_entropy",
    "uniform_box_entropy",
    "uniform_sphere_entropy",
]

_KERNELS = ("gaussian", "von_mises_fisher")


# -- estimators ----------------------------------------------------------------------------------


def knn_entropy(
    z: Tensor, k: int = 3, constants: bool = True, clip_quantile: float | None = None
) -> Tensor:
    r"""Kozachenko–Leonenko :math:`k`-nearest-neighbour estimate of :math:`H(z)` in nats.

    .. math::

        \hat H = \psi(N) - \psi(k) + \log V_d + \frac{d}{N} \sum_{i=1}^N \log r_i,
        \qquad V_d = \frac{\pi^{d/2}}{\Gamma(d/2 + 1)},

    with :math:`r_i` the Euclidean distance from :math:`z_i` to its :math:`k`-th nearest neighbour
    among the other :math:`N - 1` samples and :math:`V_d` the volume of the unit ball
    (Kozachenko & Leonenko 1987; Kraskov et al. 2004, eq. 20; Mikulasch & Zenke, A.5.2, eq. 33).
    The estimate is asymptotically unbiased for densities regular enough; at finite :math:`N` it is
    biased upwards near the boundary of a bounded support and increasingly biased as :math:`d`
    grows (see ``benchmarks/entropy_estimators.py``).

    Only the last term depends on :math:`z`, so ``constants=False`` returns
    :math:`\frac{d}{N}\sum_i \log r_i` alone: the same gradient, as used for training.

    The neighbours are selected without gradient (the choice is piecewise constant in :math:`z`);
    :math:`r_i` is then recomputed from the selected pair, so the gradient is that of
    :math:`\log\lVert z_i - z_{j(i)}\rVert`. A duplicated point (:math:`r_i = 0`) would give
    :math:`\log 0`: :math:`r_i` is computed as :math:`\sqrt{\lVert z_i - z_{j(i)}\rVert^2 +
    \epsilon}` with :math:`\epsilon = \sqrt{\text{tiny}}` of the dtype (:math:`1.1 \cdot
    10^{-19}` in float32, :math:`1.5 \cdot 10^{-154}` in float64), so the value stays finite
    (very negative) and the gradient at exact duplicates is zero. Cost: :math:`O(N^2 d)` time and
    :math:`O(N^2)` memory per sample set.

    :param torch.Tensor z: ``[..., N, d]`` samples (at least 2-D; leading dimensions are a batch of
        independent sample sets).
    :param int k: the neighbour order, :math:`1 \le k < N` (the reference runs use 3).
    :param bool constants: add :math:`\psi(N) - \psi(k) + \log V_d` (default) to return the
        entropy estimate; ``False`` returns only the :math:`z`-dependent term.
    :param float clip_quantile: if given, a level :math:`q \in (0, 1]`: every :math:`r_i` above
        the (detached, linearly interpolated) :math:`q`-quantile of :math:`r_1, \dots, r_N` is
        replaced by that quantile, so those samples carry no gradient. The reference runs use
        ``0.9`` ("discarded the upper 10 % of kNN distances", Appendix B). This lowers the estimate:
        it is then a biased (downward) estimate of :math:`H`, meant for training only.
    :returns: ``[...]`` the estimate (an average over the :math:`N` samples, not a sum).
    :raises ValueError: if ``z`` is not ``[..., N, d]`` with finite entries, ``k`` is not an
        integer in :math:`[1, N)`, or ``clip_quantile`` is outside :math:`(0, 1]`.

    Example: three points on a line with :math:`k = 1` have :math:`r = (1, 1, 2)`, so
    :math:`\hat H = \psi(3) - \psi(1) + \log 2 + \tfrac13 \log 2 = 1.5 + \tfrac43 \log 2`::

        >>> z = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)
        >>> knn_entropy(z, k=1)
        tensor(2.4242, dtype=torch.float64)
        >>> knn_entropy(z, k=1, constants=False)  # (1/3) log 2
        tensor(0.2310, dtype=torch.float64)
    """
    check_tensor("z", z, min_dim=2)
    check_positive_integer("k", k)
    num_samples, dim = z.shape[-2:]
    if k >= num_samples:
        raise ValueError(
            f"k must be smaller than the number of samples N = {num_samples} "
            f"(z has shape {tuple(z.shape)}), got k={k}"
        )
    if clip_quantile is not None and not (
        isinstance(clip_quantile, Real)
        and not isinstance(clip_quantile, bool)
        and 0.0 < clip_quantile <= 1.0
    ):
        raise ValueError(f"clip_quantile must be None or a number in (0, 1], got {clip_quantile!r}")
    check_finite("z", z)

    log_r = _log_knn_distance(z, k)
    if clip_quantile is not None:
        r = log_r.detach().exp()
        log_threshold = torch.quantile(r, float(clip_quantile), dim=-1, keepdim=True).log()
        log_r = torch.where(log_r.detach() > log_threshold, log_threshold, log_r)
    estimate = dim * log_r.mean(-1)
    if constants:
        estimate = estimate + (
            float(special.digamma(num_samples)) - float(special.digamma(k)) + _log_unit_ball(dim)
        )
    return estimate


def kde_entropy(
    z: Tensor,
    bandwidth: float,
    kernel: str = "gaussian",
    leave_one_out: bool = False,
) -> Tensor:
    r"""Kernel density (resubstitution) estimate of :math:`H(z)` in nats.

    .. math::

        \hat H = -\frac{1}{N} \sum_{i=1}^N \log \Big( \frac{1}{N} \sum_{j=1}^N
        K_h(z_i, z_j) \Big)

    (Ahmad & Lin 1976; Mikulasch & Zenke, A.5.1, eq. 32), with the kernel

    * ``"gaussian"``: :math:`K_h(z_i, z_j) = \mathcal N(z_i - z_j; 0, h^2 I_d)`, fully normalized,
      so :math:`\hat H` estimates the differential entropy in :math:`\mathbb R^d`;
    * ``"von_mises_fisher"``: for :math:`z` on the unit sphere :math:`S^{d-1}`,
      :math:`K(z_i, z_j) = C_d(\kappa) \exp(\kappa \langle z_i, z_j \rangle)` with
      :math:`C_d(\kappa) = \kappa^{d/2-1} / ((2\pi)^{d/2} I_{d/2-1}(\kappa))`, normalized with
      respect to the surface measure of the sphere, so :math:`\hat H` estimates the entropy with
      respect to that measure (at most :func:`uniform_sphere_entropy`). The bandwidth sets the
      concentration :math:`\kappa = 1 / h^2`: near its mode the kernel is a Gaussian of standard
      deviation :math:`h` in the tangent plane, as the Gaussian kernel. SimCLR's temperature
      :math:`\tau` is :math:`\kappa = 1/\tau`, i.e. :math:`h = \sqrt\tau`.

    With ``leave_one_out=True`` the inner sum runs over :math:`j \ne i` and is divided by
    :math:`N - 1`.

    .. note:: Both versions are biased at finite :math:`N`, in a way that depends on the bandwidth.
        Smoothing replaces :math:`q` by :math:`q * K_h`, which has a larger entropy
        (:math:`O(h^2)` upward); the resubstitution self-term :math:`K_h(z_i, z_i) / N` inflates
        the density at every sample (downward, large when :math:`N h^d` is small); and
        :math:`-\log` of a noisy density estimate is biased upward by Jensen's inequality
        (:math:`O(1/(N h^d))`). The leave-one-out version has no self-term, so in expectation
        it is at least the cross-entropy :math:`-\mathbb E_q \log (q * K_h) \ge H(q)`.

    .. note:: SimCLR/InfoNCE's negative term is this estimator with a von Mises–Fisher kernel:
        with :math:`\kappa = 1/\tau`, :math:`-\hat H = \frac1N \sum_i \log \sum_j
        e^{\langle z_i, z_j \rangle / \tau}` plus the constant :math:`\log C_d(\kappa) - \log N`
        (A.6.1, eq. 46–47; SimCLR draws its negatives from the other view and, unlike this
        estimator, includes the positive pair).

    :param torch.Tensor z: ``[..., N, d]`` samples (at least 2-D); for ``"von_mises_fisher"``
        unit vectors (:math:`d \ge 2`; normalize first, the estimate is meaningless otherwise).
    :param float bandwidth: the kernel width :math:`h > 0`, a constant of the estimator (no
        gradient flows to it).
    :param str kernel: ``"gaussian"`` or ``"von_mises_fisher"``.
    :param bool leave_one_out: exclude :math:`j = i` from the inner sum (needs :math:`N \ge 2`).
    :returns: ``[...]`` the estimate (an average over the :math:`N` samples, not a sum).
    :raises ValueError: on a non-finite or badly shaped ``z``, ``bandwidth <= 0`` or an unknown
        ``kernel``.

    Example: two points at distance 2 with :math:`h = 1`, where :math:`\hat H = -\log\big(
    \tfrac12 (\mathcal N(0; 0, 1) + \mathcal N(2; 0, 1))\big)`::

        >>> z = torch.tensor([[0.0], [2.0]], dtype=torch.float64)
        >>> kde_entropy(z, bandwidth=1.0)
        tensor(1.4852, dtype=torch.float64)
        >>> kde_entropy(z, bandwidth=1.0, leave_one_out=True)  # -log N(2; 0, 1)
        tensor(2.9189, dtype=torch.float64)
    """
    check_tensor("z", z, min_dim=2)
    check_positive("bandwidth", bandwidth)
    if kernel not in _KERNELS:
        raise ValueError(f"kernel must be one of {_KERNELS}, got {kernel!r}")
    num_samples, dim = z.shape[-2:]
    if leave_one_out and num_samples < 2:
        raise ValueError(
            f"z must hold N >= 2 samples for leave_one_out=True, got shape {tuple(z.shape)}"
        )
    if kernel == "von_mises_fisher" and dim < 2:
        raise ValueError(
            f"z must have d >= 2 (points on the sphere S^(d-1)) for the von_mises_fisher kernel, "
            f"got shape {tuple(z.shape)}"
        )
    check_finite("z", z)
    h = float(bandwidth)

    if kernel == "gaussian":
        # log K_ij = -|z_i - z_j|^2 / (2 h^2) - (d/2) log(2 pi h^2), with |z_i - z_j|^2 expanded
        # as n_i + n_j - 2 <z_i, z_j> on centred samples: the n_i term leaves the sum over j.
        precision = 1.0 / (h * h)
        centred = z - z.mean(-2, keepdim=True)
        half_norms = 0.5 * precision * centred.square().sum(-1)
        log_kernel = centred @ centred.mT
        log_kernel.mul_(precision).sub_(half_norms.unsqueeze(-2))
        row_offset = -half_norms - 0.5 * dim * math.log(2 * math.pi * h * h)
    else:
        kappa = 1.0 / (h * h)
        log_kernel = z @ z.mT
        log_kernel.mul_(kappa)
        row_offset = log_von_mises_fisher_normalizer(dim, kappa)
    if leave_one_out:
        log_kernel.diagonal(dim1=-2, dim2=-1).fill_(-math.inf)
        log_count = math.log(num_samples - 1)
    else:
        log_count = math.log(num_samples)
    log_density = torch.logsumexp(log_kernel, dim=-1) + row_offset - log_count
    return -log_density.mean(-1)


def logdet_entropy(z: Tensor, ridge: float = 0.0) -> Tensor:
    r"""Gaussian plug-in estimate of :math:`H(z)` in nats: the entropy of :math:`\mathcal N(\hat\mu,
    \hat\Sigma)`.

    .. math::

        \hat H = \tfrac12 \log\det(\hat\Sigma + \lambda I_d) + \tfrac{d}{2}(1 + \log 2\pi),
        \qquad \hat\Sigma = \frac{1}{N - 1} \sum_{i=1}^N (z_i - \bar z)(z_i - \bar z)^\top

    (Mikulasch & Zenke, A.5.3, eq. 34 and A.6.1, eq. 41), with the unbiased sample covariance
    :math:`\hat\Sigma` and a ridge :math:`\lambda \ge 0`. For non-Gaussian :math:`z` it estimates
    the entropy of the Gaussian with the same covariance, an upper bound on :math:`H(z)` (the
    Gaussian maximizes entropy at fixed covariance). For Gaussian :math:`z` and :math:`\lambda = 0`
    its bias is known exactly, because :math:`(N-1)\hat\Sigma` is Wishart: see
    :func:`logdet_entropy_bias` (negative, about :math:`-d(d+1)/(4N)` for :math:`N \gg d`).

    With :math:`\lambda = 0` the covariance is singular when :math:`N \le d` (refused) or when the
    samples span less than :math:`d` dimensions (collapsed or duplicated batches), where the
    estimate is :math:`-\infty` and the gradient undefined; a ridge :math:`\lambda > 0` keeps both
    finite.

    :param torch.Tensor z: ``[..., N, d]`` samples (at least 2-D).
    :param float ridge: :math:`\lambda \ge 0` added to the diagonal of :math:`\hat\Sigma`.
    :returns: ``[...]`` the estimate.
    :raises ValueError: on a non-finite or badly shaped ``z``, a negative ``ridge``, or
        :math:`N \le d` with ``ridge == 0``.

    Example: four points at :math:`\pm e_1, \pm e_2` have :math:`\hat\Sigma = \tfrac23 I_2`::

        >>> z = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
        >>> logdet_entropy(z)  # log(2/3) + 1 + log(2 pi)
        tensor(2.4324)
    """
    check_tensor("z", z, min_dim=2)
    if isinstance(ridge, bool) or not isinstance(ridge, Real) or not ridge >= 0.0:
        raise ValueError(f"ridge must be a finite number >= 0, got {ridge!r}")
    if not math.isfinite(ridge):
        raise ValueError(f"ridge must be a finite number >= 0, got {ridge!r}")
    num_samples, dim = z.shape[-2:]
    if num_samples < 2:
        raise ValueError(f"z must hold N >= 2 samples, got shape {tuple(z.shape)}")
    if ridge == 0.0 and num_samples <= dim:
        raise ValueError(
            f"z must hold N > d samples when ridge == 0 (the covariance is singular otherwise), "
            f"got shape {tuple(z.shape)}; pass ridge > 0"
        )
    check_finite("z", z)

    centred = z - z.mean(-2, keepdim=True)
    covariance = centred.mT @ centred / (num_samples - 1)
    if ridge > 0.0:
        covariance = covariance + ridge * torch.eye(dim, dtype=z.dtype, device=z.device)
    sign, log_abs_det = torch.linalg.slogdet(covariance)
    log_det = torch.where(sign > 0, log_abs_det, torch.full_like(log_abs_det, -math.inf))
    return 0.5 * log_det + 0.5 * dim * (1.0 + math.log(2 * math.pi))


def plugin_conditional_entropy(predictive: Distribution, target: Tensor) -> Tensor:
    r"""Plug-in estimate of a conditional entropy: the cross-entropy of a frozen predictor.

    .. math::

        \hat H(z_t \mid c) = -\frac1N \sum_{i=1}^N \log \hat p\big(z_{t,i} \mid \mathrm{sg}(c_i)\big)
        \;\ge\; H(z_t \mid c) \text{ in expectation}

    (Mikulasch & Zenke, A.5.4, eq. 35 and A.6.2, eq. 55). The cross-entropy of any predictor
    exceeds the conditional entropy by :math:`\mathbb E_c\,\mathrm{KL}(p(z_t \mid c) \,\|\,
    \hat p(\cdot \mid c))` (Gibbs' inequality), so it is an upper-bound estimate, exact in
    expectation when :math:`\hat p` is the true conditional. The predictor is fitted by minimizing
    this same quantity, so training it yields the estimate for free.

    **Where the gradient goes.** As an *entropy* estimate the predictor :math:`\hat p` is a fixed
    density and the samples :math:`z_t` carry the gradient (there is no stop-gradient on the
    samples, eq. 55). Build ``predictive`` from a detached context and frozen parameters (e.g.
    under :func:`torch.no_grad`); this function does not detach anything. Added to the model's
    :math:`\log p(z_t \mid c)` it gives, in derivative, :math:`\log p(\mathrm{sg}(z_t) \mid c)`
    (eq. 54): the prediction loss with a detached target of BYOL/SimSiam (Grill et al. 2020; Chen &
    He 2021) and of predictive models such as JEPA.

    :param torch.distributions.Distribution predictive: :math:`\hat p(z_t \mid c)` with batch shape
        ``[..., N]`` (the last batch dimension indexes samples) and the latent as its event
        (wrap a per-coordinate distribution as ``Independent(predictive, 1)``, or
        ``.to_event(1)`` in Pyro, so that ``log_prob`` sums over the latent dimension).
    :param torch.Tensor target: ``[..., N, *event_shape]`` samples of :math:`z_t`.
    :returns: ``[...]`` the estimate (an average over the :math:`N` samples, not a sum).
    :raises TypeError: if ``predictive`` is not a distribution.
    :raises ValueError: if ``target`` holds non-finite values, or is a batch of vectors scored by a
        distribution with an empty event shape, or ``log_prob`` does not reduce to ``[..., N]``.

    Example: the true conditional of :math:`z_t = c + \varepsilon`, :math:`\varepsilon \sim
    \mathcal N(0, 1)`, scored on three samples; the gradient reaches the samples only::

        >>> from torch.distributions import Normal
        >>> context = torch.tensor([0.0, 1.0, 2.0], requires_grad=True)
        >>> target = torch.tensor([0.5, 1.0, 1.0], requires_grad=True)
        >>> estimate = plugin_conditional_entropy(Normal(context.detach(), 1.0), target)
        >>> estimate  # 0.5 log(2 pi) + (0.25 + 0 + 1) / 6
        tensor(1.1273, grad_fn=<NegBackward0>)
        >>> estimate.backward()
        >>> target.grad  # (z - c) / N
        tensor([ 0.1667,  0.0000, -0.3333])
        >>> context.grad is None
        True
    """
    if not isinstance(predictive, Distribution):
        raise TypeError(
            f"predictive must be a torch.distributions.Distribution, got {type(predictive).__name__}"
        )
    check_tensor("target", target)
    event_dims = len(predictive.event_shape)
    if event_dims == 0 and target.dim() >= 2:
        raise ValueError(
            f"predictive has event_shape () but target has shape {tuple(target.shape)}: wrap it "
            "as Independent(predictive, 1) (Pyro: .to_event(1)) so that log_prob sums over the "
            "latent dimension, or pass 1-d scalar targets"
        )
    check_finite("target", target)
    log_prob = predictive.log_prob(target)
    expected = target.shape[: target.dim() - event_dims]
    if log_prob.shape != expected or log_prob.dim() < 1:
        raise ValueError(
            f"predictive.log_prob(target) must have shape [..., N] = {tuple(expected)}, got "
            f"{tuple(log_prob.shape)} (predictive batch_shape {tuple(predictive.batch_shape)}, "
            f"event_shape {tuple(predictive.event_shape)}, target {tuple(target.shape)})"
        )
    return -log_prob.mean(-1)


# -- closed forms --------------------------------------------------------------------------------


def gaussian_entropy(covariance: Tensor) -> Tensor:
    r"""Entropy of :math:`\mathcal N(\mu, \Sigma)` in nats (independent of :math:`\mu`).

    .. math:: H = \tfrac12 \log\det(2\pi e\,\Sigma) = \tfrac d2 (1 + \log 2\pi)
        + \tfrac12 \log\det\Sigma

    :param torch.Tensor covariance: ``[..., d, d]`` symmetric positive definite.
    :returns: ``[...]`` the entropy.
    :raises ValueError: if ``covariance`` is not square or not positive definite.

    Example::

        >>> gaussian_entropy(torch.eye(2, dtype=torch.float64))  # 1 + log(2 pi)
        tensor(2.8379, dtype=torch.float64)
    """
    check_tensor("covariance", covariance, min_dim=2)
    if covariance.shape[-1] != covariance.shape[-2]:
        raise ValueError(f"covariance must be [..., d, d], got shape {tuple(covariance.shape)}")
    check_finite("covariance", covariance)
    cholesky, info = torch.linalg.cholesky_ex(covariance)
    if bool((info != 0).any()):
        raise ValueError("covariance must be symmetric positive definite")
    dim = covariance.shape[-1]
    log_det = 2 * cholesky.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return 0.5 * log_det + 0.5 * dim * (1.0 + math.log(2 * math.pi))


def uniform_box_entropy(low: Tensor, high: Tensor) -> Tensor:
    r"""Entropy of the uniform distribution on the box :math:`\prod_k [a_k, b_k]` in nats.

    .. math:: H = \sum_{k=1}^d \log(b_k - a_k)

    :param torch.Tensor low: ``[..., d]`` lower corners :math:`a`.
    :param torch.Tensor high: ``[..., d]`` upper corners :math:`b > a`.
    :returns: ``[...]`` the entropy.
    :raises ValueError: unless ``high > low`` everywhere.

    Example::

        >>> uniform_box_entropy(torch.full((3,), -2.0), torch.full((3,), 2.0))  # 3 log 4
        tensor(4.1589)
    """
    low, high = torch.as_tensor(low), torch.as_tensor(high)
    check_tensor("low", low)
    check_tensor("high", high)
    check_finite("low", low)
    check_finite("high", high)
    if not bool((high > low).all()):
        raise ValueError("high must be greater than low in every coordinate")
    return (high - low).log().sum(-1)


def uniform_sphere_entropy(dim: int) -> float:
    r"""Entropy of the uniform distribution on the unit sphere :math:`S^{d-1} \subset \mathbb R^d`,
    with respect to the surface measure: the log of the surface area.

    .. math:: H = \log \frac{2 \pi^{d/2}}{\Gamma(d/2)}

    It is the largest entropy of any distribution on the sphere, the value the von Mises–Fisher
    :func:`kde_entropy` approaches for uniform samples.

    :param int dim: the ambient dimension :math:`d \ge 2`.
    :returns: the entropy in nats.

    Example::

        >>> round(uniform_sphere_entropy(3), 3)  # log(4 pi)
        2.531
    """
    check_positive_integer("dim", dim)
    if dim < 2:
        raise ValueError(f"dim must be >= 2 (the sphere S^(dim-1) in R^dim), got {dim}")
    return log_sphere_area(dim)


def logdet_entropy_bias(num_samples: int, dim: int) -> float:
    r"""Exact bias :math:`\mathbb E[\hat H] - H` of :func:`logdet_entropy` (``ridge=0``) for
    Gaussian samples.

    With :math:`N` i.i.d. samples of :math:`\mathcal N(\mu, \Sigma)`, :math:`(N - 1)\hat\Sigma
    \sim \mathcal W_d(\Sigma, N - 1)`, and :math:`\mathbb E \log\det \mathcal W_d(\Sigma, n) =
    \log\det\Sigma + d \log 2 + \sum_{i=1}^d \psi\big(\tfrac{n - i + 1}{2}\big)` (Anderson 2003,
    Thm. 7.5.3; Bishop 2006, eq. B.81), so

    .. math::

        \mathbb E[\hat H] - H = \frac12 \Big( \sum_{i=1}^d \psi\Big(\frac{N - i}{2}\Big)
        + d \log \frac{2}{N - 1} \Big) \approx -\frac{d (d + 1)}{4 N},

    independent of :math:`\Sigma` and negative.

    :param int num_samples: :math:`N > d`.
    :param int dim: :math:`d \ge 1`.
    :returns: the bias in nats.

    Example::

        >>> round(logdet_entropy_bias(1000, 10), 5)
        -0.02762
    """
    check_positive_integer("num_samples", num_samples)
    check_positive_integer("dim", dim)
    if num_samples <= dim:
        raise ValueError(f"num_samples must exceed dim = {dim}, got {num_samples}")
    digammas = special.digamma([(num_samples - i) / 2 for i in range(1, dim + 1)])
    return 0.5 * (float(sum(digammas)) + dim * math.log(2.0 / (num_samples - 1)))


# -- helpers -------------------------------------------------------------------------------------


def _log_unit_ball(dim: int) -> float:
    """``log V_d``, the log-volume of the unit ball in ``R^d``."""
    return 0.5 * dim * math.log(math.pi) - math.lgamma(0.5 * dim + 1.0)


def _log_knn_distance(z: Tensor, k: int) -> Tensor:
    r"""``[..., N]`` ``log r_i``, the log-distance of each sample to its ``k``-th neighbour.

    Neighbours are ranked without gradient by :math:`\lVert z_j \rVert^2 - 2 \langle z_i, z_j
    \rangle` on centred samples (the squared distance less a per-row constant); the distance is
    then recomputed from the chosen pair, so its value and gradient are exact, and floored at
    ``sqrt(tiny)`` in squared distance so that duplicates stay finite.
    """
    with torch.no_grad():
        centred = z.detach() - z.detach().mean(-2, keepdim=True)
        score = centred @ centred.mT
        score.mul_(-2.0).add_(centred.square().sum(-1).unsqueeze(-2))
        score.diagonal(dim1=-2, dim2=-1).fill_(math.inf)
        neighbour = score.topk(k, dim=-1, largest=False).indices[..., k - 1]
    index = neighbour.unsqueeze(-1).expand(*neighbour.shape, z.shape[-1])
    difference = z - torch.gather(z, -2, index)
    floor = math.sqrt(torch.finfo(z.dtype).tiny)
    return 0.5 * torch.log(difference.square().sum(-1) + floor)
