"""Argument checks shared by every layer.

Each check raises :class:`ValueError` (or :class:`TypeError`) whose message names the offending
argument and says what was expected, so that a user can fix the call without reading the source.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from numbers import Real

import torch
from torch import Tensor

_VALUE_CHECKS: ContextVar[bool] = ContextVar("thermossl_value_checks", default=True)


@contextmanager
def deferred_value_checks() -> Iterator[None]:
    """Skip checks that read tensor *values* (finiteness, sums) inside this block.

    A traced program must not branch on data; whoever traces it runs these checks on the real
    inputs before each replay instead. Shape and type checks still run.
    """
    token = _VALUE_CHECKS.set(False)
    try:
        yield
    finally:
        _VALUE_CHECKS.reset(token)


def check_positive(name: str, value: float | Tensor) -> None:
    """Raise unless ``value`` is a finite number strictly greater than zero."""
    number = float(value) if isinstance(value, (Real, Tensor)) else math.nan
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_positive_integer(name: str, value: object) -> None:
    """Raise unless ``value`` is an integer (not a bool) strictly greater than zero."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_tensor(name: str, value: object, *, min_dim: int = 1) -> Tensor:
    """Raise unless ``value`` is a floating-point tensor with at least ``min_dim`` dimensions."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if value.dim() < min_dim:
        raise ValueError(
            f"{name} must have at least {min_dim} dimension(s), got shape {tuple(value.shape)}"
        )
    return value


def check_finite(name: str, value: Tensor) -> None:
    """Raise if ``value`` holds a NaN or an infinity (skipped while a compiler traces the code)."""
    if torch.compiler.is_compiling() or not _VALUE_CHECKS.get():
        return
    if not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")


def check_views(first_name: str, first: Tensor, second_name: str, second: Tensor) -> None:
    """Check two views of one batch: floating tensors of equal shape, with finite entries."""
    check_tensor(first_name, first)
    check_tensor(second_name, second)
    if first.shape != second.shape:
        raise ValueError(
            f"{first_name} and {second_name} must have the same shape (two views of one batch), "
            f"got {tuple(first.shape)} and {tuple(second.shape)}"
        )
    if first.shape[0] < 2:
        raise ValueError(
            f"{first_name} must hold a batch of at least 2 examples, got {first.shape[0]}"
        )
    check_finite(first_name, first)
    check_finite(second_name, second)


def check_probability_vector(name: str, value: Tensor, size: int | None = None) -> None:
    """Raise unless ``value`` is a 1-d vector of non-negative entries summing to one."""
    check_tensor(name, value)
    if value.dim() != 1 or (size is not None and value.shape[0] != size):
        expected = f"({size},)" if size is not None else "a 1-d vector"
        raise ValueError(f"{name} must have shape {expected}, got {tuple(value.shape)}")
    check_finite(name, value)
    if not _VALUE_CHECKS.get():
        return
    total = float(value.sum())
    if bool((value < 0).any()) or abs(total - 1.0) > 1e-6:
        raise ValueError(f"{name} must be non-negative and sum to 1, got sum {total:.6g}")


def check_whole_numbers(name: str, value: Tensor, low: int, high: int) -> None:
    """Raise unless every entry of ``value`` is a whole number in ``[low, high]`` (counts, labels).

    Reads tensor values, so it is skipped where value checks are deferred (while tracing).
    """
    if not _VALUE_CHECKS.get() or value.numel() == 0:
        return
    outside = (value < low) | (value > high)
    if value.is_floating_point():
        check_finite(name, value)
        outside = outside | (value != value.round())
    if bool(outside.any()):
        first = value[outside][0].item()
        raise ValueError(
            f"{name} must hold whole numbers in [{low}, {high}], got {int(outside.sum())} "
            f"entries outside (the first: {first!r})"
        )
