"""What the predictive LDM programs share: encoding a batch of frame sequences, the choice of
their entropy estimator, and the batch normalizations an encoder may end with (paper 004, §6–7)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from thermossl._validation import check_tensor

__all__ = [
    "LATENT_NORMALIZATIONS",
    "PAPER_KNN_OPTIONS",
    "SEQUENCE_ENTROPY_ESTIMATORS",
    "BatchStandardize",
    "BatchWhiten",
    "check_sequence_entropy",
    "encode_frames",
]

#: The paper's kNN settings for sequences (Appendix B): k = 3, the largest 10 % of the distances
#: clipped.
PAPER_KNN_OPTIONS = {"k": 3, "clip_quantile": 0.9}

#: Optional last layers of an encoder: none, per-coordinate batch standardization, batch whitening.
LATENT_NORMALIZATIONS = ("none", "standardize", "whiten")

#: The pooled kNN estimate of the latents' entropy, or the stop-gradient plug-in of eq. 55.
SEQUENCE_ENTROPY_ESTIMATORS = ("knn", "stopgrad")


def encode_frames(
    encoder: nn.Module, frames: Tensor, latent_dim: int, min_steps: int = 1
) -> Tensor:
    r""":math:`z_{bt} = f(o_{bt})`, ``[B, T, L]``: the encoder applied to all ``B * T`` frames
    ``[B, T, ...]`` at once.

    :raises ValueError: for fewer than ``min_steps`` frames per sequence, or an encoder whose
        output is not ``[B * T, latent_dim]``.

    Example::

        >>> import torch
        >>> encode_frames(nn.Flatten(), torch.zeros(2, 3, 1, 4), latent_dim=4).shape
        torch.Size([2, 3, 4])
    """
    check_tensor("frames", frames, min_dim=3)
    batch, steps = frames.shape[:2]
    if steps < min_steps:
        raise ValueError(f"frames must hold at least {min_steps} time steps, got {steps}")
    z = encoder(frames.reshape(batch * steps, *frames.shape[2:]))
    if z.shape != (batch * steps, latent_dim):
        raise ValueError(
            f"the encoder must map [N, ...] frames to [N, {latent_dim}] latents, "
            f"got shape {tuple(z.shape)}"
        )
    return z.reshape(batch, steps, latent_dim)


def check_sequence_entropy(
    entropy: str,
    entropy_options: Mapping | None,
    choices: tuple[str, ...] = SEQUENCE_ENTROPY_ESTIMATORS,
) -> None:
    """Name the estimator and options that a predictive LDM program cannot take."""
    if entropy not in choices:
        raise ValueError(f"entropy must be one of {choices}, got {entropy!r}")
    if entropy != "knn" and entropy_options:
        raise ValueError("entropy_options apply to entropy='knn' only")


class BatchStandardize(nn.Module):
    r"""Standardize each latent coordinate over the batch: :math:`(z - \bar z) / s`, with
    :math:`\bar z` and :math:`s` the batch mean and standard deviation (no running statistics:
    at evaluation the batch is the whole set).

    An encoder ending in this layer cannot shrink a coordinate, the one-dimensional form of
    collapse that the stop-gradient estimator does not resist (paper 004, A.6.2; as BYOL relies on
    batch normalization). It still allows the coordinates to become correlated; see
    :class:`BatchWhiten`.

    Example::

        >>> import torch
        >>> z = BatchStandardize()(torch.tensor([[1.0, 10.0], [3.0, 30.0], [5.0, 50.0]]))
        >>> z.mean(0).abs().max() < 1e-6, torch.allclose(z.std(0), torch.ones(2))
        (tensor(True), True)
    """

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = float(eps)

    def forward(self, z: Tensor) -> Tensor:
        centred = z - z.mean(dim=0)
        return centred / (centred.square().sum(dim=0) / (z.shape[0] - 1) + self.eps).sqrt()


class BatchWhiten(nn.Module):
    r"""Whiten the latents over the batch: :math:`C^{-1}(z - \bar z)` with :math:`CC^\top` the
    batch covariance (plus ``eps`` on the diagonal), so the batch has identity covariance.

    This fixes the latents' second moments, and with them the LogDet entropy: no form of linear
    collapse is left, including the correlated one :class:`BatchStandardize` allows (as in W-MSE,
    Ermolov et al. 2021).

    Example::

        >>> import torch
        >>> z = torch.randn(500, 3, generator=torch.Generator().manual_seed(0)) @ torch.tensor(
        ...     [[2.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 3.0, 0.5]])
        >>> w = BatchWhiten(eps=0.0)(z)
        >>> torch.allclose(w.T @ w / 499, torch.eye(3), atol=1e-5)
        True
    """

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = float(eps)

    def forward(self, z: Tensor) -> Tensor:
        centred = z - z.mean(dim=0)
        covariance = centred.T @ centred / (z.shape[0] - 1)
        covariance = covariance + self.eps * torch.eye(z.shape[1], dtype=z.dtype, device=z.device)
        cholesky = torch.linalg.cholesky(covariance)
        return torch.linalg.solve_triangular(cholesky, centred.T, upper=False).T
