"""Helpers shared by the test suite."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

#: Relative tolerance of the float64 equivalence tests (derived bound vs published loss).
EXACT = 1e-8


def assert_relative_close(
    actual: Tensor, expected: Tensor, rtol: float = EXACT, atol: float = 0.0
) -> None:
    """``|actual - expected| <= atol + rtol * max(|expected|, tiny)``, elementwise, with a clear message."""
    actual, expected = torch.as_tensor(actual).detach(), torch.as_tensor(expected).detach()
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = expected.abs().clamp_min(torch.finfo(expected.dtype).tiny)
    error = (actual - expected).abs()
    worst = float((error - atol - rtol * scale).max()) if error.numel() else -1.0
    assert worst <= 0, (
        f"max abs error {float(error.max()):.3e} exceeds atol {atol:.1e} + rtol {rtol:.1e} * |expected| "
        f"(|expected| max {float(expected.abs().max()):.3e})"
    )


def mlp(
    input_dim: int, output_dim: int, hidden: int = 16, seed: int = 0, dtype=torch.float64
) -> nn.Module:
    """A small tanh MLP with reproducible initial weights."""
    generator = torch.Generator().manual_seed(seed)
    network = nn.Sequential(nn.Linear(input_dim, hidden), nn.Tanh(), nn.Linear(hidden, output_dim))
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.copy_(
                torch.randn(parameter.shape, generator=generator) / math.sqrt(parameter.shape[-1])
            )
    return network.to(dtype)


def two_views(num_pairs: int, dim: int, seed: int = 0, noise: float = 0.1, dtype=torch.float64):
    """A batch ``x`` and an augmentation ``x + noise * N(0, I)``."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num_pairs, dim, generator=generator, dtype=dtype)
    return x, x + noise * torch.randn(num_pairs, dim, generator=generator, dtype=dtype)


def gradients(value: Tensor, parameters) -> list[Tensor]:
    """d value / d parameters, one tensor per parameter (zeros where unused)."""
    parameters = list(parameters)
    grads = torch.autograd.grad(value, parameters, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(parameters, grads, strict=True)]


def family_programs() -> dict[str, nn.Module]:
    """One small float64 program of every family and variant, keyed by its published loss."""
    from thermossl.models import ClusterSSL, ContrastiveSSL, NegativeFreeSSL

    return {
        "info_nce": ContrastiveSSL(mlp(3, 4, seed=0), temperature=0.3),
        "nt_xent": ContrastiveSSL(mlp(3, 4, seed=1), temperature=0.3, candidates="both_views"),
        "corinfomax": NegativeFreeSSL(mlp(3, 4, seed=2), representation_dim=4),
        "swav": ClusterSSL(mlp(3, 4, seed=3), 4, 5, auxiliary="sinkhorn", normalize=True).double(),
        "hard": ClusterSSL(mlp(3, 4, seed=4), 4, 5, auxiliary="hard").double(),
        "gedi": ClusterSSL(mlp(3, 4, seed=5), 4, 5).double(),
        "gedi_symmetric": ClusterSSL(mlp(3, 4, seed=6), 4, 5, symmetric=True).double(),
    }
