"""The surface laws' finite differences against a surface whose derivatives are closed-form.

Quadratic functionals :math:`F_k(\\theta) = \\tfrac12 \\theta^\\top A_k \\theta + b_k^\\top \\theta
+ c_k` for :math:`k \\in (R, D, C, S)`: :math:`J = R + \\delta D + \\gamma C + \\sigma S` has the
minimizer :math:`\\theta^* = -A(m)^{-1} b(m)`, and the Hessian of :math:`J^*` is
:math:`-g_i^\\top A^{-1} g_j` with :math:`g_i = \\nabla F_i(\\theta^*)` (implicit differentiation).
"""

from __future__ import annotations

import pytest
import torch
from thermossl.objectives.therml import Multipliers
from thermossl.objectives.therml_laws import (
    SurfacePoint,
    first_law,
    maxwell_relations,
    surface_derivatives,
)

AT = Multipliers(1.0, 0.8, 0.6, 0.4)


class QuadraticSurface:
    def __init__(self, dimension: int = 5, seed: int = 0, ignore_sigma: bool = False):
        generator = torch.Generator().manual_seed(seed)

        def positive(scale: float) -> torch.Tensor:
            root = torch.randn(dimension, dimension, generator=generator, dtype=torch.float64)
            return scale * (
                root @ root.T / dimension + 0.5 * torch.eye(dimension, dtype=torch.float64)
            )

        self.A = [positive(1.0), positive(0.7), positive(0.5), positive(0.3)]
        self.b = [
            torch.randn(dimension, generator=generator, dtype=torch.float64) for _ in range(4)
        ]
        self.c = [1.0, 2.0, 0.5, 0.25]
        self.ignore_sigma = ignore_sigma
        self.calls = 0

    def weights(self, m: Multipliers) -> list[float]:
        return [1.0, m.delta, m.gamma, m.sigma]

    def minimizer(self, m: Multipliers) -> torch.Tensor:
        weights = self.weights(m._replace(sigma=0.0) if self.ignore_sigma else m)
        A = sum(w * a for w, a in zip(weights, self.A, strict=True))
        b = sum(w * v for w, v in zip(weights, self.b, strict=True))
        return -torch.linalg.solve(A, b)

    def functional(self, k: int, theta: torch.Tensor) -> float:
        return float(0.5 * theta @ self.A[k] @ theta + self.b[k] @ theta + self.c[k])

    def __call__(self, m: Multipliers) -> SurfacePoint:
        self.calls += 1
        theta = self.minimizer(m)
        values = [self.functional(k, theta) for k in range(4)]
        total = sum(w * v for w, v in zip(self.weights(m), values, strict=True))
        return SurfacePoint(m, total, *values)

    def exact_hessian(self, m: Multipliers) -> torch.Tensor:
        theta = self.minimizer(m)
        A = sum(w * a for w, a in zip(self.weights(m), self.A, strict=True))
        gradients = torch.stack([self.A[k] @ theta + self.b[k] for k in (1, 2, 3)])
        return -gradients @ torch.linalg.solve(A, gradients.T)


@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
def test_envelope_and_hessian_match_the_closed_form(relative):
    surface = QuadraticSurface()
    result = surface_derivatives(surface, AT, step=0.05, relative=relative)
    assert surface.calls == 13
    for check in result.envelope:
        assert check.derivative.error < 1e-2  # the bar is informative, not vacuous
        assert abs(check.residual) <= check.derivative.error
    exact = surface.exact_hessian(AT)
    assert result.hessian_error.max() < 1e-2
    assert torch.all((result.hessian - exact).abs() <= result.hessian_error + 1e-12)
    asymmetry, bar = result.asymmetry()
    assert torch.all(asymmetry.abs() <= bar + 1e-12)
    largest = result.eigenvalues()
    assert largest.value < 0 and float(torch.linalg.eigvalsh(exact).max()) < 0


def test_maxwell_relations_and_the_sign_of_eq_30():
    relations = maxwell_relations(surface_derivatives(QuadraticSurface(), AT, step=0.05))
    for name, (left, right) in relations.items():
        bar = left.error + right.error + 1e-12
        if name.startswith("eq. 30"):
            assert abs(left.value + right.value) <= bar  # holds with a minus sign
            assert abs(left.value - right.value) > 10 * bar  # not as printed
        else:
            assert abs(left.value - right.value) <= bar


def test_a_surface_that_is_not_an_equilibrium_breaks_the_symmetry():
    """Minimizing without the S term, yet reporting J with it: dC/dsigma != dS/dgamma."""
    result = surface_derivatives(QuadraticSurface(ignore_sigma=True), AT, step=0.05)
    asymmetry, bar = result.asymmetry()
    assert float(asymmetry[1, 2].abs()) > 100 * float(bar[1, 2])
    assert abs(result.envelope[2].residual) < 1e-9  # the envelope in sigma alone cannot tell


def test_first_law_along_a_path():
    surface = QuadraticSurface()
    end = Multipliers(1.0, 1.4, 0.3, 0.9)
    law = first_law(surface, AT, end, num_intervals=8)
    assert len(law.points) == 9
    exact_change = surface(end).rate - surface(AT).rate
    assert law.rate_change == pytest.approx(exact_change, rel=1e-12)
    assert abs(law.rate_change) > 10 * law.work.error  # the check has resolution
    assert abs(law.residual) <= law.work.error


@pytest.mark.parametrize(
    "at, step, message",
    [
        (Multipliers(0.5, 1.0, 1.0, 1.0), 0.1, "rho = 1"),
        (AT, 0.0, "step must be > 0"),
        (Multipliers(1.0, 0.05, 1.0, 1.0), 0.1, "delta = 0.05 is below the step"),
        (Multipliers(1.0, 1.0, 1.0, -1.0), 0.1, "sigma must be a finite number >= 0"),
    ],
)
def test_bad_input(at, step, message):
    with pytest.raises(ValueError, match=message):
        surface_derivatives(QuadraticSurface(), at, step)


def test_first_law_bad_input():
    with pytest.raises(ValueError, match="even"):
        first_law(QuadraticSurface(), AT, AT, num_intervals=3)
