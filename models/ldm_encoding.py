"""What the predictive LDM programs share: encoding a batch of frame sequences, and the choice of
their entropy estimator (paper 004, §6–7)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from thermossl._validation import check_tensor

__all__ = ["SEQUENCE_ENTROPY_ESTIMATORS", "check_sequence_entropy", "encode_frames"]

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
