r"""Distributions on the unit sphere :math:`S^{d-1} \subset \mathbb{R}^d` that Pyro lacks.

Latent distribution matching (Mikulasch & Zenke, §5 and Appendix A.6.1) puts SimCLR-like latents
on the sphere, where related latents follow a von Mises–Fisher (vMF) conditional and the marginal
prior is uniform. Pyro ships the vMF only in three dimensions (``VonMises3D``, unnormalized), so
both live here, normalized with respect to the sphere's surface measure in any dimension.

This module sits below all three layers: the entropy estimators (``objectives``) use its
normalizer for vMF kernels and the pair programs (``models``) use the distributions as sites.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import pyro.distributions.constraints as constraints
import torch
from pyro.distributions import TorchDistribution
from scipy.special import ive
from torch import Tensor

from thermossl._validation import check_positive_integer, check_tensor

__all__ = [
    "UniformSphere",
    "VonMisesFisher",
    "log_sphere_area",
    "log_von_mises_fisher_normalizer",
    "mean_resultant_length",
]


def log_sphere_area(dim: int) -> float:
    r"""Log surface area of the unit sphere in :math:`\mathbb{R}^d`.

    .. math::

        \log |S^{d-1}| = \log 2 + \tfrac d2 \log \pi - \log\Gamma(\tfrac d2)

    :param int dim: :math:`d \ge 1` (``dim = 1`` gives the two points :math:`\pm 1`, area 2).

    Example::

        >>> round(log_sphere_area(3), 6) == round(math.log(4 * math.pi), 6)
        True
    """
    check_positive_integer("dim", dim)
    return math.log(2.0) + 0.5 * dim * math.log(math.pi) - math.lgamma(0.5 * dim)


def log_von_mises_fisher_normalizer(dim: int, concentration: float) -> float:
    r"""Log normalizer :math:`\log C_d(\kappa)` of the vMF density on :math:`S^{d-1}`.

    .. math::

        f(z; \mu, \kappa) = C_d(\kappa)\, e^{\kappa \mu^\top z}, \qquad
        C_d(\kappa) = \frac{\kappa^{d/2 - 1}}{(2\pi)^{d/2} I_{d/2-1}(\kappa)},

    with :math:`I_\nu` the modified Bessel function of the first kind, evaluated as
    :math:`\log I_\nu(\kappa) = \log \mathrm{ive}_\nu(\kappa) + \kappa` so that large
    concentrations do not overflow, and by Debye's expansion where that underflows (high
    dimension, small concentration). At :math:`\kappa = 0` the vMF is uniform and
    :math:`C_d = 1/|S^{d-1}|`.

    :param int dim: :math:`d \ge 2`.
    :param float concentration: :math:`\kappa \ge 0`, a constant (the normalizer carries no
        gradient; the programs here hold :math:`\kappa` fixed, as the paper's :math:`\beta`).

    Example: on the circle, :math:`C_2(\kappa) = 1/(2\pi I_0(\kappa))`::

        >>> from scipy.special import i0
        >>> round(log_von_mises_fisher_normalizer(2, 5.0), 9) == round(-math.log(2 * math.pi * i0(5.0)), 9)
        True
    """
    check_positive_integer("dim", dim)
    if dim < 2:
        raise ValueError(f"dim must be >= 2 for a von Mises-Fisher distribution, got {dim}")
    kappa = float(concentration)
    if not (math.isfinite(kappa) and kappa >= 0):
        raise ValueError(f"concentration must be a finite number >= 0, got {concentration!r}")
    if kappa == 0.0:
        return -log_sphere_area(dim)
    order = 0.5 * dim - 1.0
    return order * math.log(kappa) - 0.5 * dim * math.log(2 * math.pi) - _log_bessel_i(order, kappa)


def mean_resultant_length(dim: int, concentration: float) -> float:
    r""":math:`A_d(\kappa) = \mathbb{E}[\mu^\top z] = I_{d/2}(\kappa) / I_{d/2-1}(\kappa)`."""
    check_positive_integer("dim", dim)
    if concentration == 0:
        return 0.0
    return float(ive(0.5 * dim, concentration) / ive(0.5 * dim - 1.0, concentration))


class UniformSphere(TorchDistribution):
    r"""The uniform law on :math:`S^{d-1}`: density :math:`1/|S^{d-1}|` w.r.t. surface measure.

    :param int dim: :math:`d \ge 2`, the ambient dimension.
    :param torch.Size batch_shape: batch shape of independent copies.

    Example::

        >>> sphere = UniformSphere(3)
        >>> z = sphere.sample(torch.Size([4]))
        >>> torch.allclose(z.norm(dim=-1), torch.ones(4))
        True
        >>> round(float(sphere.log_prob(z[0])), 6) == round(-math.log(4 * math.pi), 6)
        True
    """

    arg_constraints: ClassVar[dict] = {}
    support = constraints.sphere

    def __init__(self, dim: int, batch_shape=(), dtype=None, validate_args=None):
        check_positive_integer("dim", dim)
        if dim < 2:
            raise ValueError(f"dim must be >= 2, got {dim}")
        self.dim = int(dim)
        self.dtype = dtype or torch.get_default_dtype()
        self._log_density = -log_sphere_area(self.dim)
        super().__init__(torch.Size(batch_shape), torch.Size([self.dim]), validate_args)

    def expand(self, batch_shape, _instance=None):
        return UniformSphere(self.dim, torch.Size(batch_shape), self.dtype)

    def sample(self, sample_shape=()) -> Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        gaussian = torch.randn(shape, dtype=self.dtype)
        return gaussian / gaussian.norm(dim=-1, keepdim=True)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        shape = torch.broadcast_shapes(value.shape[:-1], self.batch_shape)
        return value.new_full(shape, self._log_density)

    def entropy(self) -> Tensor:
        return torch.full(self.batch_shape, -self._log_density, dtype=self.dtype)


class VonMisesFisher(TorchDistribution):
    r"""von Mises–Fisher law on :math:`S^{d-1}`, normalized in any dimension :math:`d \ge 2`.

    .. math::

        \log f(z; \mu, \kappa) = \kappa\, \mu^\top z + \log C_d(\kappa)
        \quad (\text{see } :func:`log_von_mises_fisher_normalizer`)

    Sampling uses Wood's (1994) rejection scheme for :math:`w = \mu^\top z` and a uniform
    tangent direction; it is not reparameterized (the pair programs only score observed
    latents).

    .. warning:: ``log_prob`` takes :math:`\mu^\top z` at face value: points off the sphere are
        scored without complaint unless ``validate_args=True``. Normalize latents first.

    :param torch.Tensor loc: ``[..., d]`` mean directions :math:`\mu` (unit vectors).
    :param float concentration: :math:`\kappa \ge 0`, shared by the batch.

    Example: the entropy is :math:`-\log C_d(\kappa) - \kappa A_d(\kappa)`::

        >>> vmf = VonMisesFisher(torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), 5.0)
        >>> round(float(vmf.entropy()), 4)  # d = 3: log(4π sinh κ / κ) − κ coth κ + 1
        1.2279
    """

    arg_constraints: ClassVar[dict] = {"loc": constraints.real_vector}
    support = constraints.sphere
    has_rsample = False

    def __init__(self, loc: Tensor, concentration: float, validate_args=None):
        check_tensor("loc", loc)
        kappa = float(concentration)
        self.loc = loc
        self.concentration = kappa
        self.dim = loc.shape[-1]
        self._log_normalizer = log_von_mises_fisher_normalizer(self.dim, kappa)
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args)

    def expand(self, batch_shape, _instance=None):
        loc = self.loc.expand(torch.Size(batch_shape) + self.event_shape)
        return VonMisesFisher(loc, self.concentration)

    @property
    def mean(self) -> Tensor:
        return self.loc * mean_resultant_length(self.dim, self.concentration)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return self.concentration * (self.loc * value).sum(-1) + self._log_normalizer

    def entropy(self) -> Tensor:
        value = -self._log_normalizer - self.concentration * mean_resultant_length(
            self.dim, self.concentration
        )
        return torch.full(self.batch_shape, value, dtype=self.loc.dtype, device=self.loc.device)

    def sample(self, sample_shape=()) -> Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            w = self._sample_cosines(shape[:-1])
            tangent = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
            mu = self.loc.expand(shape)
            tangent = tangent - (tangent * mu).sum(-1, keepdim=True) * mu
            tangent = tangent / tangent.norm(dim=-1, keepdim=True).clamp_min(1e-30)
            z = w.unsqueeze(-1) * mu + (1 - w.square()).clamp_min(0).sqrt().unsqueeze(-1) * tangent
            return z / z.norm(dim=-1, keepdim=True)  # rounding in the tangent's projection

    def _sample_cosines(self, shape: torch.Size) -> Tensor:
        """Wood (1994): draws of :math:`w = \\mu^\\top z` by rejection from a Beta proposal."""
        d, kappa = self.dim, self.concentration
        count = int(np.prod(shape)) if len(shape) else 1
        if kappa == 0.0:
            beta = torch.distributions.Beta(0.5 * (d - 1), 0.5 * (d - 1))
            w = 2 * beta.sample(torch.Size([count])) - 1
            return w.reshape(shape).to(self.loc)
        root = math.sqrt(4 * kappa**2 + (d - 1) ** 2)
        b = (d - 1) / (2 * kappa + root)
        x0 = (1 - b) / (1 + b)
        c = kappa * x0 + (d - 1) * math.log(1 - x0**2)
        beta = torch.distributions.Beta(
            torch.tensor(0.5 * (d - 1), dtype=torch.float64),
            torch.tensor(0.5 * (d - 1), dtype=torch.float64),
        )
        accepted = torch.empty(0, dtype=torch.float64)
        while accepted.numel() < count:
            need = 2 * (count - accepted.numel()) + 16
            e = beta.sample(torch.Size([need]))
            u = torch.rand(need, dtype=torch.float64)
            w = (1 - (1 + b) * e) / (1 - (1 - b) * e)
            keep = kappa * w + (d - 1) * torch.log1p(-x0 * w) - c >= torch.log(u)
            accepted = torch.cat([accepted, w[keep]])
        return accepted[:count].reshape(shape).to(self.loc)


def _log_bessel_i(order: float, x: float) -> float:
    r"""``log I_order(x)`` for ``order >= 0`` and ``x > 0``, stable for large ``x`` and ``order``.

    Uses the exponentially scaled ``scipy.ive`` (:math:`I_\nu(x) e^{-x}`, no overflow for
    large :math:`x`); where that underflows (large order, small :math:`x`) it switches to Debye's
    uniform asymptotic expansion (DLMF 10.41.3), whose relative error with four terms is
    :math:`O(\nu^{-4})` and which is only reached for :math:`\nu` in the tens or more.
    """
    scaled = float(ive(order, x))
    if scaled > 1e-290 and math.isfinite(scaled):  # Debye below: no subnormal precision loss
        return math.log(scaled) + x
    ratio = x / order
    root = math.sqrt(1.0 + ratio * ratio)
    eta = root + math.log(ratio / (1.0 + root))
    p = 1.0 / root
    u1 = (3 * p - 5 * p**3) / 24
    u2 = (81 * p**2 - 462 * p**4 + 385 * p**6) / 1152
    u3 = (30375 * p**3 - 369603 * p**5 + 765765 * p**7 - 425425 * p**9) / 414720
    series = 1.0 + u1 / order + u2 / order**2 + u3 / order**3
    return (
        order * eta - 0.5 * math.log(2 * math.pi * order) - 0.5 * math.log(root) + math.log(series)
    )
