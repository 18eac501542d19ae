r"""The laws of TherML's equilibrium surface, checked by finite differences (paper 003, §3).

With :math:`\rho = 1`, the equilibrium objective is the lowest value of eq. 34,

.. math::

    J^*(\delta, \gamma, \sigma) = \min J = \min\, (R + \delta D + \gamma C + \sigma S)
    \quad (= -\sigma \log \mathcal{Z}, \text{ eq. 35}),

a minimum over functions affine in the multipliers, hence **concave**. Its derivatives are the
functionals at the minimizer (the envelope theorem),

.. math::

    \frac{\partial J^*}{\partial \delta} = D, \qquad \frac{\partial J^*}{\partial \gamma} = C,
    \qquad \frac{\partial J^*}{\partial \sigma} = S,

which is the first law (eq. 26), :math:`dR = -\gamma\, dC - \delta\, dD - \sigma\, dS`, since
:math:`dR = dJ^* - d(\delta D) - d(\gamma C) - d(\sigma S)`. Its Hessian
:math:`H = \partial(D, C, S) / \partial(\delta, \gamma, \sigma)` is therefore symmetric (the
Maxwell relations: :math:`\partial D / \partial \gamma = \partial C / \partial \delta`, …) and
negative semidefinite. In the paper's natural variables :math:`R(C, D, S)`, eq. 27 reads
:math:`(\partial \delta / \partial C)_{D,S} = (\partial \gamma / \partial D)_{C,S}`, entries of
:math:`H^{-1}`.

.. warning:: **Sign of eq. 30.** With the first law as printed (eq. 26), the free rate whose
    differential is eq. 29's up to one sign is :math:`F = R + \sigma S`:
    :math:`dF = -\gamma\, dC - \delta\, dD + S\, d\sigma`. Eq. 28 writes :math:`F = R - \sigma S`,
    whose differential is not a function of :math:`(C, D, \sigma)` alone. The Maxwell relation
    that follows is :math:`(\partial S / \partial C)_{\sigma, D} = -(\partial \gamma / \partial
    \sigma)_{C, D}`: eq. 30 without its minus sign. :func:`maxwell_relations` reports both sides
    as measured, so the sign is checked on numbers, not assumed.

Every derivative is a central difference of re-equilibrated points at two steps, :math:`h` and
:math:`h/2`; the :class:`Estimate` is Richardson's extrapolation of the two, with the size of
their difference as its error bar (the truncation and re-equilibration errors it contains). The
equilibrium itself is the caller's: an ``equilibrate(multipliers) -> SurfacePoint`` callable, for
instance :class:`thermossl.therml_laws.ToyEquilibrium`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import NamedTuple

import torch
from thermossl.objectives.therml import Multipliers
from torch import Tensor

__all__ = [
    "VARIABLES",
    "EnvelopeCheck",
    "Estimate",
    "FirstLaw",
    "SurfaceDerivatives",
    "SurfacePoint",
    "first_law",
    "maxwell_relations",
    "surface_derivatives",
]

#: The multipliers the surface is differentiated in, and the functional conjugate to each.
VARIABLES = ("delta", "gamma", "sigma")
_CONJUGATES = ("distortion", "classification", "entropy")


class SurfacePoint(NamedTuple):
    """An equilibrium: the multipliers, :math:`J^*` and the functionals there (per example)."""

    multipliers: Multipliers
    value: float
    rate: float
    distortion: float
    classification: float
    entropy: float

    def conjugates(self) -> Tensor:
        r""":math:`(D, C, S)`, the functionals conjugate to :math:`(\delta, \gamma, \sigma)`."""
        return torch.tensor([getattr(self, name) for name in _CONJUGATES], dtype=torch.float64)


Equilibrate = Callable[[Multipliers], SurfacePoint]


class Estimate(NamedTuple):
    """A finite-difference result: Richardson's extrapolation from steps h and h/2, and the size
    of the two steps' difference as its error bar."""

    value: float
    error: float

    @classmethod
    def from_steps(cls, coarse: float, fine: float) -> Estimate:
        """For central differences (error :math:`\\propto h^2`): ``(4 fine - coarse) / 3``."""
        return cls((4.0 * fine - coarse) / 3.0, abs(fine - coarse))


class EnvelopeCheck(NamedTuple):
    r""":math:`\partial J^* / \partial m` against its conjugate functional at the point."""

    variable: str
    derivative: Estimate
    functional: float

    @property
    def residual(self) -> float:
        return self.derivative.value - self.functional


