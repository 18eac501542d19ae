r"""Quasi-static processes on the equilibrium surface of :math:`J = R + \lambda D + \gamma C`.

Gao & Chaudhari (paper 002). Parameters :math:`\theta` are *in equilibrium* at :math:`(\lambda,
\gamma)` when :math:`\nabla_\theta J(\theta, \lambda, \gamma) = 0` (eq. 15). Keeping that true while
the multipliers move (eq. 16) gives Lemma 5's dynamics,

.. math::

    \dot\theta = \theta_\lambda \dot\lambda + \theta_\gamma \dot\gamma, \qquad
    \theta_\lambda = A^{-1} b_\lambda = -A^{-1} \nabla_\theta D, \qquad
    \theta_\gamma = A^{-1} b_\gamma = -A^{-1} \nabla_\theta C, \qquad A = \nabla^2_\theta J,
    \quad \text{(eq. 17–18)}

computed here with Hessian-vector products and conjugate gradients (Remark 6), never forming
:math:`A`. Along the surface every functional :math:`X \in \{R, D, C\}` then has the derivatives
:math:`\partial X / \partial\lambda = \nabla X \cdot \theta_\lambda` and :math:`\partial X /
\partial\gamma = \nabla X \cdot \theta_\gamma`; with :math:`F(\lambda, \gamma) = \min J`,
:math:`D = \partial F / \partial\lambda` and :math:`C = \partial F / \partial\gamma`, so the
Hessian of :math:`F` is :math:`-[\nabla D, \nabla C]^\top A^{-1} [\nabla D, \nabla C]`: symmetric and
negative semidefinite (Lemma 3).

* :func:`conserving_rates`: :math:`(\dot\lambda, \dot\gamma)` that keep a functional :math:`G` fixed,
  :math:`\dot\lambda = -\alpha\, \partial G/\partial\gamma`, :math:`\dot\gamma = \alpha\, \partial
  G/\partial\lambda`; :math:`G = C` is the iso-classification process (eq. 20–22, Remark 7),
  :math:`G = C + R/\beta` Remark 8's.
* :func:`data_tangent`: for data :math:`p(x, t) = (1 - t) p_s + t p_t` (eq. 23),
  :math:`\theta_t = -A^{-1} (\nabla J_{target} - \nabla J_{source})` (Lemma 9, eq. 25).
* :func:`geodesic_transfer_rates`: the :math:`(\dot\lambda, \dot\gamma)` of eq. 30.
* :func:`rise_and_anneal`: the equilibration learning rate :math:`\eta \propto (t/T)^2 (1 -
  t/T)^5` of the authors' code.

This module takes the functionals as a callable of a flat parameter vector and imports nothing from
``objectives`` or ``models``.

.. warning:: :math:`A` is positive definite only at a strict minimum. Away from it (or for a
    network with flat directions) conjugate gradients may meet negative curvature; ``damping``
    :math:`\delta > 0` solves :math:`(A + \delta I) x = b` instead, and :class:`CGResult` reports
    the residual reached, so a failed solve is visible rather than silent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from thermossl._validation import check_positive, check_positive_integer

__all__ = [
    "CGResult",
    "SurfaceTangents",
    "conjugate_gradient",
    "conserving_rates",
    "data_tangent",
    "equilibrium_tangents",
    "free_energy_objective",
    "functional_gradients",
    "geodesic_transfer_rates",
    "hessian_vector_product",
    "rise_and_anneal",
    "surface_tangents",
]

#: ``functionals(theta) -> (R, D, C)``, three scalar tensors.
Functionals = Callable[[Tensor], tuple[Tensor, Tensor, Tensor]]


class CGResult(NamedTuple):
    """The solution of :math:`A x = b`, the iterations taken and the final residual norm
    :math:`\\|b - A x\\|` relative to :math:`\\|b\\|`."""

    solution: Tensor
    iterations: int
    relative_residual: float


class SurfaceTangents(NamedTuple):
    r"""Lemma 5 at one point: :math:`\theta_\lambda, \theta_\gamma`, the functionals' gradients
    and their derivatives along the surface.

    ``derivatives[X]`` is :math:`(\partial X/\partial\lambda, \partial X/\partial\gamma)` for
    :math:`X` in ``"rate"``, ``"distortion"``, ``"classification"``; ``free_energy_hessian`` is
    :math:`\partial^2 F` as ``[[F_λλ, F_λγ], [F_γλ, F_γγ]]`` (rows: :math:`D, C`).
    """

    theta_lambda: Tensor
    theta_gamma: Tensor
    gradients: dict[str, Tensor]
    derivatives: dict[str, tuple[float, float]]
    free_energy_hessian: Tensor
    solves: tuple[CGResult, CGResult]


def hessian_vector_product(objective: Callable[[Tensor], Tensor], theta: Tensor, vector: Tensor):
    r""":math:`\nabla^2 f(\theta)\, v` by forward-over-reverse differentiation (Pearlmutter 1994).

    Example::

        >>> f = lambda t: (t ** 3).sum()
        >>> hessian_vector_product(f, torch.tensor([1.0, 2.0]), torch.tensor([1.0, 1.0]))
        tensor([ 6., 12.])
    """
    return torch.func.jvp(torch.func.grad(objective), (theta,), (vector,))[1]


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor],
    b: Tensor,
    tolerance: float = 1e-10,
    max_iterations: int | None = None,
) -> CGResult:
    r"""Solve :math:`A x = b` for a symmetric positive definite :math:`A` given as ``matvec``.

    Stops when :math:`\|b - Ax\| \le \text{tolerance}\, \|b\|` or after ``max_iterations``
    (default: the dimension). Meeting non-positive curvature :math:`p^\top A p \le 0` stops the
    iteration with the last iterate; :attr:`CGResult.relative_residual` tells how far it got.

    Example::

        >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
        >>> b = torch.tensor([1.0, 2.0], dtype=torch.float64)
        >>> result = conjugate_gradient(lambda v: A @ v, b)
        >>> torch.allclose(A @ result.solution, b), result.iterations
        (True, 2)
    """
    check_positive("tolerance", tolerance)
    max_iterations = b.numel() if max_iterations is None else max_iterations
    check_positive_integer("max_iterations", max_iterations)
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    b_norm = float(b.norm())
    if b_norm == 0:
        return CGResult(x, 0, 0.0)
    r_squared = r.dot(r)
    iterations = 0
    for iterations in range(1, max_iterations + 1):
        Ap = matvec(p)
        curvature = p.dot(Ap)
        if curvature <= 0:
            iterations -= 1
            break
        step = r_squared / curvature
        x = x + step * p
        r = r - step * Ap
        new_r_squared = r.dot(r)
        if float(new_r_squared.sqrt()) <= tolerance * b_norm:
            r_squared = new_r_squared
            break
        p = r + (new_r_squared / r_squared) * p
        r_squared = new_r_squared
    residual = float((b - matvec(x)).norm()) / b_norm
    return CGResult(x, iterations, residual)


def free_energy_objective(
    functionals: Functionals, lambda_: float, gamma: float, weight_decay: float = 0.0
) -> Callable[[Tensor], Tensor]:
    r""":math:`\theta \mapsto J_\kappa = R + \lambda D + \gamma C + \frac{\kappa}{2}\|\theta\|^2`
    (eq. 8 plus a weight decay :math:`\kappa \ge 0`, whose Hessian is :math:`A + \kappa I`; why
    the digits model needs it: the warning of :mod:`thermossl.surface_derivatives`).

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


