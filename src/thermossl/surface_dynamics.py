r"""Lemma 5's exact equilibrium dynamics against finite differences, on a small digits model.

Gao & Chaudhari (paper 002), §3. On the equilibrium surface :math:`\nabla_\theta J = 0` of
:math:`J = R + \lambda D + \gamma C` (eq. 15), the parameters move with the multipliers as

.. math::

    \dot\theta = \theta_\lambda \dot\lambda + \theta_\gamma \dot\gamma, \qquad
    \theta_\lambda = -A^{-1} \nabla_\theta D, \quad \theta_\gamma = -A^{-1} \nabla_\theta C, \quad
    A = \nabla^2_\theta J \quad \text{(Lemma 5, eq. 17–18)},

and the iso-classification process keeps :math:`C` fixed with the rates
:math:`\dot\lambda = -\alpha\, \partial C/\partial\gamma`, :math:`\dot\gamma = \alpha\, \partial
C/\partial\lambda` (eq. 22; Remark 7, eq. 31). The paper computes these derivatives by finite
differences, re-equilibrating on each side; :mod:`thermossl.inference.quasi_static` computes them
exactly, :math:`\partial X/\partial\lambda = \nabla X \cdot \theta_\lambda` by Hessian-vector
products and conjugate gradients. This module checks that the two agree:

* :func:`minimize_free_energy` reaches a strict local minimum to a tight gradient norm by Newton's
  method with an exact trust region (a dense Hessian, affordable for :math:`P \lesssim 2000`);
* :func:`finite_difference_tangents`: central differences, each side re-minimized from
  :math:`\theta^*` (Remark 7's way, with exact minimization);
* :func:`compare_dynamics`: the six derivatives and :math:`\theta_\lambda, \theta_\gamma` both ways,
  and a short iso-classification process run both ways; :func:`report` at a report size.

.. warning:: **The digits free energy has no stationary point; a weight decay makes one.** A pixel
    that is 0 in every example (the digits' corners: 4 of 64 in the training split, 7 in its first
    300 examples) enters :math:`D` only through :math:`16\, \langle \operatorname{softplus}\, g_j(z)
    \rangle`, so the derivative of :math:`J` in that pixel's decoder bias :math:`b_j` is
    :math:`16 \lambda \langle \sigma(g_j(z)) \rangle > 0` for *every* :math:`\theta`: the infimum is
    approached as :math:`b_j \to -\infty` and :math:`\nabla J = 0` is never reached. (Shifts of
    the classifier's and the mixture's logits and a translation of :math:`z` leave :math:`J`
    invariant besides: null directions of :math:`A` wherever :math:`\nabla J = 0`.) Both
    processes here therefore minimize

    .. math::

        J_\kappa(\theta) = R + \lambda D + \gamma C + \tfrac{\kappa}{2} \|\theta\|^2,

    whose Hessian is :math:`A + \kappa I`: exactly ``equilibrium_tangents(..., damping=κ)``, so the
    damping is here the Hessian of the objective both processes track, not an approximation. Lemma
    5 holds for :math:`J_\kappa` unchanged (:math:`\partial \nabla J_\kappa / \partial \lambda =
    \nabla D`); the first law acquires the weight decay's term,
    :math:`dR + \lambda\, dD + \gamma\, dC = -\kappa\, \theta \cdot d\theta`.

.. note:: Two more obstacles, met at the report's size. (i) With a mixture marginal
    (``num_components > 1``) a component can shrink onto a few latent codes that the encoder lines
    up, its scale :math:`\to 0` and :math:`R \to -\infty`; a weight decay of :math:`10^{-2}` does
    not stop it, so :func:`report` uses one Gaussian component. (ii) :math:`A + \kappa I` is
    ill-conditioned (eigenvalues from :math:`\sim 10^{-3}` to :math:`\sim 10^{5}`): conjugate
    gradients stopped at :math:`P` iterations are far from converged, so the comparisons use a
    dense solve (:func:`dense_tangents`) and report the conjugate gradients' distance from it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import scipy.optimize
import torch
from torch import Tensor

from thermossl._validation import check_positive, check_positive_integer
from thermossl.inference.quasi_static import (
    CGResult,
    SurfaceTangents,
    conserving_rates,
    equilibrium_tangents,
)
from thermossl.models.equilibrium_digits import SurfaceFunctionals
from thermossl.models.therml_digits import DigitsWorlds, digits_data

__all__ = [
    "ConjugateGradientCheck",
    "DynamicsComparison",
    "FiniteDifferenceTangents",
    "MinimizationResult",
    "PathPoint",
    "TangentComparison",
    "compare_dynamics",
    "dense_hessian",
    "dense_tangents",
    "exact_tangents",
    "finite_difference_tangents",
    "free_energy_objective",
    "minimize_free_energy",
    "report",
    "small_digits_surface",
    "tangent_differences",
]

#: ``functionals(theta) -> (R, D, C)``, three scalar tensors.
Functionals = Callable[[Tensor], tuple[Tensor, Tensor, Tensor]]

_NAMES = ("rate", "distortion", "classification")


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


class FiniteDifferenceTangents(NamedTuple):
    r"""Central differences of the re-minimized surface: ``derivatives[X] = (∂X/∂λ, ∂X/∂γ)`` for
    :math:`X` in ``rate, distortion, classification``, :math:`\theta_\lambda, \theta_\gamma`, the
    absolute steps :math:`(h_\lambda, h_\gamma)` and the four side minimizations (λ+, λ−, γ+, γ−)."""

    theta_lambda: Tensor
    theta_gamma: Tensor
    derivatives: dict[str, tuple[float, float]]
    steps: tuple[float, float]
    sides: tuple[MinimizationResult, ...]


class TangentComparison(NamedTuple):
    r"""Finite differences at one relative step against Lemma 5: ``relative_differences`` maps
    ``"dR/dlambda"`` … ``"dC/dgamma"`` to :math:`|x_{fd} - x| / |x|` and ``"theta_lambda"``,
    ``"theta_gamma"`` to :math:`\|\theta_{fd} - \theta\| / \|\theta\|`."""

    relative_step: float
    relative_differences: dict[str, float]
    finite_difference: FiniteDifferenceTangents


class PathPoint(NamedTuple):
    r"""One point of an iso-classification path: the multipliers, :math:`R, D, C`,
    :math:`\|\nabla J_\kappa\|` (how far the point is from the surface), the smallest eigenvalue
    of :math:`\nabla^2 J_\kappa`, Lemma 5's :math:`(\partial C/\partial\lambda, \partial
    C/\partial\gamma)` there and those the path stepped with from there (the same on the exact
    path; finite differences on the other; NaN at the last point)."""

    lambda_: float
    gamma: float
    rate: float
    distortion: float
    classification: float
    gradient_norm: float
    smallest_eigenvalue: float
    exact_classification_derivatives: tuple[float, float]
    classification_derivatives: tuple[float, float]


class ConjugateGradientCheck(NamedTuple):
    r""":func:`~thermossl.inference.quasi_static.equilibrium_tangents` (conjugate gradients)
    against a dense solve at the same point: its iterations and relative residuals for
    :math:`\theta_\lambda, \theta_\gamma`, their relative distances from the dense solution and
    the six derivatives' relative differences."""

    iterations: tuple[int, int]
    relative_residuals: tuple[float, float]
    theta_lambda_difference: float
    theta_gamma_difference: float
    derivative_differences: dict[str, float]


class DynamicsComparison(NamedTuple):
    r"""What :func:`compare_dynamics` measured: the ``minimum`` at the start, Lemma 5's ``exact``
    tangents there, the ``conjugate_gradient`` check (``None`` when not asked), one
    :class:`TangentComparison` per relative step, ``alpha``, the ``exact_path`` (Euler steps along
    Lemma 5) and the ``finite_difference_path`` (rates from finite differences, then
    re-minimization) from the same point, and ``path_differences``: the largest
    :math:`|x_{fd} - x_{exact}|` along the paths of ``lambda, gamma, rate, distortion,
    classification``."""

    minimum: MinimizationResult
    exact: SurfaceTangents
    conjugate_gradient: ConjugateGradientCheck | None
    tangents: list[TangentComparison]
    alpha: float
    exact_path: list[PathPoint]
    finite_difference_path: list[PathPoint]
    path_differences: dict[str, float]


def small_digits_surface(
    num_examples: int = 300,
    latent_dim: int = 2,
    hidden: int = 8,
    num_components: int = 10,
    seed: int = 0,
    noise_seed: int = 1,
) -> SurfaceFunctionals:
    r"""The digits model's :math:`(R, D, C)` in float64 on the first ``num_examples`` training
    examples, with fixed encoder noise :math:`\varepsilon \sim N(0, I)` drawn from ``noise_seed``.

    Example::

        >>> surface = small_digits_surface(num_examples=20, hidden=2, num_components=1)
        >>> surface.size, surface.pixels.shape[0], surface.initial().dtype
        (375, 20, torch.float64)
    """
    check_positive_integer("num_examples", num_examples)
    data = digits_data(dtype=torch.float64)
    if num_examples > data.train_pixels.shape[0]:
        raise ValueError(
            f"num_examples must be at most {data.train_pixels.shape[0]}, got {num_examples}"
        )
    worlds = DigitsWorlds(latent_dim, hidden, num_components, seed=seed, dtype=torch.float64)
    generator = torch.Generator().manual_seed(noise_seed)
    noise = torch.randn(num_examples, latent_dim, generator=generator, dtype=torch.float64)
    pixels, labels = data.train_pixels[:num_examples], data.train_labels[:num_examples]
    return SurfaceFunctionals(worlds, pixels, labels, noise)


def free_energy_objective(
    functionals: Functionals, lambda_: float, gamma: float, weight_decay: float = 0.0
) -> Callable[[Tensor], Tensor]:
    r""":math:`\theta \mapsto J_\kappa = R + \lambda D + \gamma C + \frac{\kappa}{2}\|\theta\|^2`
    (eq. 8 plus the weight decay :math:`\kappa`, see the module's warning).

    Example::

        >>> J = free_energy_objective(lambda t: (t.sum(), 2 * t.sum(), 3 * t.sum()), 1.0, 1.0, 2.0)
        >>> float(J(torch.tensor([1.0, 1.0])))
        14.0
    """
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")

    def objective(theta: Tensor) -> Tensor:
        rate, distortion, classification = functionals(theta)
        value = rate + lambda_ * distortion + gamma * classification
        return value + 0.5 * weight_decay * theta.dot(theta) if weight_decay else value

    return objective


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
    \|\theta\|^2` near ``theta0``: the point :math:`\theta^* \in \Theta_{\lambda,\gamma}` of eq. 15.

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
    :param float weight_decay: :math:`\kappa \ge 0` (see the module's warning).
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


def _values(functionals: Functionals, theta: Tensor) -> dict[str, float]:
    with torch.no_grad():
        return {name: float(value) for name, value in zip(_NAMES, functionals(theta), strict=True)}


def _require(result: MinimizationResult, where: str) -> MinimizationResult:
    if not result.converged:
        raise RuntimeError(
            f"the minimization {where} did not reach a strict minimum: ||grad J|| = "
            f"{result.gradient_norm:.3e}, smallest Hessian eigenvalue "
            f"{result.smallest_eigenvalue:.3e} after {result.iterations} iterations"
        )
    return result


def finite_difference_tangents(
    functionals: Functionals,
    theta: Tensor,
    lambda_: float,
    gamma: float,
    relative_step: float,
    *,
    weight_decay: float = 0.0,
    **minimization: Any,
) -> FiniteDifferenceTangents:
    r"""The surface's derivatives by central differences (Remark 7), with exact minimization:

    .. math::

        \frac{\partial X}{\partial\lambda} \approx
        \frac{X(\theta^*_{\lambda + h}) - X(\theta^*_{\lambda - h})}{2h}, \qquad
        \theta_\lambda \approx \frac{\theta^*_{\lambda + h} - \theta^*_{\lambda - h}}{2h},
        \qquad h = \text{relative\_step} \cdot \lambda,

    and likewise in :math:`\gamma`, each :math:`\theta^*` re-minimized (:func:`minimize_free_energy`,
    keyword arguments ``minimization``) from ``theta``, which should be on the surface. The
    truncation error is :math:`O(h^2)`.

    :raises RuntimeError: when a side's minimization does not converge.

    Example: on the quadratic of :func:`minimize_free_energy`, :math:`D^*(\lambda) =
    \frac{3}{2(1 + \lambda)^2}` and :math:`\partial D / \partial \lambda = -3/8` at
    :math:`\lambda = 1`::

        >>> functionals = lambda t: ((t**2).sum() / 2, ((t - 1) ** 2).sum() / 2, 0 * t.sum())
        >>> theta = torch.full((3,), 0.5, dtype=torch.float64)
        >>> tangents = finite_difference_tangents(functionals, theta, 1.0, 1.0, 1e-3)
        >>> round(tangents.derivatives["distortion"][0], 6)
        -0.375
    """
    check_positive("relative_step", relative_step)
    multipliers = {"lambda": lambda_, "gamma": gamma}
    sides, differences, tangents, steps = [], {}, {}, []
    for name in ("lambda", "gamma"):
        h = relative_step * multipliers[name]
        steps.append(h)
        points, values = [], []
        for sign in (1, -1):
            moved = dict(multipliers)
            moved[name] += sign * h
            result = minimize_free_energy(
                functionals,
                theta,
                moved["lambda"],
                moved["gamma"],
                weight_decay=weight_decay,
                **minimization,
            )
            sides.append(_require(result, f"at {name} {'+' if sign > 0 else '-'} h"))
            points.append(result.theta)
            values.append(_values(functionals, result.theta))
        tangents[name] = (points[0] - points[1]) / (2 * h)
        differences[name] = {key: (values[0][key] - values[1][key]) / (2 * h) for key in _NAMES}
    derivatives = {key: (differences["lambda"][key], differences["gamma"][key]) for key in _NAMES}
    return FiniteDifferenceTangents(
        tangents["lambda"], tangents["gamma"], derivatives, tuple(steps), tuple(sides)
    )


def _relative(estimate: float | Tensor, reference: float | Tensor) -> float:
    """:math:`|x - y| / |y|` (norms for vectors); NaN when the reference is zero."""
    if isinstance(reference, Tensor):
        estimate, reference = float((estimate - reference).norm()), float(reference.norm())
    else:
        estimate = abs(estimate - reference)
    return estimate / abs(reference) if reference != 0 else math.nan


def _labels() -> list[tuple[str, str, int]]:
    return [
        (f"d{symbol}/d{multiplier}", name, index)
        for name, symbol in zip(_NAMES, "RDC", strict=True)
        for index, multiplier in enumerate(("lambda", "gamma"))
    ]


def _point(
    functionals: Functionals,
    theta: Tensor,
    multipliers: tuple[float, float],
    weight_decay: float,
    chunk_size: int,
    exact: SurfaceTangents,
    used: tuple[float, float] | None,
) -> PathPoint:
    objective = free_energy_objective(functionals, *multipliers, weight_decay)
    gradient_norm = float(torch.func.grad(objective)(theta).norm())
    smallest = float(torch.linalg.eigvalsh(dense_hessian(objective, theta, chunk_size))[0])
    return PathPoint(
        *multipliers,
        *_values(functionals, theta).values(),
        gradient_norm,
        smallest,
        exact.derivatives["classification"],
        (math.nan, math.nan) if used is None else used,
    )


def dense_tangents(
    functionals: Functionals,
    theta: Tensor,
    lambda_: float,
    gamma: float,
    *,
    weight_decay: float = 0.0,
    chunk_size: int = 256,
) -> SurfaceTangents:
    r"""Lemma 5 with a dense solve: :math:`[\theta_\lambda, \theta_\gamma] = -(A + \kappa I)^{-1}
    [\nabla D, \nabla C]` (eq. 17–18), :math:`A + \kappa I = \nabla^2 J_\kappa` from
    :func:`dense_hessian`, as a :class:`~thermossl.inference.quasi_static.SurfaceTangents` whose
    ``solves`` carry 0 iterations and the solve's relative residual.

    The same quantity as :func:`~thermossl.inference.quasi_static.equilibrium_tangents` with
    ``damping`` :math:`= \kappa`, exact up to round-off whatever the conditioning of :math:`A`
    (conjugate gradients need many more than :math:`P` iterations when it is poor).

    Example: the quadratic surface of ``equilibrium_tangents``' example::

        >>> functionals = lambda t: ((t ** 2).sum() / 2, (t ** 2).sum() / 2 + t.sum(), 0 * t.sum())
        >>> tangents = dense_tangents(functionals, torch.tensor([-0.5], dtype=torch.float64), 1.0, 1.0)
        >>> float(tangents.theta_lambda[0]), tangents.derivatives["distortion"]
        (-0.25, (-0.125, 0.0))
    """
    theta = theta.detach()
    objective = free_energy_objective(functionals, lambda_, gamma, weight_decay)
    hessian = dense_hessian(objective, theta, chunk_size)
    jacobian = torch.func.jacrev(lambda t: torch.stack(functionals(t)))(theta)
    gradients = dict(zip(_NAMES, jacobian, strict=True))
    right = -torch.stack([gradients["distortion"], gradients["classification"]], 1)
    solution = torch.linalg.solve(hessian, right)
    residuals = (right - hessian @ solution).norm(dim=0) / right.norm(dim=0)
    solves = tuple(CGResult(solution[:, i], 0, float(residuals[i])) for i in range(2))
    theta_lambda, theta_gamma = solution[:, 0], solution[:, 1]
    derivatives = {
        name: (float(gradient.dot(theta_lambda)), float(gradient.dot(theta_gamma)))
        for name, gradient in gradients.items()
    }
    free_energy_hessian = torch.tensor(
        [derivatives["distortion"], derivatives["classification"]], dtype=theta.dtype
    )
    return SurfaceTangents(
        theta_lambda, theta_gamma, gradients, derivatives, free_energy_hessian, solves
    )


def exact_tangents(
    functionals: Functionals,
    theta: Tensor,
    lambda_: float,
    gamma: float,
    *,
    weight_decay: float = 0.0,
    solver: str = "dense",
    cg_tolerance: float = 1e-12,
    cg_max_iterations: int | None = None,
    chunk_size: int = 256,
) -> SurfaceTangents:
    r"""Lemma 5's tangents of :math:`J_\kappa` at ``theta``: ``solver="dense"``
    (:func:`dense_tangents`) or ``"conjugate_gradient"``
    (:func:`~thermossl.inference.quasi_static.equilibrium_tangents`, ``damping`` :math:`= \kappa`,
    Hessian-vector products as in Remark 6).

    Example::

        >>> functionals = lambda t: ((t ** 2).sum() / 2, (t ** 2).sum() / 2 + t.sum(), 0 * t.sum())
        >>> theta = torch.tensor([-0.5], dtype=torch.float64)
        >>> float(exact_tangents(functionals, theta, 1.0, 1.0, solver="conjugate_gradient").theta_lambda[0])
        -0.25
    """
    if solver == "dense":
        return dense_tangents(
            functionals,
            theta,
            lambda_,
            gamma,
            weight_decay=weight_decay,
            chunk_size=chunk_size,
        )
    if solver == "conjugate_gradient":
        return equilibrium_tangents(
            functionals,
            theta,
            lambda_,
            gamma,
            damping=weight_decay,
            tolerance=cg_tolerance,
            max_iterations=cg_max_iterations,
        )
    raise ValueError(f"solver must be 'dense' or 'conjugate_gradient', got {solver!r}")


def compare_dynamics(
    functionals: Functionals,
    theta0: Tensor,
    lambda_: float,
    gamma: float,
    *,
    relative_steps: tuple[float, ...] = (0.02, 0.01),
    steps: int = 5,
    alpha: float | None = None,
    relative_rate: float = 0.02,
    weight_decay: float = 0.0,
    solver: str = "dense",
    check_conjugate_gradient: bool = True,
    cg_tolerance: float = 1e-12,
    cg_max_iterations: int | None = None,
    **minimization: Any,
) -> DynamicsComparison:
    r"""Lemma 5 against finite differences, at a minimum and along an iso-classification process.

    1. :math:`\theta^*` = :func:`minimize_free_energy` from ``theta0`` (keyword arguments
       ``minimization``); it must converge.
    2. Exact tangents :math:`\theta_\lambda = -(A + \kappa I)^{-1} \nabla D`,
       :math:`\theta_\gamma = -(A + \kappa I)^{-1} \nabla C` (:func:`exact_tangents` with
       ``solver``); with ``check_conjugate_gradient`` also
       :func:`~thermossl.inference.quasi_static.equilibrium_tangents`' conjugate gradients, whose
       residuals and relative distance from the dense solve are reported. For each relative step
       :func:`finite_difference_tangents`: the relative differences of the six derivatives
       :math:`\partial_{\lambda,\gamma}\{R, D, C\}` and of :math:`\theta_\lambda, \theta_\gamma`.
    3. ``steps`` steps of the iso-classification process (eq. 22, 31),
       :math:`(\Delta\lambda, \Delta\gamma) = \alpha\,(-\partial_\gamma C, \partial_\lambda C)`,
       both ways from :math:`\theta^*`: *exact*, Euler steps :math:`\theta \leftarrow \theta +
       \theta_\lambda \Delta\lambda + \theta_\gamma \Delta\gamma` with Lemma 5's derivatives at the
       current :math:`\theta` and no re-minimization; *finite differences*, the rates from
       :func:`finite_difference_tangents` at ``relative_steps[0]``, then re-minimization at the
       new multipliers (the practical process of Remark 7, minimized exactly). ``alpha`` defaults
       to the value that moves :math:`\lambda` by ``relative_rate`` :math:`\cdot \lambda` on the
       first exact step.

    Each :class:`PathPoint` carries Lemma 5's :math:`\partial C` at the point next to the
    derivatives the path stepped with, and the smallest eigenvalue of :math:`\nabla^2 J_\kappa`:
    the Euler path drifts off the surface (its :math:`\|\nabla J_\kappa\|` grows), and the
    re-minimizing path jumps to another local minimum where the one it follows ends (a fold,
    where that eigenvalue falls to 0 and :math:`\theta_\lambda` diverges); both show there.

    Example (a quadratic surface, where both are exact up to :math:`O(h^2)`)::

        >>> functionals = lambda t: ((t**2).sum() / 2, ((t - 1) ** 2).sum() / 2,
        ...                          ((t - 2) ** 2).sum() / 2)
        >>> result = compare_dynamics(functionals, torch.zeros(2, dtype=torch.float64), 1.0, 2.0,
        ...                           relative_steps=(1e-3,), steps=2)
        >>> max(result.tangents[0].relative_differences.values()) < 1e-5
        True
    """
    check_positive_integer("steps", steps)
    if not relative_steps:
        raise ValueError("relative_steps must name at least one relative step")
    start = _require(
        minimize_free_energy(
            functionals, theta0, lambda_, gamma, weight_decay=weight_decay, **minimization
        ),
        f"at the start (lambda={lambda_}, gamma={gamma})",
    )
    chunk_size = minimization.get("chunk_size", 256)
    options = {
        "weight_decay": weight_decay,
        "solver": solver,
        "cg_tolerance": cg_tolerance,
        "cg_max_iterations": cg_max_iterations,
        "chunk_size": chunk_size,
    }
    exact = exact_tangents(functionals, start.theta, lambda_, gamma, **options)
    check = None
    if check_conjugate_gradient:
        dense = dense_tangents(
            functionals,
            start.theta,
            lambda_,
            gamma,
            weight_decay=weight_decay,
            chunk_size=chunk_size,
        )
        iterative = exact_tangents(
            functionals, start.theta, lambda_, gamma, **{**options, "solver": "conjugate_gradient"}
        )
        check = ConjugateGradientCheck(
            tuple(solve.iterations for solve in iterative.solves),
            tuple(solve.relative_residual for solve in iterative.solves),
            _relative(iterative.theta_lambda, dense.theta_lambda),
            _relative(iterative.theta_gamma, dense.theta_gamma),
            {
                label: _relative(iterative.derivatives[name][i], dense.derivatives[name][i])
                for label, name, i in _labels()
            },
        )

    comparisons = []
    for relative_step in relative_steps:
        finite = finite_difference_tangents(
            functionals,
            start.theta,
            lambda_,
            gamma,
            relative_step,
            weight_decay=weight_decay,
            **minimization,
        )
        comparisons.append(
            TangentComparison(relative_step, tangent_differences(finite, exact), finite)
        )

    if alpha is None:
        alpha = relative_rate * lambda_ / abs(exact.derivatives["classification"][1])
    check_positive("alpha", alpha)

    point = {"weight_decay": weight_decay, "chunk_size": chunk_size}
    exact_path = []
    theta, multipliers, tangents = start.theta, (lambda_, gamma), exact
    for step in range(steps + 1):
        if step > 0:
            tangents = exact_tangents(functionals, theta, *multipliers, **options)
        used = tangents.derivatives["classification"] if step < steps else None
        exact_path.append(
            _point(functionals, theta, multipliers, **point, exact=tangents, used=used)
        )
        if step < steps:
            d_lambda, d_gamma = conserving_rates(*used, alpha)
            theta = theta + tangents.theta_lambda * d_lambda + tangents.theta_gamma * d_gamma
            multipliers = _moved(multipliers, d_lambda, d_gamma, "exact")

    finite_path = []
    theta, multipliers = start.theta, (lambda_, gamma)
    for step in range(steps + 1):
        if step == 0:
            finite, here = comparisons[0].finite_difference, exact
        else:
            result = _require(
                minimize_free_energy(
                    functionals, theta, *multipliers, weight_decay=weight_decay, **minimization
                ),
                f"at step {step} of the finite-difference path",
            )
            theta = result.theta
            here = exact_tangents(functionals, theta, *multipliers, **options)
            if step < steps:
                finite = finite_difference_tangents(
                    functionals,
                    theta,
                    *multipliers,
                    relative_steps[0],
                    weight_decay=weight_decay,
                    **minimization,
                )
        used = finite.derivatives["classification"] if step < steps else None
        finite_path.append(_point(functionals, theta, multipliers, **point, exact=here, used=used))
        if step < steps:
            d_lambda, d_gamma = conserving_rates(*used, alpha)
            multipliers = _moved(multipliers, d_lambda, d_gamma, "finite-difference")

    path_differences = {
        field.rstrip("_"): max(
            abs(getattr(a, field) - getattr(b, field))
            for a, b in zip(exact_path, finite_path, strict=True)
        )
        for field in ("lambda_", "gamma", "rate", "distortion", "classification")
    }
    return DynamicsComparison(
        start,
        exact,
        check,
        comparisons,
        alpha,
        exact_path,
        finite_path,
        path_differences,
    )


def tangent_differences(
    finite: FiniteDifferenceTangents, exact: SurfaceTangents
) -> dict[str, float]:
    r"""Relative differences :math:`|x_{fd} - x| / |x|` of the six derivatives (keys
    ``"dR/dlambda"`` … ``"dC/dgamma"``) and :math:`\|\theta_{fd} - \theta\| / \|\theta\|` of
    ``"theta_lambda"``, ``"theta_gamma"``; NaN where the exact value is zero."""
    differences = {
        label: _relative(finite.derivatives[name][index], exact.derivatives[name][index])
        for label, name, index in _labels()
    }
    differences["theta_lambda"] = _relative(finite.theta_lambda, exact.theta_lambda)
    differences["theta_gamma"] = _relative(finite.theta_gamma, exact.theta_gamma)
    return differences


def _moved(multipliers, d_lambda: float, d_gamma: float, path: str) -> tuple[float, float]:
    moved = (multipliers[0] + d_lambda, multipliers[1] + d_gamma)
    check_positive(f"lambda_ along the {path} path", moved[0])
    check_positive(f"gamma along the {path} path", moved[1])
    return moved


def report(
    num_examples: int = 200,
    latent_dim: int = 2,
    hidden: int = 8,
    num_components: int = 1,
    lambda_: float = 0.5,
    gamma: float = 5.0,
    weight_decay: float = 1e-2,
    relative_steps: tuple[float, ...] = (0.02, 0.01),
    steps: int = 5,
    relative_rate: float = 0.02,
    warm_start_iterations: int = 3000,
    max_iterations: int = 400,
    gradient_tolerance: float = 1e-9,
    cg_max_iterations: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    r"""Experiment 3 at a report size: :func:`compare_dynamics` on :func:`small_digits_surface`,
    as a JSON-ready dictionary: the model's size, the minimum reached (:math:`\|\nabla J_\kappa\|`,
    the extreme eigenvalues of :math:`\nabla^2 J_\kappa`, and of :math:`\nabla^2 J =
    \nabla^2 J_\kappa - \kappa I`), the conjugate-gradient check, the tangents' relative
    differences per relative step :math:`h`, both paths, their differences and the drift of
    :math:`C` along each, and the wall time.

    The first minimization runs ``warm_start_iterations`` of L-BFGS from the module's
    initialization, then Newton; every later one (finite-difference sides, the path) starts from
    a nearby minimum and runs Newton only. The defaults (a single-component marginal, see the
    module's note) took about 14 minutes on one shared CPU core, 6 of them for the first minimum.
    """
    began = time.perf_counter()
    surface = small_digits_surface(num_examples, latent_dim, hidden, num_components, seed)
    minimization = {"gradient_tolerance": gradient_tolerance, "max_iterations": max_iterations}
    start = minimize_free_energy(
        surface,
        surface.initial(),
        lambda_,
        gamma,
        weight_decay=weight_decay,
        warm_start_iterations=warm_start_iterations,
        **minimization,
    )
    _require(start, "from the initialization")
    first = time.perf_counter() - began
    comparison = compare_dynamics(
        surface,
        start.theta,
        lambda_,
        gamma,
        relative_steps=relative_steps,
        steps=steps,
        relative_rate=relative_rate,
        weight_decay=weight_decay,
        cg_max_iterations=cg_max_iterations,
        **minimization,
    )
    minimum = comparison.minimum
    unregularized = free_energy_objective(surface, lambda_, gamma)
    sides = [side for item in comparison.tangents for side in item.finite_difference.sides]
    exact_path, finite_path = comparison.exact_path, comparison.finite_difference_path
    check = comparison.conjugate_gradient
    return {
        "model": {
            "parameters": surface.size,
            "examples": num_examples,
            "latent_dim": latent_dim,
            "hidden": hidden,
            "num_components": num_components,
            "lambda": lambda_,
            "gamma": gamma,
            "weight_decay": weight_decay,
        },
        "minimum": {
            "gradient_norm": minimum.gradient_norm,
            "smallest_eigenvalue": minimum.smallest_eigenvalue,
            "largest_eigenvalue": minimum.largest_eigenvalue,
            "smallest_eigenvalue_without_weight_decay": minimum.smallest_eigenvalue - weight_decay,
            "gradient_norm_without_weight_decay": float(
                torch.func.grad(unregularized)(minimum.theta).norm()
            ),
            "newton_iterations": start.iterations,
            "seconds": first,
            **_values(surface, minimum.theta),
        },
        "exact_derivatives": comparison.exact.derivatives,
        "dense_solve_relative_residuals": [s.relative_residual for s in comparison.exact.solves],
        "conjugate_gradient": None if check is None else check._asdict(),
        "tangent_relative_differences": {
            str(item.relative_step): item.relative_differences for item in comparison.tangents
        },
        "finite_difference_sides": {
            "largest_gradient_norm": max(side.gradient_norm for side in sides),
            "smallest_eigenvalue": min(side.smallest_eigenvalue for side in sides),
            "newton_iterations": [side.iterations for side in sides],
        },
        "alpha": comparison.alpha,
        "exact_path": [point._asdict() for point in exact_path],
        "finite_difference_path": [point._asdict() for point in finite_path],
        "finite_difference_path_derivative_differences": [
            [
                _relative(estimate, value)
                for estimate, value in zip(
                    point.classification_derivatives,
                    point.exact_classification_derivatives,
                    strict=True,
                )
            ]
            for point in finite_path[:-1]
        ],
        "path_differences": comparison.path_differences,
        "classification_drift": {
            "exact": exact_path[-1].classification - exact_path[0].classification,
            "finite_difference": finite_path[-1].classification - finite_path[0].classification,
        },
        "seconds": time.perf_counter() - began,
    }
