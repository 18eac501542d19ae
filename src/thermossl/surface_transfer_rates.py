r"""The multipliers of the geodesic iso-classification transfer, from finite differences (paper
002, §4.3).

Along the transfer the data change with :math:`t` (eq. 23) and :math:`(\lambda, \gamma)` must
change so that the model stays on the equilibrium surface, keeps its classification loss
:math:`C` and moves along a straight line of slope :math:`k = dD/dR` in the :math:`(R, D)` plane.
Everything here is arithmetic on the finite-difference derivatives that
:func:`~thermossl.surface_transfer.transfer_derivatives` measures (keys ``"dR/dlambda"``,
``"dD/dgamma"``, ``"dC/dt"``, …):

* the *predictor*, eq. 30's rates (:func:`transfer_rates`);
* the *corrector*, a Newton step of :math:`(\log\lambda, \log\gamma)` back onto the line and
  the level :math:`C = C_0` (:func:`path_correction`, with :func:`path_residuals`): the two together are
  a predictor–corrector continuation of the path (Allgower & Georg, *Introduction to Numerical
  Continuation Methods*, ch. 2), which the paper's open-loop eq. 30 lacks;
* two ways to choose :math:`k`, which §4.3 leaves open: the chord to the target's equilibrium
  (:func:`chord_slope`) and the least relative change of the multipliers at :math:`t = 0`
  (:func:`least_change_slope`).
"""

from __future__ import annotations

import math
from typing import Any

from thermossl.inference.quasi_static import geodesic_transfer_rates

__all__ = [
    "chord_slope",
    "derivative_pairs",
    "least_change_slope",
    "path_correction",
    "path_residuals",
    "transfer_rates",
]


def derivative_pairs(derivatives: dict[str, Any]) -> dict[str, tuple[float, float]]:
    r"""The flat finite differences (``"dR/dlambda"``, …) as the pairs
    :math:`(\partial_\lambda X, \partial_\gamma X)` keyed ``rate``, ``distortion``,
    ``classification`` that :class:`~thermossl.inference.quasi_static.SurfaceTangents` carries.

    Example::

        >>> derivative_pairs({f"d{f}/d{m}": 1.0 for f in "RDC" for m in ("lambda", "gamma")})
        {'rate': (1.0, 1.0), 'distortion': (1.0, 1.0), 'classification': (1.0, 1.0)}
    """
    return {
        name: (derivatives[f"d{symbol}/dlambda"], derivatives[f"d{symbol}/dgamma"])
        for name, symbol in (("rate", "R"), ("distortion", "D"), ("classification", "C"))
    }


def transfer_rates(
    derivatives: dict[str, Any], lambda_: float, slope: float
) -> tuple[float, float]:
    r""":math:`(\dot\lambda, \dot\gamma)` of eq. 30 (paper 002, §4.3) from finite-difference
    derivatives,

    .. math::

        D_\lambda\dot\lambda + D_\gamma\dot\gamma = \frac{k\,\partial_t R}{1 + k\lambda}
        - \partial_t D, \qquad
        C_\lambda\dot\lambda + C_\gamma\dot\gamma = -\partial_t C .

    Example: with :math:`k = 0` the distortion is held, :math:`\dot D = 0`::

        >>> derivatives = {"dR/dlambda": 1.0, "dR/dgamma": 0.1, "dD/dlambda": -10.0,
        ...                "dD/dgamma": 0.5, "dC/dlambda": 0.1, "dC/dgamma": -0.02,
        ...                "dR/dt": 3.0, "dD/dt": 2.0, "dC/dt": 0.5}
        >>> lambda_dot, gamma_dot = transfer_rates(derivatives, lambda_=0.5, slope=0.0)
        >>> distortion_dot = -10.0 * lambda_dot + 0.5 * gamma_dot + 2.0
        >>> classification_dot = 0.1 * lambda_dot - 0.02 * gamma_dot + 0.5
        >>> abs(distortion_dot) < 1e-12, abs(classification_dot) < 1e-12
        (True, True)
    """
    time_derivatives = {
        "rate": derivatives["dR/dt"],
        "distortion": derivatives["dD/dt"],
        "classification": derivatives["dC/dt"],
    }
    return geodesic_transfer_rates(derivative_pairs(derivatives), time_derivatives, lambda_, slope)