def _hessian_solver(
    objective: Callable[[Tensor], Tensor],
    theta: Tensor,
    damping: float,
    tolerance: float,
    max_iterations: int | None,
) -> Callable[[Tensor], CGResult]:
    """``b -> (A + damping I)^{-1} b`` by conjugate gradients, A the Hessian of ``objective``."""

    def matvec(vector: Tensor) -> Tensor:
        return hessian_vector_product(objective, theta, vector) + damping * vector

    return lambda b: conjugate_gradient(matvec, b, tolerance, max_iterations)


def functional_gradients(functionals: Functionals, theta: Tensor) -> dict[str, Tensor]:
    r""":math:`\nabla R, \nabla D, \nabla C` at ``theta``, keyed ``rate``, ``distortion``,
    ``classification``.

    Example::

        >>> functional_gradients(lambda t: (t.sum(), (t**2).sum(), 0 * t.sum()), torch.ones(2))
        {'rate': tensor([1., 1.]), 'distortion': tensor([2., 2.]), 'classification': tensor([0., 0.])}
    """
    jacobian = torch.func.jacrev(lambda t: torch.stack(functionals(t)))(theta)
    return dict(zip(("rate", "distortion", "classification"), jacobian, strict=True))


def surface_tangents(
    gradients: dict[str, Tensor],
    theta_lambda: Tensor,
    theta_gamma: Tensor,
    solves: tuple[CGResult, CGResult],
) -> SurfaceTangents:
    r"""Lemma 5's tangents with what follows from them: :math:`\partial X/\partial\lambda =
    \nabla X \cdot \theta_\lambda`, :math:`\partial X/\partial\gamma = \nabla X \cdot
    \theta_\gamma` for every functional, and the Hessian of :math:`F` (rows :math:`D, C`), however
    :math:`\theta_\lambda, \theta_\gamma` were solved for."""
    derivatives = {
        name: (float(gradient.dot(theta_lambda)), float(gradient.dot(theta_gamma)))
        for name, gradient in gradients.items()
    }
    hessian = torch.tensor(
        [derivatives["distortion"], derivatives["classification"]], dtype=theta_lambda.dtype
    )
    return SurfaceTangents(theta_lambda, theta_gamma, gradients, derivatives, hessian, solves)


