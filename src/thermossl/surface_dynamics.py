r"""Experiment 3: Lemma 5's exact dynamics against finite differences, on a small digits model.

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

* :func:`compare_dynamics`: the six derivatives and :math:`\theta_\lambda, \theta_\gamma` both ways,
  and a short iso-classification process run both ways, as a :class:`DynamicsComparison`;
* :func:`report`: :func:`compare_dynamics` at a report size, as a JSON-ready dictionary (the
  README's "Exact Lemma 5 against finite differences").

Its pieces live in two modules:

* :mod:`thermossl.inference.trust_region`:
  :func:`~thermossl.inference.trust_region.minimize_free_energy` reaches a strict local minimum
  to a tight gradient norm by Newton's method with an exact trust region (a dense Hessian,
  affordable for :math:`P \lesssim 2000`);
* :mod:`thermossl.surface_derivatives`: the small digits model
  (:func:`~thermossl.surface_derivatives.small_digits_surface`), Lemma 5 by a dense solve
  (:func:`~thermossl.surface_derivatives.dense_tangents`) and
  :func:`~thermossl.surface_derivatives.finite_difference_tangents`: central differences, each
  side re-minimized from :math:`\theta^*` (Remark 7's way, with exact minimization).

Both ways minimize :math:`J_\kappa = J + \frac\kappa2 \|\theta\|^2`, not :math:`J`: the digits free
energy has no stationary point, and the weight decay :math:`\kappa` makes one (the warning of
:mod:`thermossl.surface_derivatives`).

.. note:: Two more obstacles, met at the report's size. (i) With a mixture marginal
    (``num_components > 1``) a component can shrink onto a few latent codes that the encoder lines
    up, its scale :math:`\to 0` and :math:`R \to -\infty`; a weight decay of :math:`10^{-2}` does
    not stop it, so :func:`report` uses one Gaussian component. (ii) :math:`A + \kappa I` is
    ill-conditioned (eigenvalues from :math:`\sim 10^{-3}` to :math:`\sim 10^{5}`): conjugate
    gradients stopped at :math:`P` iterations are far from converged, so the comparisons use a
    dense solve (:func:`~thermossl.surface_derivatives.dense_tangents`) and report the conjugate
    gradients' distance from it.
"""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

import torch
from torch import Tensor

from thermossl._validation import check_positive, check_positive_integer
from thermossl.inference.quasi_static import (
    Functionals,
    SurfaceTangents,
    conserving_rates,
    free_energy_objective,
)
from thermossl.inference.trust_region import (
    MinimizationResult,
    dense_hessian,
    minimize_free_energy,
    require_converged,
)
from thermossl.surface_derivatives import (
    FiniteDifferenceTangents,
    dense_tangents,
    exact_tangents,
    finite_difference_tangents,
    functional_values,
    relative_difference,
    small_digits_surface,
    tangent_differences,
)

