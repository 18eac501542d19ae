r"""Strict local minima of the free energy, by Newton's method with an exact trust region.

Gao & Chaudhari (paper 002), §3. The equilibrium surface is the set of minimizers
:math:`\theta^*(\lambda, \gamma)` of :math:`J = R + \lambda D + \gamma C` (eq. 8, 15), and Lemma
5's tangents (eq. 17–18) are those of a point where :math:`\nabla_\theta J = 0` with :math:`A =
\nabla^2_\theta J \succ 0`. Stochastic gradients stop well short of such a point; on a model small
enough for a dense Hessian (:math:`P \lesssim 2000`) this module reaches one to a tight gradient
norm:

* :func:`dense_hessian`: :math:`\nabla^2 f(\theta)`, one Hessian-vector product per column;
* :func:`minimize_free_energy`: L-BFGS, then Newton's method with an exact trust region (Moré &
  Sorensen 1983; Nocedal & Wright, Alg. 4.1) until :math:`\|\nabla J_\kappa\|` is below a
  tolerance at :math:`\nabla^2 J_\kappa \succ 0`, as a :class:`MinimizationResult`;
  :func:`require_converged` turns a result that stopped short into an error.

Like the rest of :mod:`thermossl.inference` it takes the functionals as a callable of a flat
parameter vector and imports nothing from ``objectives`` or ``models``. The tangents at such a
minimum are in :mod:`thermossl.inference.quasi_static` (conjugate gradients) and
:mod:`thermossl.surface_derivatives` (a dense solve, and finite differences re-minimized here);
:mod:`thermossl.surface_dynamics` compares them (experiment 3).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import scipy.optimize
import torch
from thermossl.inference.quasi_static import Functionals, free_energy_objective
from torch import Tensor

from thermossl._validation import check_positive, check_positive_integer

__all__ = [
    "MinimizationResult",
    "dense_hessian",
    "minimize_free_energy",
    "require_converged",
]


class MinimizationResult(NamedTuple):
    r"""Where :func:`minimize_free_energy` stopped: :math:`\theta`, :math:`J_\kappa(\theta)`,
    :math:`\|\nabla J_\kappa\|`, the extreme eigenvalues of :math:`\nabla^2 J_\kappa`, the Newton
    iterations taken and whether :math:`\|\nabla J_\kappa\| \le` tolerance with
    :math:`\nabla^2 J_\kappa \succ 0` (a strict local minimum)."""

    theta: Tensor
    value: float
    gradient_norm: float
    smallest_eigenvalue: float
    largest_eigenvalue: float
    iterations: int
    converged: bool


def dense_hessian(
    objective: Callable[[Tensor], Tensor], theta: Tensor, chunk_size: int = 256
) -> Tensor:
    r"""The symmetrized dense Hessian :math:`\nabla^2 f(\theta)`, ``[P, P]``, one Hessian-vector
    product per column (forward over reverse, ``chunk_size`` columns per vectorized call).

    Example::

        >>> dense_hessian(lambda t: (t ** 3).sum() + t[0] * t[1], torch.tensor([1.0, 2.0]))
        tensor([[ 6.,  1.],
                [ 1., 12.]])
    """
    theta = theta.detach()
    gradient = torch.func.grad(objective)

    def column(vector: Tensor) -> Tensor:
        return torch.func.jvp(gradient, (theta,), (vector,))[1]

    basis = torch.eye(theta.numel(), dtype=theta.dtype, device=theta.device)
    hessian = torch.vmap(column, chunk_size=chunk_size)(basis)
    return (hessian + hessian.T) / 2


def _trust_region_step(
    eigenvalues: Tensor, eigenvectors: Tensor, gradient: Tensor, radius: float
) -> tuple[Tensor, float]:
    r"""The exact minimizer of :math:`m(p) = g \cdot p + \frac12 p^\top H p` over
    :math:`\|p\| \le \Delta` (Moré & Sorensen 1983) in :math:`H`'s eigenbasis; returns
    :math:`p` and :math:`m(p)`."""
    g = eigenvectors.T @ gradient
    smallest = float(eigenvalues[0])

    def coefficients(shift: float) -> Tensor:
        return -g / (eigenvalues + shift)

    if smallest > 0 and float(coefficients(0.0).norm()) <= radius:
        shift = 0.0
    else:
        low = max(0.0, -smallest)
        low += 1e-12 * max(1.0, low)
        if float(coefficients(low).norm()) <= radius:  # the "hard case": ride the lowest mode
            shift = low
        else:
            high = low + 1.0
            while float(coefficients(high).norm()) > radius:
                high = low + 2 * (high - low)
            for _ in range(200):  # ||p(shift)|| decreases in shift: bisect for ||p|| = radius
                middle = 0.5 * (low + high)
                if float(coefficients(middle).norm()) > radius:
                    low = middle
                else:
                    high = middle
                if high - low <= 1e-13 * high:
                    break
            shift = high
    p = coefficients(shift)
    if shift > 0 and float(p.norm()) < radius and smallest < 0:
        extra = math.sqrt(max(radius**2 - float(p.dot(p)), 0.0))
        p = p.clone()
        p[0] += extra
    model = float(g.dot(p) + 0.5 * (eigenvalues * p * p).sum())
    return eigenvectors @ p, model


def minimize_free_energy(
    functionals: Functionals,
    theta0: Tensor,
    lambda_: float,
    gamma: float,
    *,
    weight_decay: float = 0.0,
    gradient_tolerance: float = 1e-8,
    max_iterations: int = 200,
    warm_start_iterations: int = 0,
    initial_radius: float = 1.0,
    chunk_size: int = 256,
    callback: Callable[[int, float, float, float], None] | None = None,
) -> MinimizationResult:
    r"""A strict local minimum of :math:`J_\kappa = R + \lambda D + \gamma C + \frac\kappa2
    \|\theta\|^2` (:func:`~thermossl.inference.quasi_static.free_energy_objective`; the weight
    decay :math:`\kappa \ge 0` gives a stationary point to a :math:`J` that has none) near
    ``theta0``: the point :math:`\theta^* \in \Theta_{\lambda,\gamma}` of eq. 15.

    ``warm_start_iterations`` of L-BFGS (SciPy) first, then Newton's method with an exact trust
    region: at each iterate the dense Hessian :math:`H` (:func:`dense_hessian`) and its
    eigendecomposition give the minimizer of the quadratic model within the radius
    :math:`\Delta`, which grows or shrinks with the ratio of actual to predicted decrease (Nocedal
    & Wright, Alg. 4.1). Negative curvature is followed, not damped, so the iteration stops only
    at :math:`\|\nabla J_\kappa\| \le` ``gradient_tolerance`` with :math:`H \succ 0`. Once the
    predicted decrease is below round-off of :math:`J`, a step is accepted when it lowers
    :math:`\|\nabla J_\kappa\|`.

    :param functionals: ``theta -> (R, D, C)``, deterministic (fixed noise).
    :param torch.Tensor theta0: ``[P]`` start.
    :param float weight_decay: :math:`\kappa \ge 0`.
    :param callback: called as ``callback(iteration, J, ||grad J||, smallest eigenvalue)`` at
        every Newton iterate (progress of long minimizations).
    :returns: :class:`MinimizationResult`; ``converged`` is False when ``max_iterations`` ran out
        (nothing is raised: the caller decides).

    Example: :math:`R = \frac12\|\theta\|^2, D = \frac12\|\theta - 1\|^2, C = 0` has its minimum
    at :math:`\lambda / (1 + \lambda)`::

        >>> functionals = lambda t: ((t**2).sum() / 2, ((t - 1) ** 2).sum() / 2, 0 * t.sum())
        >>> result = minimize_free_energy(functionals, torch.zeros(3, dtype=torch.float64), 1.0, 1.0)
        >>> result.theta, result.converged, result.smallest_eigenvalue
        (tensor([0.5000, 0.5000, 0.5000], dtype=torch.float64), True, 2.0)
    """
    check_positive("lambda_", lambda_)
    check_positive("gamma", gamma)
    check_positive("gradient_tolerance", gradient_tolerance)
    check_positive_integer("max_iterations", max_iterations)
    check_positive("initial_radius", initial_radius)
    if theta0.dim() != 1 or not theta0.is_floating_point():
        raise ValueError(f"theta0 must be a 1-d floating-point tensor, got {tuple(theta0.shape)}")
    objective = free_energy_objective(functionals, lambda_, gamma, weight_decay)
    gradient_of = torch.func.grad(objective)
    theta = theta0.detach().clone()
    if warm_start_iterations > 0:
        theta = _lbfgs(objective, gradient_of, theta, warm_start_iterations)
    radius = initial_radius
    value = float(objective(theta))
    iterations, moved = 0, True
    while True:
        if moved:  # a rejected step leaves theta, its gradient and its Hessian as they were
            gradient = gradient_of(theta)
            hessian = dense_hessian(objective, theta, chunk_size)
            eigenvalues, eigenvectors = torch.linalg.eigh(hessian)
            gradient_norm = float(gradient.norm())
        converged = gradient_norm <= gradient_tolerance and float(eigenvalues[0]) > 0
        if callback is not None:
            callback(iterations, value, gradient_norm, float(eigenvalues[0]))
        if converged or iterations == max_iterations:
            break
        iterations += 1
        step, predicted = _trust_region_step(eigenvalues, eigenvectors, gradient, radius)
        candidate = theta + step
        new_value = float(objective(candidate))
        round_off = abs(predicted) <= 1e-12 * max(1.0, abs(value))
        if round_off:
            accept = float(gradient_of(candidate).norm()) < gradient_norm
            ratio = 1.0 if accept else 0.0
        else:
            ratio = (new_value - value) / predicted
            accept = ratio > 1e-4
        step_norm = float(step.norm())
        if ratio < 0.25:
            radius = 0.25 * step_norm
        elif ratio > 0.75 and step_norm >= 0.99 * radius:
            radius = 2 * radius
        moved = accept
        if accept:
            theta, value = candidate, new_value
    return MinimizationResult(
        theta,
        value,
        gradient_norm,
        float(eigenvalues[0]),
        float(eigenvalues[-1]),
        iterations,
        converged,
    )


def _lbfgs(objective, gradient_of, theta: Tensor, iterations: int) -> Tensor:
    dtype = theta.dtype

    def value_and_gradient(x: np.ndarray) -> tuple[float, np.ndarray]:
        point = torch.from_numpy(x).to(dtype)
        return float(objective(point)), gradient_of(point).numpy()

    result = scipy.optimize.minimize(
        value_and_gradient,
        theta.numpy(),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": iterations, "gtol": 1e-12, "ftol": 1e-16, "maxcor": 30},
    )
    return torch.from_numpy(result.x).to(dtype)


def require_converged(result: MinimizationResult, where: str) -> MinimizationResult:
    r"""``result`` itself if :func:`minimize_free_energy` reached a strict minimum; otherwise a
    :class:`RuntimeError` that says ``where`` (e.g. ``"at lambda + h"``), :math:`\|\nabla
    J_\kappa\|`, the smallest eigenvalue of :math:`\nabla^2 J_\kappa` and the iterations taken.

    Example::

        >>> functionals = lambda t: ((t**2).sum() / 2, 0 * t.sum(), 0 * t.sum())
        >>> start = torch.ones(2, dtype=torch.float64)
        >>> require_converged(minimize_free_energy(functionals, start, 1.0, 1.0), "here").converged
        True
        >>> stopped = minimize_free_energy(functionals, start, 1.0, 1.0, max_iterations=1,
        ...                                initial_radius=0.1)
        >>> require_converged(stopped, "here")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        RuntimeError: the minimization here did not reach a strict minimum: ...
    """
    if not result.converged:
        raise RuntimeError(
            f"the minimization {where} did not reach a strict minimum: ||grad J|| = "
            f"{result.gradient_norm:.3e}, smallest Hessian eigenvalue "
            f"{result.smallest_eigenvalue:.3e} after {result.iterations} iterations"
        )
    return result