def path_residuals(
    values: dict[str, float], start: dict[str, float], slope: float
) -> tuple[float, float]:
    r"""How far a point is from the transfer's path: the straight line of slope :math:`k`
    through the start in the :math:`(R, D)` plane, and the level :math:`C = C_0` (in logarithm),

    .. math::

        r_{line} = (D - D_0) - k\,(R - R_0), \qquad r_C = \log(C / C_0) .

    Example::

        >>> line, level = path_residuals({"R": 2.0, "D": 5.0, "C": 0.2},
        ...                              {"R": 1.0, "D": 3.0, "C": 0.1}, slope=2.0)
        >>> line, round(level, 6)
        (0.0, 0.693147)
    """
    line = (values["D"] - start["D"]) - slope * (values["R"] - start["R"])
    return line, math.log(values["C"] / start["C"])


def path_correction(
    derivatives: dict[str, Any],
    slope: float,
    residuals: tuple[float, float],
    where: dict[str, float],
    largest_factor: float = 2.0,
) -> tuple[float, float]:
    r"""The corrector: the Newton step :math:`(\Delta\log\lambda, \Delta\log\gamma)` that zeroes
    both :func:`path_residuals` to first order,

    .. math::

        \begin{pmatrix} \lambda (D_\lambda - k R_\lambda) & \gamma (D_\gamma - k R_\gamma) \\
        \lambda C_\lambda / C & \gamma C_\gamma / C \end{pmatrix}
        \begin{pmatrix} \Delta\log\lambda \\ \Delta\log\gamma \end{pmatrix}
        = -\begin{pmatrix} r_{line} \\ \log(C/C_0) \end{pmatrix},

    with the surface's derivatives at fixed :math:`t` taken at ``where`` (its ``lambda``,
    ``gamma`` and ``C``), and reused for later corrections (a chord Newton step). The
    logarithms make the chord last: on digits :math:`C` falls roughly as :math:`1/\gamma`, so
    :math:`C_\gamma` is 13 times smaller at :math:`\gamma = 44` than at 5, while its elasticity
    :math:`\gamma C_\gamma / C` is :math:`-0.97` and :math:`-0.75` (README). Both components
    are scaled down alike so that neither multiplier changes by more than ``largest_factor`` (a
    damped step).

    :raises ValueError: when the Jacobian is singular (the line and the level are parallel).

    Example: a pure :math:`C` residual is removed by :math:`\gamma` when :math:`C` does not
    depend on :math:`\lambda` and the line does not depend on :math:`\gamma`; with
    :math:`C \propto 1/\gamma`, halving :math:`C` doubles :math:`\gamma`::

        >>> derivatives = {"dR/dlambda": 0.0, "dD/dlambda": -10.0, "dC/dlambda": 0.0,
        ...                "dR/dgamma": 0.0, "dD/dgamma": 0.0, "dC/dgamma": -0.02}
        >>> where = {"lambda": 0.5, "gamma": 5.0, "C": 0.1}
        >>> d_lambda, d_gamma = path_correction(derivatives, 2.0, (0.0, math.log(2)), where)
        >>> d_lambda, round(math.exp(d_gamma), 9)
        (0.0, 2.0)
        >>> _, d_gamma = path_correction(derivatives, 2.0, (0.0, math.log(8)), where)
        >>> round(math.exp(d_gamma), 9)  # damped to a factor of 2
        2.0
    """
    if not largest_factor > 1:
        raise ValueError(f"largest_factor must be > 1, got {largest_factor!r}")
    lambda_, gamma, classification = where["lambda"], where["gamma"], where["C"]
    line_lambda = lambda_ * (derivatives["dD/dlambda"] - slope * derivatives["dR/dlambda"])
    line_gamma = gamma * (derivatives["dD/dgamma"] - slope * derivatives["dR/dgamma"])
    level_lambda = lambda_ * derivatives["dC/dlambda"] / classification
    level_gamma = gamma * derivatives["dC/dgamma"] / classification
    determinant = line_lambda * level_gamma - line_gamma * level_lambda
    if determinant == 0 or not math.isfinite(determinant):
        raise ValueError(
            "the corrector's Jacobian is singular: the line and the level C = C0 do not cross"
        )
    line, level = residuals
    d_lambda = -(level_gamma * line - line_gamma * level) / determinant
    d_gamma = -(-level_lambda * line + line_lambda * level) / determinant
    largest = max(abs(d_lambda), abs(d_gamma))
    limit = math.log(largest_factor)
    scale = min(1.0, limit / largest) if largest > 0 else 1.0
    return scale * d_lambda, scale * d_gamma