__all__ = [
    "ConjugateGradientCheck",
    "DynamicsComparison",
    "PathPoint",
    "TangentComparison",
    "compare_dynamics",
    "report",
]


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

    1. :math:`\theta^*` = :func:`~thermossl.inference.trust_region.minimize_free_energy` from
       ``theta0`` (keyword arguments ``minimization``); it must converge.
    2. Exact tangents :math:`\theta_\lambda = -(A + \kappa I)^{-1} \nabla D`,
       :math:`\theta_\gamma = -(A + \kappa I)^{-1} \nabla C`
       (:func:`~thermossl.surface_derivatives.exact_tangents` with ``solver``); with
       ``check_conjugate_gradient`` also
       :func:`~thermossl.inference.quasi_static.equilibrium_tangents`' conjugate gradients, whose
       residuals and relative distance from the dense solve are reported. For each relative step
       :func:`~thermossl.surface_derivatives.finite_difference_tangents`: the relative
       differences of the six derivatives :math:`\partial_{\lambda,\gamma}\{R, D, C\}` and of
       :math:`\theta_\lambda, \theta_\gamma`.
    3. ``steps`` steps of the iso-classification process (eq. 22, 31),
       :math:`(\Delta\lambda, \Delta\gamma) = \alpha\,(-\partial_\gamma C, \partial_\lambda C)`,
       both ways from :math:`\theta^*`: *exact*, Euler steps :math:`\theta \leftarrow \theta +
       \theta_\lambda \Delta\lambda + \theta_\gamma \Delta\gamma` with Lemma 5's derivatives at the
       current :math:`\theta` and no re-minimization; *finite differences*, the rates from
       :func:`~thermossl.surface_derivatives.finite_difference_tangents` at
       ``relative_steps[0]``, then re-minimization at the new multipliers (the practical process
       of Remark 7, minimized exactly). ``alpha`` defaults to the value that moves
       :math:`\lambda` by ``relative_rate`` :math:`\cdot \lambda` on the first exact step.

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
    start = require_converged(
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
        dense = (
            exact
            if solver == "dense"
            else dense_tangents(
                functionals,
                start.theta,
                lambda_,
                gamma,
                weight_decay=weight_decay,
                chunk_size=chunk_size,
            )
        )
        iterative = exact_tangents(
            functionals, start.theta, lambda_, gamma, **{**options, "solver": "conjugate_gradient"}
        )
        differences = tangent_differences(iterative, dense)
        check = ConjugateGradientCheck(
            tuple(solve.iterations for solve in iterative.solves),
            tuple(solve.relative_residual for solve in iterative.solves),
            differences.pop("theta_lambda"),
            differences.pop("theta_gamma"),
            differences,
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
        minimum = start if step == 0 else None  # Euler steps leave the surface: computed
        exact_path.append(
            _point(
                functionals, theta, multipliers, **point, exact=tangents, used=used, minimum=minimum
            )
        )
        if step < steps:
            d_lambda, d_gamma = conserving_rates(*used, alpha)
            theta = theta + tangents.theta_lambda * d_lambda + tangents.theta_gamma * d_gamma
            multipliers = _moved(multipliers, d_lambda, d_gamma, "exact")

    finite_path = []
    theta, multipliers = start.theta, (lambda_, gamma)
    for step in range(steps + 1):
        if step == 0:
            finite, here, result = comparisons[0].finite_difference, exact, start
        else:
            result = require_converged(
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
        finite_path.append(
            _point(functionals, theta, multipliers, **point, exact=here, used=used, minimum=result)
        )
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


def _point(
    functionals: Functionals,
    theta: Tensor,
    multipliers: tuple[float, float],
    weight_decay: float,
    chunk_size: int,
    exact: SurfaceTangents,
    used: tuple[float, float] | None,
    minimum: MinimizationResult | None = None,
) -> PathPoint:
    """The path point at ``theta``; :math:`\\|\nabla J_\\kappa\\|` and the smallest eigenvalue
    come from ``minimum`` when the point is a minimization's result (its ``theta``), else are
    computed (a dense Hessian)."""
    if minimum is not None:
        gradient_norm, smallest = minimum.gradient_norm, minimum.smallest_eigenvalue
    else:
        objective = free_energy_objective(functionals, *multipliers, weight_decay)
        gradient_norm = float(torch.func.grad(objective)(theta).norm())
        smallest = float(torch.linalg.eigvalsh(dense_hessian(objective, theta, chunk_size))[0])
    return PathPoint(
        *multipliers,
        *functional_values(functionals, theta).values(),
        gradient_norm,
        smallest,
        exact.derivatives["classification"],
        (math.nan, math.nan) if used is None else used,
    )


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
    r"""Experiment 3 at a report size: :func:`compare_dynamics` on
    :func:`~thermossl.surface_derivatives.small_digits_surface`, as a JSON-ready dictionary: the
    model's size, the minimum reached (:math:`\|\nabla J_\kappa\|`, the extreme eigenvalues of
    :math:`\nabla^2 J_\kappa`, and of :math:`\nabla^2 J = \nabla^2 J_\kappa - \kappa I`), the
    conjugate-gradient check, the tangents' relative differences per relative step :math:`h`,
    both paths, their differences and the drift of :math:`C` along each, and the wall time.

    The first minimization runs ``warm_start_iterations`` of L-BFGS from the model's
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
    require_converged(start, "from the initialization")
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
            **functional_values(surface, minimum.theta),
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
                relative_difference(estimate, value)
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