def equilibrium_tangents(
    functionals: Functionals,
    theta: Tensor,
    lambda_: float,
    gamma: float,
    *,
    damping: float = 0.0,
    tolerance: float = 1e-10,
    max_iterations: int | None = None,
) -> SurfaceTangents:
    r"""Lemma 5's :math:`\theta_\lambda = -A^{-1}\nabla D` and :math:`\theta_\gamma =
    -A^{-1}\nabla C` at equilibrium parameters ``theta`` (eq. 17–18), by conjugate gradients on
    Hessian-vector products of :math:`J = R + \lambda D + \gamma C`.

    :param functionals: ``theta -> (R, D, C)``, each a scalar; a deterministic function of
        ``theta`` (fix the encoder's noise: common random numbers).
    :param torch.Tensor theta: ``[P]`` parameters, assumed in equilibrium
        (:math:`\nabla_\theta J \approx 0`).
    :param float lambda_: :math:`\lambda > 0`.
    :param float gamma: :math:`\gamma > 0`.
    :param float damping: :math:`\delta \ge 0`; solves :math:`(A + \delta I)x = b`.

    Example: a quadratic surface, where :math:`\theta^*(\lambda) = -\lambda / (1 + \lambda)` and
    :math:`\theta_\lambda = -(1 + \lambda)^{-2}`::

        >>> functionals = lambda t: ((t ** 2).sum() / 2, (t ** 2).sum() / 2 + t.sum(), 0 * t.sum())
        >>> tangents = equilibrium_tangents(functionals, torch.tensor([-0.5], dtype=torch.float64), 1.0, 1.0)
        >>> float(tangents.theta_lambda[0])
        -0.25
    """
    check_positive("lambda_", lambda_)
    check_positive("gamma", gamma)
    if not damping >= 0:
        raise ValueError(f"damping must be >= 0, got {damping!r}")
    theta = theta.detach()
    solve = _hessian_solver(
        free_energy_objective(functionals, lambda_, gamma),
        theta,
        damping,
        tolerance,
        max_iterations,
    )
    gradients = functional_gradients(functionals, theta)
    solves = tuple(solve(-gradients[name]) for name in ("distortion", "classification"))
    return surface_tangents(gradients, solves[0].solution, solves[1].solution, solves)


def conserving_rates(
    derivative_lambda: float, derivative_gamma: float, alpha: float
) -> tuple[float, float]:
    r"""Rates :math:`(\dot\lambda, \dot\gamma) = \alpha\,(-\partial G/\partial\gamma,\
    \partial G/\partial\lambda)` along which :math:`\dot G = 0` to first order (eq. 22).

    With :math:`G = C` this is the iso-classification process (Remark 7): since :math:`C =
    \partial F / \partial \gamma`, :math:`\dot\lambda = -\alpha F_{\gamma\gamma} \ge 0`.

    Example::

        >>> conserving_rates(0.2, -0.5, alpha=1.0)
        (0.5, 0.2)
    """
    return -alpha * derivative_gamma, alpha * derivative_lambda


