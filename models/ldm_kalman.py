r"""Kalman-predictive latent distribution matching (Mikulasch & Zenke, §6.1, eq. 15; A.6.2).

An encoder :math:`f` maps each frame of a sequence to a latent :math:`z_t = f(o_t) \in \mathbb{R}^L`.
The latent model is a linear-Gaussian state-space model with state :math:`x_t \in \mathbb{R}^D`,
:math:`D \ge L` (the extra :math:`D - L` coordinates are hidden states):

.. math::

    x_0 \sim N(0, I), \quad
    x_t = A x_{t-1} + (I - A) b + w_t, \; w_t \sim N(0, e^{s} \Sigma_A), \quad
    z_t = H x_t + v_t, \; v_t \sim N(0, e^{s} \Sigma_{D,t}), \quad H = [I_L \; 0],

with :math:`A`, :math:`b`, diagonal :math:`\Sigma_A`, diagonal :math:`\Sigma_D` and one shared
log-scale :math:`s` learned. With ``noise_aware=True`` the observation covariance reads the frame's
noise level :math:`\nu_t`: :math:`\log \operatorname{diag} \Sigma_{D,t} = a + c \log \nu_t`, with
:math:`a \in \mathbb{R}^L` and :math:`c` learned (noise-aware filtering).

The LDM goal for a batch of :math:`B` sequences is

.. math::

    G = \log p(z_{1:T}) + \hat H, \qquad
    \log p(z_{1:T}) = \sum_t \log N(z_t;\, H \bar x_t,\; H \bar P_t H^\top + e^{s}\Sigma_{D,t})

(the prediction-error decomposition, eq. 15, computed by
:func:`thermossl.inference.kalman.kalman_filter`), with the entropy estimated by one of

* ``entropy="knn"``: :math:`\hat H = BT\, \hat H_{\mathrm{kNN}}(\{z_{bt}\})`, the joint entropy of
  the sequence replaced by the sum of the single-step entropies (A.3), all frames pooled; or
* ``entropy="stopgrad"``: the plug-in estimator of eq. 55,
  :math:`\hat H = -\sum_t \log N(z_t;\, \mathrm{sg}(H\bar x_t),\, \mathrm{sg}(S_t))`, the model's own
  predictions frozen. Its value cancels :math:`\log p(z_{1:T})`, and the sum equals in gradient
  :math:`\sum_t \log N(\mathrm{sg}(z_t);\, H\bar x_t, S_t)`: the target of each prediction is
  detached (eq. 54), as in BYOL and JEPA; or
* ``entropy="contrastive"``: a kernel estimate whose kernels are the model's own predictive
  densities, :math:`\hat H = -\sum_i \log \frac1M \sum_j N(z_i;\, H\bar x_j,\, S_j)` over the
  :math:`M = BT` (sequence, step) pairs of the batch. Their mixture estimates the marginal law of
  the latents (each :math:`p(z_t \mid z_{<t})` averaged over pasts is :math:`p(z_t)`), and the goal
  becomes CPC's InfoNCE over time with the Kalman predictive log-density as the critic (Table 1:
  "empirical + predictive conditional"; the MI-maximizing variant):
  :math:`G = \sum_i \log \operatorname{softmax}_j\big(\log N(z_i; H\bar x_j, S_j)\big)_{j=i} +
  M \log M`.

The program declares :math:`z_{1:T}` as one observed site ``z`` whose law is
:class:`LinearGaussianStateSpace`, and the estimate as the factor ``entropy``, so
:func:`~thermossl.objectives.derive_bound` returns both as named terms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

import pyro
import pyro.distributions as dist
import pyro.distributions.constraints as constraints
import torch
from pyro.distributions import TorchDistribution
from pyro.nn import PyroModule, pyro_method
from thermossl.inference.kalman import KalmanFilterResult, kalman_filter
from thermossl.models.ldm_encoding import (
    SEQUENCE_ENTROPY_ESTIMATORS,
    check_sequence_entropy,
    encode_frames,
)
from thermossl.objectives.bound import Bound, DerivedELBO
from thermossl.objectives.entropy import knn_entropy
from torch import Tensor, nn

from thermossl._validation import check_finite, check_positive_integer

__all__ = ["KALMAN_ENTROPY_ESTIMATORS", "KalmanLDM", "LinearGaussianStateSpace"]

#: The sequence estimators, and the contrastive kernel estimate built on the model's predictions.
KALMAN_ENTROPY_ESTIMATORS = (*SEQUENCE_ENTROPY_ESTIMATORS, "contrastive")


class LinearGaussianStateSpace(TorchDistribution):
    r"""The law of :math:`z_{1:T}` under a linear-Gaussian state-space model, as a distribution.

    ``log_prob`` runs :func:`~thermossl.inference.kalman.kalman_filter` (the first transition is
    applied before the first observation, as in :class:`pyro.distributions.GaussianHMM`); the
    arguments and their broadcasting are that function's. The event shape is ``[T, L]``.

    Example: a one-step model equals the Gaussian :math:`z_1 \sim N(H(A m_0 + c), H(AP_0A^\top +
    Q)H^\top + R)`::

        >>> eye = torch.eye(2, dtype=torch.float64)
        >>> law = LinearGaussianStateSpace(0.5 * eye, torch.zeros(2), eye, eye, eye,
        ...                                torch.zeros(2), eye, num_steps=1)
        >>> z = torch.zeros(1, 2, dtype=torch.float64)
        >>> expected = dist.MultivariateNormal(torch.zeros(2), 2.25 * eye).log_prob(z[0])
        >>> bool(torch.isclose(law.log_prob(z), expected))
        True
    """

    arg_constraints: ClassVar[dict] = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = False

    def __init__(
        self,
        transition_matrix: Tensor,
        transition_offset: Tensor,
        transition_covariance: Tensor,
        observation_matrix: Tensor,
        observation_covariance: Tensor,
        initial_mean: Tensor,
        initial_covariance: Tensor,
        num_steps: int,
        batch_shape: torch.Size | tuple = (),
        parallel: bool = True,
        validate_args=None,
    ):
        check_positive_integer("num_steps", num_steps)
        self.parameters = (
            transition_matrix,
            transition_offset,
            transition_covariance,
            observation_matrix,
            observation_covariance,
            initial_mean,
            initial_covariance,
        )
        self.parallel = bool(parallel)
        event_shape = torch.Size([num_steps, observation_matrix.shape[-2]])
        super().__init__(torch.Size(batch_shape), event_shape, validate_args)

    def expand(self, batch_shape, _instance=None):
        if torch.Size(batch_shape) == self.batch_shape:
            return self  # a plate of the law's own size; keeps the filter cache
        return LinearGaussianStateSpace(
            *self.parameters,
            num_steps=self.event_shape[0],
            batch_shape=batch_shape,
            parallel=self.parallel,
        )

    def filter(self, value: Tensor) -> KalmanFilterResult:
        """Predicted and filtered moments and the log-likelihood of ``value`` ``[..., T, L]``.

        The result for the last ``value`` (the same tensor object) is kept, so ``log_prob`` and
        an entropy estimate that read the same observations run the filter once.
        """
        cached = getattr(self, "_filtered", None)
        if cached is not None and cached[0] is value:
            return cached[1]
        result = kalman_filter(value, *self.parameters, parallel=self.parallel)
        self._filtered = (value, result)
        return result

    def log_prob(self, value: Tensor) -> Tensor:
        return self.filter(value).log_likelihood


class KalmanLDM(PyroModule):
    r"""Kalman-predictive LDM as a Pyro program over a batch of sequences (see the module docstring).

    :param torch.nn.Module encoder: maps frames ``[N, ...]`` to latents ``[N, L]``; it is applied
        to all ``B * T`` frames at once.
    :param int latent_dim: :math:`L`.
    :param int state_dim: :math:`D \ge L` (default :math:`L`: no hidden states).
    :param str entropy: ``"knn"``, ``"stopgrad"`` or ``"contrastive"``.
    :param dict entropy_options: keyword arguments of :func:`~thermossl.objectives.entropy.knn_entropy`
        (for example ``{"k": 3, "clip_quantile": 0.9}``, the paper's settings).
    :param bool noise_aware: read each frame's noise level into :math:`\Sigma_{D,t}`.
    :param float initial_decay: :math:`A` starts at this multiple of the identity.

    Sample site: ``z`` (observed, in plate ``sequences``); factor: ``entropy``.

    Example::

        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> program = KalmanLDM(nn.Linear(4, 2), latent_dim=2, state_dim=3)
        >>> frames = torch.randn(8, 5, 4)
        >>> sorted(program.bound(frames).terms)
        ['entropy', 'z']
    """

    def __init__(
        self,
        encoder: nn.Module,
        latent_dim: int,
        state_dim: int | None = None,
        entropy: str = "knn",
        entropy_options: Mapping | None = None,
        noise_aware: bool = False,
        initial_decay: float = 0.9,
    ):
        super().__init__()
        check_positive_integer("latent_dim", latent_dim)
        state_dim = latent_dim if state_dim is None else state_dim
        check_positive_integer("state_dim", state_dim)
        if state_dim < latent_dim:
            raise ValueError(f"state_dim must be >= latent_dim ({latent_dim}), got {state_dim}")
        check_sequence_entropy(entropy, entropy_options, KALMAN_ENTROPY_ESTIMATORS)
        self.encoder = encoder
        self.latent_dim = int(latent_dim)
        self.state_dim = int(state_dim)
        self.entropy = entropy
        self.entropy_options = dict(entropy_options or {})
        self.noise_aware = bool(noise_aware)
        D, L = self.state_dim, self.latent_dim
        self.transition_matrix = nn.Parameter(initial_decay * torch.eye(D))
        self.stationary_mean = nn.Parameter(torch.zeros(D))
        self.log_transition_variance = nn.Parameter(torch.zeros(D))
        self.log_observation_variance = nn.Parameter(torch.zeros(L))
        self.log_scale = nn.Parameter(torch.zeros(()))
        self.noise_slope = nn.Parameter(torch.zeros(())) if noise_aware else None

    def latents(self, frames: Tensor) -> Tensor:
        """:math:`z_{bt} = f(o_{bt})`, ``[B, T, L]`` from frames ``[B, T, ...]``."""
        return encode_frames(self.encoder, frames, self.latent_dim)

    def latent_law(
        self, batch: int, steps: int, noise_level: Tensor | None = None
    ) -> LinearGaussianStateSpace:
        r"""The state-space law of :math:`z_{1:T}` for ``batch`` sequences of ``steps`` frames."""
        A = self.transition_matrix
        D, L = self.state_dim, self.latent_dim
        eye = torch.eye(D, dtype=A.dtype, device=A.device)
        scale = self.log_scale.exp()
        offset = (eye - A) @ self.stationary_mean
        transition_covariance = torch.diag(scale * self.log_transition_variance.exp())
        observation_matrix = eye[:L]
        if self.noise_aware:
            if noise_level is None:
                raise ValueError("noise_level ([B, T]) is required when noise_aware=True")
            if noise_level.shape != (batch, steps):
                raise ValueError(
                    f"noise_level must have shape {(batch, steps)}, got {tuple(noise_level.shape)}"
                )
            log_variance = self.log_observation_variance + self.noise_slope * torch.log(
                noise_level.to(A)
            ).unsqueeze(-1)
            observation_covariance = torch.diag_embed(scale * log_variance.exp())
        else:
            observation_covariance = torch.diag(scale * self.log_observation_variance.exp())
        return LinearGaussianStateSpace(
            A,
            offset,
            transition_covariance,
            observation_matrix,
            observation_covariance,
            torch.zeros(D, dtype=A.dtype, device=A.device),
            eye,
            num_steps=steps,
            batch_shape=(batch,),
        )

    def filter(self, frames: Tensor, noise_level: Tensor | None = None) -> KalmanFilterResult:
        """The Kalman filter run on the encoded frames (filtered states are what probes read)."""
        z = self.latents(frames)
        return self.latent_law(*z.shape[:2], noise_level).filter(z)

    def stopgrad_entropy(self, law: LinearGaussianStateSpace, z: Tensor) -> Tensor:
        r""":math:`-\sum_{b,t} \log N(z_{bt};\, \mathrm{sg}(H\bar x_{bt}),\, \mathrm{sg}(S_{bt}))`."""
        result = law.filter(z)  # the filter already run for log p(z): its values, detached
        H, R = law.parameters[3], law.parameters[4]
        mean = (result.predicted_mean @ H.T).detach()
        covariance = (H @ result.predicted_covariance @ H.T + R).detach()
        return -dist.MultivariateNormal(mean, covariance).log_prob(z).sum()

    def contrastive_entropy(self, law: LinearGaussianStateSpace, z: Tensor) -> Tensor:
        r""":math:`-\sum_i \log \frac1M \sum_j N(z_i;\, H\bar x_j,\, S_j)` over the :math:`M = BT`
        latents of the batch (every prediction is a kernel for every latent)."""
        logits = self.predictive_log_density_matrix(law, z)
        return -(torch.logsumexp(logits, dim=-1) - math.log(logits.shape[-1])).sum()

    def predictive_log_density_matrix(self, law: LinearGaussianStateSpace, z: Tensor) -> Tensor:
        r"""``[M, M]``: entry :math:`(i, j)` is :math:`\log N(z_i;\, H\bar x_j,\, S_j)`, with
        :math:`i, j` running over the :math:`M = BT` (sequence, step) pairs in row-major order."""
        result = law.filter(z)
        H, R = law.parameters[3], law.parameters[4]
        L = self.latent_dim
        mean = (result.predicted_mean @ H.T).reshape(-1, L)
        covariance = H @ result.predicted_covariance @ H.T + R
        cholesky = torch.linalg.cholesky(covariance.expand(*z.shape[:2], L, L).reshape(-1, L, L))
        M = cholesky.shape[0]
        # whitened[j, :, i] = C_j^{-1} (z_i - mean_j) with S_j = C_j C_j^T: the M inverse factors
        # [M, L, L] stacked into one [M L, L] matrix, so all pairs take a single matrix product
        eye = torch.eye(L, dtype=z.dtype, device=z.device).expand(M, L, L)
        inverse = torch.linalg.solve_triangular(cholesky, eye, upper=False)
        whitened = (inverse.reshape(M * L, L) @ z.reshape(-1, L).T).reshape(M, L, M) - (
            inverse @ mean.unsqueeze(-1)
        )
        log_density = (
            -0.5 * whitened.square().sum(-2)
            - cholesky.diagonal(dim1=-2, dim2=-1).log().sum(-1, keepdim=True)
            - 0.5 * L * math.log(2 * math.pi)
        )  # [j, i]
        return log_density.T

    @pyro_method
    def model(self, frames: Tensor, noise_level: Tensor | None = None) -> None:
        """``z ~ LinearGaussianStateSpace`` observed at the encoded frames, plus the entropy factor."""
        check_finite("frames", frames)
        z = self.latents(frames)
        batch, steps = z.shape[:2]
        law = self.latent_law(batch, steps, noise_level)
        with pyro.plate("sequences", batch):
            pyro.sample("z", law, obs=z)
        if self.entropy == "knn":
            estimate = (
                batch * steps * knn_entropy(z.reshape(-1, self.latent_dim), **self.entropy_options)
            )
        elif self.entropy == "stopgrad":
            estimate = self.stopgrad_entropy(law, z)
        else:
            estimate = self.contrastive_entropy(law, z)
        pyro.factor("entropy", estimate)

    @pyro_method
    def guide(self, frames: Tensor, noise_level: Tensor | None = None) -> None:
        """No latent sites: the encoder is deterministic and the states are integrated out."""

    def bound(self, frames: Tensor, noise_level: Tensor | None = None) -> Bound:
        """The derived bound: terms ``z`` (log p of the latents) and ``entropy``."""
        return DerivedELBO(max_plate_nesting=1).bound(self.model, self.guide, frames, noise_level)