def chord_slope(start: dict[str, float], end: dict[str, float]) -> float:
    r"""The slope :math:`k = (D_1 - D_0)/(R_1 - R_0)` of the chord from the source's equilibrium
    :math:`(R_0, D_0)` to a target equilibrium :math:`(R_1, D_1)`: the straight path of §4.3
    aimed at the target (the run takes the target trained from scratch at the starting
    multipliers).

    Example::

        >>> chord_slope({"R": 9.0, "D": 70.0}, {"R": 10.0, "D": 75.0})
        5.0
    """
    rise, run = end["D"] - start["D"], end["R"] - start["R"]
    if run == 0:
        raise ValueError("the two equilibria have the same rate: the chord is vertical in (R, D)")
    return rise / run


def least_change_slope(derivatives: dict[str, float], lambda_: float, gamma: float) -> float:
    r"""The slope :math:`k = dD/dR` of the smallest relative change of the multipliers that keeps
    :math:`C`: minimize :math:`(\dot\lambda/\lambda)^2 + (\dot\gamma/\gamma)^2` subject to
    :math:`C_\lambda\dot\lambda + C_\gamma\dot\gamma + c = 0`. With :math:`a = C_\lambda\lambda`,
    :math:`b = C_\gamma\gamma` and :math:`c = \partial_t C`,

    .. math::

        \dot\lambda = -\lambda\,\frac{c\, a}{a^2 + b^2}, \quad
        \dot\gamma = -\gamma\,\frac{c\, b}{a^2 + b^2}, \quad
        \dot D = D_\lambda\dot\lambda + D_\gamma\dot\gamma + \partial_t D, \quad
        k = \frac{\dot D}{\partial_t R - \lambda \dot D},

    the :math:`k` for which eq. 30 returns exactly these rates (its first row reads
    :math:`k\,\partial_t R/(1 + k\lambda) = \dot D`, paper 002 §4.3).

    .. warning:: On digits 0–4 → 5–9 this gives :math:`k \approx -1/\lambda_0`, next to eq. 30's
        pole :math:`1 + k\lambda = 0`: :math:`\lambda` then grows geometrically along the path
        (README, paper 002 section). :func:`chord_slope` is the run's default.

    Example::

        >>> derivatives = {"dC/dlambda": 0.1, "dC/dgamma": -0.02, "dC/dt": 0.5,
        ...                "dD/dlambda": -10.0, "dD/dgamma": 0.5, "dD/dt": 2.0,
        ...                "dR/dlambda": 1.0, "dR/dgamma": 0.1, "dR/dt": 3.0}
        >>> slope = least_change_slope(derivatives, lambda_=0.5, gamma=5.0)
        >>> slope, [round(rate, 9) for rate in transfer_rates(derivatives, 0.5, slope)]
        (-2.75, [-1.0, 20.0])
    """
    a = derivatives["dC/dlambda"] * lambda_
    b = derivatives["dC/dgamma"] * gamma
    c = derivatives["dC/dt"]
    if a * a + b * b == 0:
        raise ValueError("C does not change with lambda or gamma here: no rates can keep it")
    lambda_dot, gamma_dot = -lambda_ * c * a / (a * a + b * b), -gamma * c * b / (a * a + b * b)
    distortion_dot = (
        derivatives["dD/dlambda"] * lambda_dot
        + derivatives["dD/dgamma"] * gamma_dot
        + derivatives["dD/dt"]
    )
    denominator = derivatives["dR/dt"] - lambda_ * distortion_dot
    if denominator == 0:
        raise ValueError("the least-change path is vertical in (R, D); pass an explicit slope")
    return distortion_dot / denominator
