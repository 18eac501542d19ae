r"""A world where TherML's parameter thermodynamics is closed-form: linear-Gaussian regression.

With :math:`J(\theta) = -\log p(y \mid X, \theta) = \frac{1}{2\tau^2}\|y - X\theta\|^2 +
\frac{N}{2}\log(2\pi\tau^2)` (a sum over the :math:`N` examples) and the prior
:math:`q(\theta) = N(0, s^2 I)`, the equilibrium distribution at temperature :math:`\sigma`
(paper 003, eq. 19)

.. math::

    p^*(\theta) = \frac{q(\theta)\, e^{-J(\theta)/\sigma}}{\mathcal{Z}}, \qquad
    \Lambda = s^{-2} I + \frac{X^\top X}{\sigma\tau^2}, \quad
    \mu = \Lambda^{-1} \frac{X^\top y}{\sigma\tau^2},

is Gaussian, and so are its partition function (eq. 20), its entropy
:math:`S = \mathrm{KL}(p^* \| q) = -\log\mathcal{Z} - \langle J\rangle_{p^*}/\sigma` and the law of
an SGLD chain started from the prior, whose update (the conventions of
:class:`~thermossl.inference.SGLD`) is linear:

.. math::

    \theta_{t+1} = M\theta_t + \varepsilon \frac{X^\top y}{\tau^2} + \sqrt{2\varepsilon\sigma}\,\xi_t,
    \qquad M = I - \varepsilon\Big(\frac{X^\top X}{\tau^2} + \sigma s^{-2} I\Big).

This is the reference for the second law (eq. 36–41) and for thermodynamic integration.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor
from torch.distributions import MultivariateNormal, kl_divergence

from thermossl._validation import check_positive, check_positive_integer

__all__ = ["GaussianLaw", "LinearGaussianRegression", "gaussian_relative_entropy"]


class GaussianLaw(NamedTuple):
    """A multivariate normal law by its ``mean`` ``[d]`` and ``covariance`` ``[d, d]``."""

    mean: Tensor
    covariance: Tensor


def gaussian_relative_entropy(first: GaussianLaw, second: GaussianLaw) -> Tensor:
    r""":math:`\mathrm{KL}(N(\mu_1, \Sigma_1) \,\|\, N(\mu_2, \Sigma_2))` in nats (torch's closed form).

    Example::

        >>> law = GaussianLaw(torch.zeros(2), torch.eye(2))
        >>> float(gaussian_relative_entropy(law, law))
        0.0
    """
    return kl_divergence(
        MultivariateNormal(first.mean, first.covariance),
        MultivariateNormal(second.mean, second.covariance),
    )


class LinearGaussianRegression:
    r"""Linear regression with Gaussian noise and a Gaussian prior: closed-form thermodynamics.

    :param torch.Tensor features: :math:`X`, ``[N, d]``.
    :param torch.Tensor targets: :math:`y`, ``[N]``.
    :param float noise_scale: :math:`\tau > 0`.
    :param float prior_scale: :math:`s > 0`.

    Example: the two expressions of the entropy agree::

        >>> X = torch.randn(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> world = LinearGaussianRegression(X, X @ torch.ones(3, dtype=torch.float64), 0.5, 2.0)
        >>> law = world.equilibrium(0.3)
        >>> gap = world.entropy(0.3) - (-world.log_partition(0.3) - world.mean_objective(law) / 0.3)
        >>> abs(float(gap)) < 1e-10
        True
    """

    def __init__(self, features: Tensor, targets: Tensor, noise_scale: float, prior_scale: float):
        if features.dim() != 2 or targets.shape != features.shape[:1]:
            raise ValueError(
                f"features must be [N, d] and targets [N], got {tuple(features.shape)} and "
                f"{tuple(targets.shape)}"
            )
        check_positive("noise_scale", noise_scale)
        check_positive("prior_scale", prior_scale)
        self.features, self.targets = features, targets
        self.noise_scale, self.prior_scale = float(noise_scale), float(prior_scale)
        self.curvature = features.T @ features / self.noise_scale**2  # X^T X / tau^2
        self.pull = features.T @ targets / self.noise_scale**2  # X^T y / tau^2

    @property
    def dimension(self) -> int:
        return self.features.shape[1]

    def objective(self, theta: Tensor) -> Tensor:
        r""":math:`J(\theta) = -\log p(y \mid X, \theta)`, summed over examples; ``theta`` ``[..., d]``."""
        residual = self.targets - theta @ self.features.T
        n = self.targets.shape[0]
        return 0.5 * (residual**2).sum(-1) / self.noise_scale**2 + 0.5 * n * math.log(
            2 * math.pi * self.noise_scale**2
        )

    def prior(self) -> GaussianLaw:
        r""":math:`q(\theta) = N(0, s^2 I)`."""
        eye = torch.eye(self.dimension, dtype=self.features.dtype)
        return GaussianLaw(
            torch.zeros(self.dimension, dtype=self.features.dtype), self.prior_scale**2 * eye
        )

    def log_prior(self, theta: Tensor) -> Tensor:
        r""":math:`\log q(\theta)`."""
        d = self.dimension
        return -0.5 * (theta**2).sum(-1) / self.prior_scale**2 - 0.5 * d * math.log(
            2 * math.pi * self.prior_scale**2
        )

    def mean_objective(self, law: GaussianLaw) -> Tensor:
        r""":math:`\langle J \rangle` under ``law``: :math:`J(\mu) + \tfrac12\operatorname{tr}(A\Sigma)`."""
        return self.objective(law.mean) + 0.5 * (self.curvature * law.covariance).sum()

    def _precision(self, temperature: float) -> Tensor:
        check_positive("temperature", temperature)
        eye = torch.eye(self.dimension, dtype=self.features.dtype)
        return eye / self.prior_scale**2 + self.curvature / temperature

    def equilibrium(self, temperature: float) -> GaussianLaw:
        r""":math:`p^* \propto q\, e^{-J/\sigma}` (eq. 19)."""
        covariance = torch.linalg.inv(self._precision(temperature))
        return GaussianLaw(covariance @ self.pull / temperature, covariance)

    def log_partition(self, temperature: float) -> Tensor:
        r""":math:`\log \mathcal{Z}(\sigma) = \log \int q(\theta) e^{-J(\theta)/\sigma} d\theta` (eq. 20)."""
        precision = self._precision(temperature)
        b = self.pull / temperature
        n = self.targets.shape[0]
        constant = (self.targets**2).sum() / (2 * self.noise_scale**2) + 0.5 * n * math.log(
            2 * math.pi * self.noise_scale**2
        )
        log_det = torch.linalg.slogdet(precision).logabsdet + 2 * self.dimension * math.log(
            self.prior_scale
        )
        return -constant / temperature + 0.5 * b @ torch.linalg.solve(precision, b) - 0.5 * log_det

    def entropy(self, temperature: float) -> Tensor:
        r""":math:`S = \mathrm{KL}(p^* \| q)` at equilibrium."""
        return gaussian_relative_entropy(self.equilibrium(temperature), self.prior())

    def nonequilibrium_objective(self, law: GaussianLaw, temperature: float) -> Tensor:
        r""":math:`J^{\text{noneq}}(p) = \langle J \rangle_p + \sigma\,\mathrm{KL}(p \| q)` (eq. 38).

        Equals :math:`-\sigma\log\mathcal{Z} + \sigma\,\mathrm{KL}(p \| p^*)` (eq. 36–37).
        """
        return self.mean_objective(law) + temperature * gaussian_relative_entropy(law, self.prior())

    def sgld_laws(self, temperature: float, step_size: float, num_steps: int) -> list[GaussianLaw]:
        r"""The exact law of a full-batch SGLD chain started from the prior, at steps ``0..num_steps``.

        :math:`\mu_{t+1} = M\mu_t + \varepsilon X^\top y/\tau^2`,
        :math:`\Sigma_{t+1} = M\Sigma_t M^\top + 2\varepsilon\sigma I`.
        """
        check_positive("step_size", step_size)
        check_positive_integer("num_steps", num_steps)
        eye = torch.eye(self.dimension, dtype=self.features.dtype)
        transition = eye - step_size * (self.curvature + temperature * eye / self.prior_scale**2)
        law = self.prior()
        laws = [law]
        for _ in range(num_steps):
            law = GaussianLaw(
                transition @ law.mean + step_size * self.pull,
                transition @ law.covariance @ transition.T + 2 * step_size * temperature * eye,
            )
            laws.append(law)
        return laws

    def sgld_stationary(self, temperature: float, step_size: float) -> GaussianLaw:
        r"""The discrete chain's own stationary law (it differs from :math:`p^*` by :math:`O(\varepsilon)`).

        Solves :math:`\Sigma = M\Sigma M^\top + 2\varepsilon\sigma I` in the eigenbasis of the
        symmetric :math:`M`.
        """
        eye = torch.eye(self.dimension, dtype=self.features.dtype)
        transition = eye - step_size * (self.curvature + temperature * eye / self.prior_scale**2)
        values, vectors = torch.linalg.eigh(transition)
        if not bool((values.abs() < 1).all()):
            raise ValueError(f"step_size {step_size} is too large: the chain does not converge")
        covariance = vectors @ torch.diag(2 * step_size * temperature / (1 - values**2)) @ vectors.T
        mean = torch.linalg.solve(eye - transition, step_size * self.pull)
        return GaussianLaw(mean, covariance)