class SurfaceDerivatives(NamedTuple):
    r"""First and second derivatives of :math:`J^*` at one point.

    :ivar hessian: ``[3, 3]``, rows :math:`(D, C, S)`, columns :math:`(\delta, \gamma, \sigma)`:
        ``hessian[i, j]`` :math:`= \partial F_i / \partial m_j` (Richardson values).
    :ivar hessian_error: ``[3, 3]`` error bars of those entries.
    :ivar hessians: the central differences at steps ``(h, h/2)``, for derived quantities.
    """

    at: SurfacePoint
    envelope: tuple[EnvelopeCheck, ...]
    hessian: Tensor
    hessian_error: Tensor
    hessians: tuple[Tensor, Tensor]

    def asymmetry(self) -> tuple[Tensor, Tensor]:
        r""":math:`H - H^\top` and its error bar (the two entries' bars added in quadrature)."""
        return self.hessian - self.hessian.T, self.hessian_error.hypot(self.hessian_error.T)

    def eigenvalues(self) -> Estimate:
        """The largest eigenvalue of the symmetrized Hessian (concavity: <= 0)."""
        coarse, fine = (float(torch.linalg.eigvalsh((h + h.T) / 2).max()) for h in self.hessians)
        return Estimate.from_steps(coarse, fine)


def _shifted(multipliers: Multipliers, variable: str, amount: float) -> Multipliers:
    return multipliers._replace(**{variable: getattr(multipliers, variable) + amount})


def surface_derivatives(
    equilibrate: Equilibrate, at: Multipliers, step: float, relative: bool = False
) -> SurfaceDerivatives:
    r"""The envelope relations and the Hessian of :math:`J^*` at ``at``, by central differences.

    Solves :math:`1 + 4 \cdot 3` equilibria: ``at``, and each of :math:`\delta, \gamma, \sigma`
    moved by :math:`\pm h` and :math:`\pm h / 2`, with :math:`h` = ``step``, or
    :math:`h_m` = ``step`` :math:`\cdot\, m` for each multiplier :math:`m` when ``relative``
    (the sensible choice when the multipliers differ in scale: a step of 0.05 is small against
    :math:`\delta = 1` but half of :math:`\sigma = 0.1`).

    :param equilibrate: returns the equilibrium :class:`SurfacePoint` for given multipliers.
    :param Multipliers at: the point; ``rho`` must be 1 and each varied multiplier must stay
        :math:`\ge 0` at the shifted points (``at.m >= step``, or ``at.m > 0`` when relative).
    :param float step: :math:`h > 0` (:math:`< 1` when relative).
    :param bool relative: steps proportional to each multiplier.
    :raises ValueError: for :math:`\rho \ne 1`, a bad step, or a shift below zero.

    Example: :math:`R = \theta^2 / 2`, :math:`D = 1 - \theta` (and :math:`C = S = 0`), so
    :math:`\theta^* = \delta`, :math:`J^* = \delta - \delta^2 / 2` and :math:`\partial D /
    \partial \delta = -1`::

        >>> def equilibrate(m):
        ...     theta = m.delta
        ...     rate, distortion = theta**2 / 2, 1 - theta
        ...     return SurfacePoint(m, rate + m.delta * distortion, rate, distortion, 0.0, 0.0)
        >>> result = surface_derivatives(equilibrate, Multipliers(1.0, 0.5, 0.5, 0.5), 0.1)
        >>> round(result.envelope[0].residual, 12), round(float(result.hessian[0, 0]), 12)
        (0.0, -1.0)
    """
    at = at.checked()
    if at.rho != 1.0:
        raise ValueError(f"the surface J* is taken with rho = 1, got rho = {at.rho}")
    if not (step > 0 and (step < 1 or not relative)):
        raise ValueError(f"step must be > 0 (and < 1 when relative), got {step}")
    for variable in VARIABLES:
        value = getattr(at, variable)
        if (value <= 0) if relative else (value < step):
            raise ValueError(
                f"{variable} = {value} is below the step {step}: the central difference would "
                "need a negative multiplier"
            )
    centre = equilibrate(at)
    slopes_at: list[list[float]] = []
    hessians = []
    for fraction in (1.0, 0.5):
        columns, slopes = [], []
        for variable in VARIABLES:
            h = fraction * step * (getattr(at, variable) if relative else 1.0)
            up = equilibrate(_shifted(at, variable, h))
            down = equilibrate(_shifted(at, variable, -h))
            slopes.append((up.value - down.value) / (2 * h))
            columns.append((up.conjugates() - down.conjugates()) / (2 * h))
        slopes_at.append(slopes)
        hessians.append(torch.stack(columns, dim=1))
    envelope = tuple(
        EnvelopeCheck(variable, Estimate.from_steps(slopes_at[0][i], slopes_at[1][i]), functional)
        for i, (variable, functional) in enumerate(
            zip(VARIABLES, centre.conjugates().tolist(), strict=True)
        )
    )
    coarse, fine = hessians
    return SurfaceDerivatives(
        centre, envelope, (4 * fine - coarse) / 3, (fine - coarse).abs(), (coarse, fine)
    )


