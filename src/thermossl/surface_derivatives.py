r"""Derivatives of the equilibrium surface, by Lemma 5 and by finite differences, on a small model.

Gao & Chaudhari (paper 002), §3. On the surface :math:`\nabla_\theta J_\kappa = 0` every
functional :math:`X \in \{R, D, C\}` moves with the multipliers as

.. math::

    \frac{\partial X}{\partial\lambda} = \nabla X \cdot \theta_\lambda, \quad
    \frac{\partial X}{\partial\gamma} = \nabla X \cdot \theta_\gamma, \qquad
    [\theta_\lambda, \theta_\gamma] = -(A + \kappa I)^{-1} [\nabla D, \nabla C]
    \quad \text{(Lemma 5, eq. 17–18)},

which the paper estimates by central differences, re-equilibrating on each side (Remark 7). This
module computes both, for functionals given as a callable ``theta -> (R, D, C)``:

* :func:`small_digits_surface`: the digits model's :math:`(R, D, C)` in float64, noise fixed;
* :func:`dense_tangents`: Lemma 5 by a dense solve; :func:`exact_tangents` picks it or the
  conjugate gradients of :func:`~thermossl.inference.quasi_static.equilibrium_tangents`;
* :func:`finite_difference_tangents`: central differences, each side re-minimized from
  :math:`\theta^*` by :func:`~thermossl.inference.trust_region.minimize_free_energy` (Remark 7's
  way, with exact minimization), as :class:`FiniteDifferenceTangents`;
* :func:`tangent_differences`, :func:`relative_difference`: how far apart two estimates are;
  :func:`functional_values`: :math:`R, D, C` as numbers.

:mod:`thermossl.surface_dynamics` compares the two at a minimum and along an iso-classification
process (experiment 3); :mod:`thermossl.inference.trust_region` finds the minima.

.. warning:: **The digits free energy has no stationary point; a weight decay makes one.** A pixel
    that is 0 in every example (the digits' corners: 4 of 64 in the training split, 7 in its first
    300 examples) enters :math:`D` only through :math:`16\, \langle \operatorname{softplus}\, g_j(z)
    \rangle`, so the derivative of :math:`J` in that pixel's decoder bias :math:`b_j` is
    :math:`16 \lambda \langle \sigma(g_j(z)) \rangle > 0` for *every* :math:`\theta`: the infimum is
    approached as :math:`b_j \to -\infty` and :math:`\nabla J = 0` is never reached. (Shifts of
    the classifier's and the mixture's logits and a translation of :math:`z` leave :math:`J`
    invariant besides: null directions of :math:`A` wherever :math:`\nabla J = 0`.) Both ways
    of differentiating the surface here therefore minimize

    .. math::

        J_\kappa(\theta) = R + \lambda D + \gamma C + \tfrac{\kappa}{2} \|\theta\|^2,

    whose Hessian is :math:`A + \kappa I`: exactly ``equilibrium_tangents(..., damping=κ)``, so the
    damping is here the Hessian of the objective both ways track, not an approximation. Lemma
    5 holds for :math:`J_\kappa` unchanged (:math:`\partial \nabla J_\kappa / \partial \lambda =
    \nabla D`); the first law acquires the weight decay's term,
    :math:`dR + \lambda\, dD + \gamma\, dC = -\kappa\, \theta \cdot d\theta`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

from thermossl._validation import check_positive, check_positive_integer
from thermossl.inference.quasi_static import (
    CGResult,
    Functionals,
    SurfaceTangents,
    equilibrium_tangents,
    free_energy_objective,
    functional_gradients,
    surface_tangents,
)
from thermossl.inference.trust_region import (
    MinimizationResult,
    dense_hessian,
    minimize_free_energy,
    require_converged,
)
from thermossl.models.equilibrium_digits import SurfaceFunctionals
from thermossl.models.therml_digits import DigitsWorlds, digits_data

__all__ = [
    "FiniteDifferenceTangents",
    "dense_tangents",
    "exact_tangents",
    "finite_difference_tangents",
    "functional_values",
    "relative_difference",
    "small_digits_surface",
    "tangent_differences",
]

_NAMES = ("rate", "distortion", "classification")


class FiniteDifferenceTangents(NamedTuple):
    r"""Central differences of the re-minimized surface: ``derivatives[X] = (∂X/∂λ, ∂X/∂γ)`` for
    :math:`X` in ``rate, distortion, classification``, :math:`\theta_\lambda, \theta_\gamma`, the
    absolute steps :math:`(h_\lambda, h_\gamma)` and the four side minimizations (λ+, λ−, γ+, γ−)."""

    theta_lambda: Tensor
    theta_gamma: Tensor
    derivatives: dict[str, tuple[float, float]]
    steps: tuple[float, float]
    sides: tuple[MinimizationResult, ...]


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
    Its :math:`J` has a stationary point only with a weight decay (the module's warning).

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


def functional_values(functionals: Functionals, theta: Tensor) -> dict[str, float]:
    r""":math:`R, D, C` at ``theta`` as floats, keyed ``rate``, ``distortion``,
    ``classification`` (no gradients taken).

    Example::

        >>> functional_values(lambda t: (t.sum(), 2 * t.sum(), 3 * t.sum()), torch.ones(2))
        {'rate': 2.0, 'distortion': 4.0, 'classification': 6.0}
    """
    with torch.no_grad():
        return {name: float(value) for name, value in zip(_NAMES, functionals(theta), strict=True)}


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
    :func:`~thermossl.inference.trust_region.dense_hessian`, as a
    :class:`~thermossl.inference.quasi_static.SurfaceTangents` whose ``solves`` carry 0 iterations
    and the solve's relative residual.

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
    gradients = functional_gradients(functionals, theta)
    right = -torch.stack([gradients["distortion"], gradients["classification"]], 1)
    solution = torch.linalg.solve(hessian, right)
    residuals = (right - hessian @ solution).norm(dim=0) / right.norm(dim=0)
    solves = tuple(CGResult(solution[:, i], 0, float(residuals[i])) for i in range(2))
    return surface_tangents(gradients, solution[:, 0], solution[:, 1], solves)


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

    and likewise in :math:`\gamma`, each :math:`\theta^*` re-minimized
    (:func:`~thermossl.inference.trust_region.minimize_free_energy`, keyword arguments
    ``minimization``) from ``theta``, which should be on the surface. The
    truncation error is :math:`O(h^2)`.

    :raises RuntimeError: when a side's minimization does not converge.

    Example: on the quadratic of :func:`~thermossl.inference.trust_region.minimize_free_energy`,
    :math:`D^*(\lambda) =
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
            sides.append(require_converged(result, f"at {name} {'+' if sign > 0 else '-'} h"))
            points.append(result.theta)
            values.append(functional_values(functionals, result.theta))
        tangents[name] = (points[0] - points[1]) / (2 * h)
        differences[name] = {key: (values[0][key] - values[1][key]) / (2 * h) for key in _NAMES}
    derivatives = {key: (differences["lambda"][key], differences["gamma"][key]) for key in _NAMES}
    return FiniteDifferenceTangents(
        tangents["lambda"], tangents["gamma"], derivatives, tuple(steps), tuple(sides)
    )


def tangent_differences(
    finite: FiniteDifferenceTangents | SurfaceTangents, exact: SurfaceTangents
) -> dict[str, float]:
    r"""Relative differences :math:`|x_{fd} - x| / |x|` of the six derivatives (keys
    ``"dR/dlambda"`` … ``"dC/dgamma"``) and :math:`\|\theta_{fd} - \theta\| / \|\theta\|` of
    ``"theta_lambda"``, ``"theta_gamma"``; NaN where the exact value is zero (by
    :func:`relative_difference`). ``finite`` may also be a
    :class:`~thermossl.inference.quasi_static.SurfaceTangents`: conjugate gradients against a
    dense solve.

    Example: the quadratic of :func:`finite_difference_tangents`, where :math:`C = 0`::

        >>> functionals = lambda t: ((t**2).sum() / 2, ((t - 1) ** 2).sum() / 2, 0 * t.sum())
        >>> theta = torch.full((3,), 0.5, dtype=torch.float64)
        >>> finite = finite_difference_tangents(functionals, theta, 1.0, 1.0, 1e-3)
        >>> differences = tangent_differences(finite, dense_tangents(functionals, theta, 1.0, 1.0))
        >>> differences["dD/dlambda"] < 1e-5, math.isnan(differences["dC/dlambda"])
        (True, True)
    """
    differences = {
        label: relative_difference(finite.derivatives[name][index], exact.derivatives[name][index])
        for label, name, index in _labels()
    }
    differences["theta_lambda"] = relative_difference(finite.theta_lambda, exact.theta_lambda)
    differences["theta_gamma"] = relative_difference(finite.theta_gamma, exact.theta_gamma)
    return differences


def relative_difference(estimate: float | Tensor, reference: float | Tensor) -> float:
    """:math:`|x - y| / |y|` (norms for vectors); NaN when the reference is zero.

    Example::

        >>> relative_difference(3.0, 2.0), relative_difference(1.0, 0.0)
        (0.5, nan)
        >>> relative_difference(torch.tensor([3.0, 4.0]), torch.tensor([0.0, 8.0]))
        0.625
    """
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