def data_tangent(
    functionals_source: Functionals,
    functionals_target: Functionals,
    theta: Tensor,
    lambda_: float,
    gamma: float,
    t: float,
    *,
    damping: float = 0.0,
    tolerance: float = 1e-10,
    max_iterations: int | None = None,
) -> tuple[Tensor, SurfaceTangents, dict[str, float]]:
    r"""Lemma 9 for :math:`p(x, t) = (1 - t)\, p_s + t\, p_t` (eq. 23–25).

    :math:`J(t) = (1 - t) J_s + t J_t`, so :math:`\partial_t \nabla J = \nabla J_t - \nabla J_s` and
    :math:`\theta_t = -A_t^{-1}(\nabla J_t - \nabla J_s)`. Returns :math:`\theta_t`, the tangents
    :math:`\theta_\lambda, \theta_\gamma` at :math:`t`, and each functional's total
    :math:`\partial X/\partial t = (X_t - X_s) + \nabla X \cdot \theta_t` at fixed multipliers.
    """
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t must lie in [0, 1], got {t!r}")

    def mixture(theta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        source, target = functionals_source(theta), functionals_target(theta)
        return tuple((1 - t) * s + t * u for s, u in zip(source, target, strict=True))

    tangents = equilibrium_tangents(
        mixture,
        theta,
        lambda_,
        gamma,
        damping=damping,
        tolerance=tolerance,
        max_iterations=max_iterations,
    )
    theta = theta.detach()
    solve = _hessian_solver(
        free_energy_objective(mixture, lambda_, gamma), theta, damping, tolerance, max_iterations
    )
    source_gradient = torch.func.grad(free_energy_objective(functionals_source, lambda_, gamma))(
        theta
    )
    target_gradient = torch.func.grad(free_energy_objective(functionals_target, lambda_, gamma))(
        theta
    )
    theta_t = solve(source_gradient - target_gradient).solution
    with torch.no_grad():
        explicit = [
            float(u - s)
            for s, u in zip(functionals_source(theta), functionals_target(theta), strict=True)
        ]
    names = ("rate", "distortion", "classification")
    time_derivatives = {
        name: explicit[index] + float(tangents.gradients[name].dot(theta_t))
        for index, name in enumerate(names)
    }
    return theta_t, tangents, time_derivatives


def geodesic_transfer_rates(
    derivatives: dict[str, tuple[float, float]],
    time_derivatives: dict[str, float],
    lambda_: float,
    slope: float,
) -> tuple[float, float]:
    r"""The multipliers' rates of the geodesic iso-classification transfer (§4.3, eq. 30):

    .. math::

        \frac{\partial D}{\partial\lambda}\dot\lambda + \frac{\partial D}{\partial\gamma}\dot\gamma
        = \frac{k\, \partial_t R}{1 + k\lambda} - \partial_t D, \qquad
        \frac{\partial C}{\partial\lambda}\dot\lambda + \frac{\partial C}{\partial\gamma}\dot\gamma
        = -\partial_t C,

    with :math:`k = dD/dR` the fixed slope of the straight path in the :math:`(R, D)` plane.
    ``derivatives`` holds the surface derivatives as :class:`SurfaceTangents` does (``"distortion"``
    and ``"classification"`` as :math:`(\partial_\lambda, \partial_\gamma)` pairs), from Lemma 5
    or from finite differences.
    """
    d_lambda, d_gamma = derivatives["distortion"]
    c_lambda, c_gamma = derivatives["classification"]
    matrix = torch.tensor([[d_lambda, d_gamma], [c_lambda, c_gamma]], dtype=torch.float64)
    right = torch.tensor(
        [
            slope * time_derivatives["rate"] / (1 + slope * lambda_)
            - time_derivatives["distortion"],
            -time_derivatives["classification"],
        ],
        dtype=torch.float64,
    )
    rates = torch.linalg.solve(matrix, right)
    return float(rates[0]), float(rates[1])


def rise_and_anneal(step: int, total: int, peak: float) -> float:
    r"""The equilibration learning rate :math:`\eta(t) = \eta_{max}\, (t/T)^2 (1 - t/T)^5 /
    \max_s s^2 (1 - s)^5`: a quick rise from zero to ``peak`` at :math:`t/T = 2/7` and a slow
    anneal back to zero (paper 002, §5.1).

    Example::

        >>> rise_and_anneal(2, 7, peak=1.5e-3), rise_and_anneal(0, 7, 1.0), rise_and_anneal(7, 7, 1.0)
        (0.0015, 0.0, 0.0)
    """
    check_positive_integer("total", total)
    if not 0 <= step <= total:
        raise ValueError(f"step must lie in [0, total], got {step!r}")
    s = step / total
    return peak * (s**2 * (1 - s) ** 5) / ((2 / 7) ** 2 * (5 / 7) ** 5)