def _maxwell(hessian: Tensor) -> dict[str, tuple[float, float]]:
    (dd, dg, ds), (cd, cg, cs), (sd, sg, _) = hessian.tolist()
    inverse = torch.linalg.inv(hessian)  # d(delta, gamma, sigma) / d(D, C, S)
    determinant = dd * cg - dg * cd  # of d(D, C) / d(delta, gamma) at fixed sigma
    return {
        "dD/dgamma = dC/ddelta": (dg, cd),
        "dD/dsigma = dS/ddelta": (ds, sd),
        "dC/dsigma = dS/dgamma": (cs, sg),
        # eq. 27: rows of the inverse are (delta, gamma, sigma), columns (D, C, S)
        "eq. 27: (ddelta/dC)_D,S = (dgamma/dD)_C,S": (float(inverse[0, 1]), float(inverse[1, 0])),
        # eq. 30: at fixed sigma and D, and at fixed C and D (see the module's warning on its sign)
        "eq. 30: (dS/dC)_sigma,D = (dgamma/dsigma)_C,D": (
            (dd * sg - sd * dg) / determinant,
            -(dd * cs - cd * ds) / determinant,
        ),
    }


def maxwell_relations(derivatives: SurfaceDerivatives) -> dict[str, tuple[Estimate, Estimate]]:
    r"""Both sides of the Maxwell relations, from the Hessian at steps :math:`h` and :math:`h/2`.

    The first three are the symmetry of :math:`H`; eq. 27 and eq. 30 are the paper's, in its
    variables. As printed, eq. 30 holds with the opposite sign (module warning): expect its two
    sides to sum to zero, not to agree.

    :returns: ``{relation: (left side, right side)}``.
    """
    coarse, fine = (_maxwell(h) for h in derivatives.hessians)
    return {
        name: tuple(
            Estimate.from_steps(c, f) for c, f in zip(coarse[name], fine[name], strict=True)
        )
        for name in coarse
    }


class FirstLaw(NamedTuple):
    r"""Eq. 26 integrated along a path: :math:`\Delta R` against
    :math:`-\int (\gamma\, dC + \delta\, dD + \sigma\, dS)`."""

    rate_change: float
    work: Estimate
    points: tuple[SurfacePoint, ...]

    @property
    def residual(self) -> float:
        return self.rate_change - self.work.value


def _path_integral(points: list[SurfacePoint]) -> float:
    total = 0.0
    for a, b in itertools.pairwise(points):
        for variable, functional in zip(VARIABLES, _CONJUGATES, strict=True):
            multiplier = (getattr(a.multipliers, variable) + getattr(b.multipliers, variable)) / 2
            total -= multiplier * (getattr(b, functional) - getattr(a, functional))
    return total


def first_law(
    equilibrate: Equilibrate, start: Multipliers, end: Multipliers, num_intervals: int = 8
) -> FirstLaw:
    r"""Check :math:`dR = -\gamma\, dC - \delta\, dD - \sigma\, dS` along the straight path
    ``start`` → ``end`` (:math:`\rho = 1`), equilibrating at ``num_intervals + 1`` points.

    The integral is the trapezoid rule over all points, extrapolated against every other point
    (its error is :math:`O(1/K^2)`); the error bar is the two rules' difference.

    :raises ValueError: for an odd or non-positive ``num_intervals`` or :math:`\rho \ne 1`.

    Example, on :func:`surface_derivatives`'s surface (:math:`dR = \delta\, d\delta`)::

        >>> def equilibrate(m):
        ...     theta = m.delta
        ...     rate, distortion = theta**2 / 2, 1 - theta
        ...     return SurfacePoint(m, rate + m.delta * distortion, rate, distortion, 0.0, 0.0)
        >>> law = first_law(equilibrate, Multipliers(1, 0.2), Multipliers(1, 0.8), 4)
        >>> round(law.rate_change, 6), round(law.residual, 12)
        (0.3, 0.0)
    """
    if num_intervals < 2 or num_intervals % 2:
        raise ValueError(f"num_intervals must be even and >= 2, got {num_intervals}")
    start, end = start.checked(), end.checked()
    if start.rho != 1.0 or end.rho != 1.0:
        raise ValueError("the first law is checked with rho = 1 along the whole path")
    points = []
    for k in range(num_intervals + 1):
        t = k / num_intervals
        multipliers = Multipliers(*(a + t * (b - a) for a, b in zip(start, end, strict=True)))
        points.append(equilibrate(multipliers))
    fine, coarse = _path_integral(points), _path_integral(points[::2])
    return FirstLaw(
        points[-1].rate - points[0].rate, Estimate.from_steps(coarse, fine), tuple(points)
    )
