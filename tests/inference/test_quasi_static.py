"""Quasi-static processes (paper 002) on quadratic functionals, where the equilibrium surface is
known in closed form: theta*(lambda, gamma) = -(A_R + lambda A_D + gamma A_C)^{-1}
(a_R + lambda a_D + gamma a_C). References: the closed-form surface differentiated by autograd
(through the linear solve), finite differences of F, and the first law."""

from __future__ import annotations

import math

import pytest
import torch
from thermossl.inference.quasi_static import (
    conjugate_gradient,
    conserving_rates,
    data_tangent,
    equilibrium_tangents,
    geodesic_transfer_rates,
    hessian_vector_product,
    rise_and_anneal,
)

DTYPE = torch.float64
P = 6


def _spd(generator, scale=1.0):
    m = torch.randn(P, P, generator=generator, dtype=DTYPE)
    return scale * (m @ m.T / P + 0.5 * torch.eye(P, dtype=DTYPE))


class Quadratic:
    """R, D, C = 1/2 theta^T A_X theta + a_X^T theta + c_X, with SPD A_X."""

    def __init__(self, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.A = {name: _spd(g) for name in ("rate", "distortion", "classification")}
        self.a = {name: torch.randn(P, generator=g, dtype=DTYPE) for name in self.A}

    def functionals(self, theta):
        return tuple(
            0.5 * theta @ self.A[n] @ theta + self.a[n] @ theta
            for n in ("rate", "distortion", "classification")
        )

    def equilibrium(self, lambda_, gamma):
        A = self.A["rate"] + lambda_ * self.A["distortion"] + gamma * self.A["classification"]
        b = self.a["rate"] + lambda_ * self.a["distortion"] + gamma * self.a["classification"]
        return -torch.linalg.solve(A, b)

    def free_energy(self, lambda_, gamma):
        rate, distortion, classification = self.functionals(self.equilibrium(lambda_, gamma))
        return rate + lambda_ * distortion + gamma * classification


def test_conjugate_gradient_solves_an_spd_system_and_reports_its_residual():
    g = torch.Generator().manual_seed(0)
    A, b = _spd(g), torch.randn(P, generator=g, dtype=DTYPE)
    result = conjugate_gradient(lambda v: A @ v, b, tolerance=1e-12)
    assert torch.allclose(result.solution, torch.linalg.solve(A, b), rtol=1e-10)
    assert result.relative_residual <= 1e-11 and result.iterations <= P + 1


def test_hessian_vector_product_equals_the_dense_hessian():
    quadratic = Quadratic(1)
    theta = torch.randn(P, dtype=DTYPE, generator=torch.Generator().manual_seed(2))
    vector = torch.randn(P, dtype=DTYPE, generator=torch.Generator().manual_seed(3))

    def objective(t):
        r, d, c = quadratic.functionals(t)
        return r + 2.0 * d + 3.0 * c

    dense = torch.func.hessian(objective)(theta)
    assert torch.allclose(hessian_vector_product(objective, theta, vector), dense @ vector)


@pytest.mark.parametrize("lambda_, gamma", [(0.5, 1.0), (2.0, 7.0)])
def test_lemma_5_tangents_are_the_derivatives_of_the_closed_form_surface(lambda_, gamma):
    quadratic = Quadratic(4)
    theta = quadratic.equilibrium(lambda_, gamma)
    tangents = equilibrium_tangents(quadratic.functionals, theta, lambda_, gamma, tolerance=1e-13)
    expected_lambda = torch.func.jacfwd(lambda l: quadratic.equilibrium(l, gamma))(
        torch.tensor(lambda_, dtype=DTYPE)
    )
    expected_gamma = torch.func.jacfwd(lambda c: quadratic.equilibrium(lambda_, c))(
        torch.tensor(gamma, dtype=DTYPE)
    )
    assert torch.allclose(tangents.theta_lambda, expected_lambda, rtol=1e-9, atol=1e-12)
    assert torch.allclose(tangents.theta_gamma, expected_gamma, rtol=1e-9, atol=1e-12)


def test_free_energy_hessian_is_symmetric_negative_and_matches_finite_differences():
    """F_ab from the tangents against central second differences of the closed-form F(lambda,
    gamma) (step h: truncation O(h^2) ~ 1e-6 relative), and the envelope D = F_lambda, C = F_gamma."""
    quadratic, lambda_, gamma, h = Quadratic(5), 1.3, 2.1, 1e-3
    tangents = equilibrium_tangents(
        quadratic.functionals, quadratic.equilibrium(lambda_, gamma), lambda_, gamma
    )
    hessian = tangents.free_energy_hessian
    F = quadratic.free_energy
    f_ll = (F(lambda_ + h, gamma) - 2 * F(lambda_, gamma) + F(lambda_ - h, gamma)) / h**2
    f_gg = (F(lambda_, gamma + h) - 2 * F(lambda_, gamma) + F(lambda_, gamma - h)) / h**2
    f_lg = (
        F(lambda_ + h, gamma + h)
        - F(lambda_ + h, gamma - h)
        - F(lambda_ - h, gamma + h)
        + F(lambda_ - h, gamma - h)
    ) / (4 * h**2)
    expected = torch.tensor([[f_ll, f_lg], [f_lg, f_gg]], dtype=DTYPE)
    assert torch.allclose(hessian, expected, rtol=1e-4, atol=1e-7)
    assert torch.allclose(hessian, hessian.T, rtol=1e-10)
    assert bool((torch.linalg.eigvalsh(hessian) <= 0).all())
    _, distortion, classification = quadratic.functionals(quadratic.equilibrium(lambda_, gamma))
    assert float((F(lambda_ + h, gamma) - F(lambda_ - h, gamma)) / (2 * h)) == pytest.approx(
        float(distortion), rel=1e-5
    )
    assert float((F(lambda_, gamma + h) - F(lambda_, gamma - h)) / (2 * h)) == pytest.approx(
        float(classification), rel=1e-5
    )


def test_first_law_along_the_tangents():
    """dR = -lambda dD - gamma dC along any direction of the surface (Remark 1)."""
    quadratic, lambda_, gamma = Quadratic(6), 0.8, 3.0
    tangents = equilibrium_tangents(
        quadratic.functionals, quadratic.equilibrium(lambda_, gamma), lambda_, gamma
    )
    for index in (0, 1):
        rate = tangents.derivatives["rate"][index]
        other = lambda_ * tangents.derivatives["distortion"][index]
        other += gamma * tangents.derivatives["classification"][index]
        assert rate == pytest.approx(-other, rel=1e-9)


def test_iso_classification_keeps_c_while_r_and_d_move_and_r_dot_is_minus_lambda_d_dot():
    """Euler steps of eq. 20 with rates from eq. 22: C's drift is O(dt) (halves with dt) while D
    and R change by O(1); dR/dD = -lambda along the path (eq. 29)."""
    quadratic = Quadratic(7)

    def run(dt, duration=1.0):
        lambda_, gamma = 1.0, 2.0
        theta = quadratic.equilibrium(lambda_, gamma)
        start = [float(x) for x in quadratic.functionals(theta)]
        for step in range(round(duration / dt)):
            tangents = equilibrium_tangents(quadratic.functionals, theta, lambda_, gamma)
            lambda_dot, gamma_dot = conserving_rates(
                *tangents.derivatives["classification"], alpha=1.0
            )
            if step == 0:  # on the surface: Rdot = -lambda Ddot - gamma Cdot, Cdot = 0
                rates = (lambda_dot, gamma_dot)
                r_dot = sum(tangents.derivatives["rate"][i] * rates[i] for i in (0, 1))
                d_dot = sum(tangents.derivatives["distortion"][i] * rates[i] for i in (0, 1))
                assert r_dot == pytest.approx(-lambda_ * d_dot, rel=1e-8)
            theta = theta + dt * (
                tangents.theta_lambda * lambda_dot + tangents.theta_gamma * gamma_dot
            )
            lambda_, gamma = lambda_ + dt * lambda_dot, gamma + dt * gamma_dot
        end = [float(x) for x in quadratic.functionals(theta)]
        return start, end, (lambda_, gamma)

    drifts = []
    for dt in (0.02, 0.01):
        start, end, _ = run(dt)
        drifts.append(abs(end[2] - start[2]))
        assert abs(end[1] - start[1]) > 50 * drifts[-1]  # D moved far more than C
    assert 1.7 < drifts[0] / drifts[1] < 2.3, drifts


def test_data_tangent_is_the_derivative_of_the_mixture_equilibrium():
    """theta*(t) for J(t) = (1 - t) J_s + t J_t in closed form, differentiated by autograd."""
    source, target = Quadratic(8), Quadratic(9)
    lambda_, gamma, t = 1.0, 2.0, 0.3

    def mixture_equilibrium(s):
        A = sum(
            w * (q.A["rate"] + lambda_ * q.A["distortion"] + gamma * q.A["classification"])
            for w, q in ((1 - s, source), (s, target))
        )
        b = sum(
            w * (q.a["rate"] + lambda_ * q.a["distortion"] + gamma * q.a["classification"])
            for w, q in ((1 - s, source), (s, target))
        )
        return -torch.linalg.solve(A, b)

    theta = mixture_equilibrium(torch.tensor(t, dtype=DTYPE))
    theta_t, _, derivatives = data_tangent(
        source.functionals, target.functionals, theta, lambda_, gamma, t
    )
    expected = torch.func.jacfwd(mixture_equilibrium)(torch.tensor(t, dtype=DTYPE))
    assert torch.allclose(theta_t, expected, rtol=1e-9, atol=1e-12)

    def classification_at(s):
        point = mixture_equilibrium(s)
        return (1 - s) * source.functionals(point)[2] + s * target.functionals(point)[2]

    expected_c = torch.func.grad(classification_at)(torch.tensor(t, dtype=DTYPE))
    assert derivatives["classification"] == pytest.approx(float(expected_c), rel=1e-8)


def test_geodesic_rates_solve_eq_30():
    source, target = Quadratic(10), Quadratic(11)
    lambda_, gamma, t, slope = 1.0, 2.0, 0.5, -0.7
    theta = source.equilibrium(lambda_, gamma)  # any point: eq. 30 is a linear system
    _, tangents, derivatives = data_tangent(
        source.functionals, target.functionals, theta, lambda_, gamma, t
    )
    lambda_dot, gamma_dot = geodesic_transfer_rates(
        tangents.derivatives, derivatives, lambda_, slope
    )
    d = tangents.derivatives
    c_dot = d["classification"][0] * lambda_dot + d["classification"][1] * gamma_dot
    assert c_dot + derivatives["classification"] == pytest.approx(0.0, abs=1e-10)
    d_dot = d["distortion"][0] * lambda_dot + d["distortion"][1] * gamma_dot
    d_dot += derivatives["distortion"]
    assert d_dot == pytest.approx(slope * derivatives["rate"] / (1 + slope * lambda_), rel=1e-9)


def test_rise_and_anneal_peaks_at_two_sevenths_and_integrates_as_a_beta_function():
    total = 7000
    values = [rise_and_anneal(step, total, peak=1.0) for step in range(total + 1)]
    assert max(values) == pytest.approx(1.0) and values.index(max(values)) == 2000
    # the integral of s^2 (1 - s)^5 is B(3, 6) = 2! 5! / 8!
    integral = sum(values) / total * (2 / 7) ** 2 * (5 / 7) ** 5
    assert integral == pytest.approx(
        math.factorial(2) * math.factorial(5) / math.factorial(8), rel=1e-6
    )


def _zeros():
    return torch.zeros(P, dtype=DTYPE)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: rise_and_anneal(8, 7, 1.0), "step"),
        (lambda: rise_and_anneal(0, 0, 1.0), "total"),
        (lambda: equilibrium_tangents(Quadratic(0).functionals, _zeros(), -1.0, 1.0), "lambda_"),
        (lambda: equilibrium_tangents(Quadratic(0).functionals, _zeros(), 1.0, 0.0), "gamma"),
        (
            lambda: equilibrium_tangents(Quadratic(0).functionals, _zeros(), 1.0, 1.0, damping=-1),
            "damping",
        ),
        (
            lambda: data_tangent(
                Quadratic(0).functionals, Quadratic(1).functionals, _zeros(), 1, 1, 2
            ),
            "t must",
        ),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
