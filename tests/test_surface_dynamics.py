"""Lemma 5 (exact tangents) against finite differences of the re-minimized surface, on a tiny
digits model in float64 (paper 002, §3). References: the finite differences' own O(h^2)
truncation (Richardson), the first law, and a dense solve for the conjugate gradients."""

from __future__ import annotations

import math

import pytest
import torch
from thermossl.inference.quasi_static import equilibrium_tangents, hessian_vector_product
from thermossl.inference.trust_region import (
    dense_hessian,
    free_energy_objective,
    minimize_free_energy,
)

from thermossl.surface_derivatives import (
    dense_tangents,
    exact_tangents,
    finite_difference_tangents,
    small_digits_surface,
)
from thermossl.surface_dynamics import compare_dynamics

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

LAMBDA, GAMMA = 0.5, 5.0
#: The weight decay that makes the tiny model's minimum strict (surface_derivatives' warning); 0.1
#: keeps the latent informative (training accuracy ~0.5 on 40 examples) while conditioning A.
KAPPA = 0.1
TOLERANCE = 1e-10
STEPS = (0.04, 0.02)
NAMES = ("rate", "distortion", "classification")


@pytest.fixture(scope="module")
def surface():
    return small_digits_surface(num_examples=40, latent_dim=2, hidden=3, num_components=1)


@pytest.fixture(scope="module")
def minimum(surface):
    return minimize_free_energy(
        surface,
        surface.initial(),
        LAMBDA,
        GAMMA,
        weight_decay=KAPPA,
        warm_start_iterations=300,
        gradient_tolerance=TOLERANCE,
    )


@pytest.fixture(scope="module")
def exact(surface, minimum):
    return dense_tangents(surface, minimum.theta, LAMBDA, GAMMA, weight_decay=KAPPA)


@pytest.fixture(scope="module")
def finite(surface, minimum):
    return [
        finite_difference_tangents(
            surface,
            minimum.theta,
            LAMBDA,
            GAMMA,
            step,
            weight_decay=KAPPA,
            gradient_tolerance=TOLERANCE,
        )
        for step in STEPS
    ]


def _pairs(finite, exact):
    """(label, finite-difference estimate, exact value) for the six derivatives and the tangents."""
    for name in NAMES:
        for index, multiplier in enumerate(("lambda", "gamma")):
            yield (
                f"d{name}/d{multiplier}",
                finite.derivatives[name][index],
                exact.derivatives[name][index],
            )
    yield "theta_lambda", finite.theta_lambda, exact.theta_lambda
    yield "theta_gamma", finite.theta_gamma, exact.theta_gamma


def _distance(a, b) -> float:
    return float((a - b).norm()) if isinstance(a, torch.Tensor) else abs(a - b)


def test_minimization_reaches_its_tolerance_at_a_positive_definite_hessian(surface, minimum):
    assert minimum.converged
    assert minimum.gradient_norm <= TOLERANCE
    objective = free_energy_objective(surface, LAMBDA, GAMMA, KAPPA)
    assert float(torch.func.grad(objective)(minimum.theta).norm()) == minimum.gradient_norm
    eigenvalues = torch.linalg.eigvalsh(dense_hessian(objective, minimum.theta))
    assert float(eigenvalues[0]) > 0
    assert float(eigenvalues[0]) == pytest.approx(minimum.smallest_eigenvalue, rel=1e-8)


def test_without_weight_decay_the_digits_free_energy_has_no_stationary_point(surface, minimum):
    """A pixel that is 0 in every example pushes its decoder bias down at every theta:
    dJ/db_j = 16 lambda <sigmoid(g_j(z))> > 0 (surface_derivatives' warning)."""
    always_zero = torch.nonzero(surface.pixels.max(0).values == 0).flatten()
    assert always_zero.numel() > 0
    worlds, names = surface.worlds, surface.names
    offset = sum(surface.sizes[: names.index("decoder.2.bias")])
    objective = free_energy_objective(surface, LAMBDA, GAMMA)
    for theta in (surface.initial(), minimum.theta):
        gradient = torch.func.grad(objective)(theta)
        surface.load(theta)
        with torch.no_grad():
            loc, scale = worlds.encoder(surface.pixels)
            logits = worlds.decoder_logits(loc + scale * surface.latent_noise)
        expected = LAMBDA * 16 * torch.sigmoid(logits[:, always_zero]).mean(0)
        assert torch.allclose(gradient[offset + always_zero], expected, rtol=1e-10)
        assert bool((expected > 0).all())
    surface.load(minimum.theta)


def _symmetries(surface, theta):
    """The exact symmetries' directions v(theta), in the flat layout: the softmax's shift (its
    bias, each column of its weights) and the mixture logits' shift, constant, and a translation
    of z, which depends on theta through the decoder's and classifier's input weights."""
    latent = surface.worlds.latent_dim

    def direction(theta, **pieces):
        parameters = surface.unflatten(theta)
        vector = {name: torch.zeros_like(value) for name, value in parameters.items()}
        for name, piece in pieces.items():
            name = name.replace("__", ".")
            vector[name] = vector[name] + (piece(parameters) if callable(piece) else piece)
        return torch.cat([vector[name].flatten() for name in surface.names])

    def unit(name, j, column=True):
        def piece(parameters):
            value = torch.zeros_like(parameters[name])
            if column:
                value[..., j] = 1
            else:
                value[j] = 1
            return value

        return piece

    constant = [
        lambda t: direction(t, classifier__bias=lambda p: torch.ones_like(p["classifier.bias"]))
    ]
    constant += [
        lambda t, j=j: direction(t, classifier__weight=unit("classifier.weight", j))
        for j in range(latent)
    ]
    constant.append(
        lambda t: direction(t, mixture_logits=lambda p: torch.ones_like(p["mixture_logits"]))
    )
    translations = [  # z -> z + e_j: the encoder's location and the marginal move along, the
        # decoder's and the classifier's biases take the move back
        lambda t, j=j: direction(
            t,
            encoder_head__bias=unit("encoder_head.bias", j, column=False),
            mixture_locs=unit("mixture_locs", j),
            decoder__0__bias=lambda p: -p["decoder.0.weight"][:, j],
            classifier__bias=lambda p: -p["classifier.weight"][:, j],
        )
        for j in range(latent)
    ]
    return constant, translations


def test_symmetries_leave_the_free_energy_invariant(surface, minimum):
    """surface_derivatives' warning: J(theta + t v) = J(theta), so A v = -(dv/dtheta)^T grad J:
    zero for the constant directions, and for all of them wherever grad J = 0."""
    objective = free_energy_objective(surface, LAMBDA, GAMMA)
    theta = minimum.theta
    value, gradient = float(objective(theta)), torch.func.grad(objective)(theta)
    scale = float(torch.linalg.matrix_norm(dense_hessian(objective, theta), ord=2))
    constant, translations = _symmetries(surface, theta)
    for field in constant + translations:
        vector = field(theta)
        assert float(objective(theta + 0.3 * vector)) == pytest.approx(value, rel=1e-13)
        product = hessian_vector_product(objective, theta, vector)
        _, pullback = torch.func.vjp(field, theta)
        expected = -pullback(gradient)[0]
        assert float((product - expected).norm()) <= 1e-10 * scale * float(vector.norm())
        if field in constant:
            assert float(expected.norm()) == 0.0


def test_finite_differences_converge_to_lemma_5_at_second_order(exact, finite):
    """Halving h divides the finite differences' error by ~4, and the exact value lies within
    the Richardson estimate of the remaining truncation error, |fd(h) - fd(h/2)| / 3."""
    coarse, fine = finite
    for (label, estimate, value), (_, fine_estimate, _) in zip(
        _pairs(coarse, exact), _pairs(fine, exact), strict=True
    ):
        error, fine_error = _distance(estimate, value), _distance(fine_estimate, value)
        assert 3.6 < error / fine_error < 4.4, (label, error, fine_error)
        richardson = _distance(estimate, fine_estimate) / 3
        assert fine_error <= 1.2 * richardson, (label, fine_error, richardson)
        # Richardson's extrapolation removes the h^2 term: a further order of agreement
        extrapolated = (4 * fine_estimate - estimate) / 3
        assert _distance(extrapolated, value) < 0.1 * fine_error, label


def test_finite_difference_sides_are_strict_minima(finite):
    for tangents in finite:
        for side in tangents.sides:
            assert side.converged and side.gradient_norm <= TOLERANCE
            assert side.smallest_eigenvalue > 0


def test_first_law_along_the_exact_tangents_holds_to_round_off(minimum, exact):
    """dR + lambda dD + gamma dC = -kappa theta . dtheta (the weight decay's term), per multiplier."""
    for index, tangent in enumerate((exact.theta_lambda, exact.theta_gamma)):
        rate, distortion, classification = (exact.derivatives[name][index] for name in NAMES)
        decay = KAPPA * float(minimum.theta.dot(tangent))
        terms = (rate, LAMBDA * distortion, GAMMA * classification, decay)
        assert abs(sum(terms)) <= 1e-10 * sum(abs(term) for term in terms), terms


def test_free_energy_hessian_is_symmetric_both_ways(exact, finite):
    """F_lambda,gamma = dD/dgamma = dC/dlambda (Maxwell): exactly for Lemma 5, to O(h^2) for
    finite differences (bounded by the two steps' Richardson estimates)."""
    assert exact.derivatives["distortion"][1] == pytest.approx(
        exact.derivatives["classification"][0], rel=1e-10
    )
    coarse, fine = finite
    gap = abs(fine.derivatives["distortion"][1] - fine.derivatives["classification"][0])
    bound = (
        abs(coarse.derivatives["distortion"][1] - fine.derivatives["distortion"][1])
        + abs(coarse.derivatives["classification"][0] - fine.derivatives["classification"][0])
    ) / 3
    assert gap <= 1.2 * bound


def test_trust_region_newton_leaves_a_saddle_for_the_minimum():
    """f = x^4/4 - x^2/2 + y^2/2 from its saddle (0, 0), where the gradient vanishes: the
    iteration follows the negative curvature to a minimum (+-1, 0) with Hessian diag(2, 1)."""

    def functionals(theta):
        x, y = theta
        return x**4 / 4 - x**2 / 2 + y**2 / 2, 0 * x, 0 * x

    result = minimize_free_energy(functionals, torch.zeros(2, dtype=torch.float64), 1.0, 1.0)
    assert result.converged
    assert torch.allclose(result.theta.abs(), torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert result.smallest_eigenvalue == pytest.approx(1.0)
    assert result.largest_eigenvalue == pytest.approx(2.0)


def test_bad_input_is_named(surface, minimum):
    with pytest.raises(ValueError, match="weight_decay"):
        minimize_free_energy(surface, minimum.theta, LAMBDA, GAMMA, weight_decay=-1.0)
    with pytest.raises(ValueError, match="theta0"):
        minimize_free_energy(surface, minimum.theta[None], LAMBDA, GAMMA)
    with pytest.raises(ValueError, match="lambda_"):
        minimize_free_energy(surface, minimum.theta, 0.0, GAMMA)
    with pytest.raises(ValueError, match="solver"):
        exact_tangents(surface, minimum.theta, LAMBDA, GAMMA, solver="cholesky")
    with pytest.raises(ValueError, match="relative_steps"):
        compare_dynamics(surface, minimum.theta, LAMBDA, GAMMA, relative_steps=())
    with pytest.raises(RuntimeError, match="did not reach a strict minimum"):
        finite_difference_tangents(
            surface, surface.initial(), LAMBDA, GAMMA, 0.02, weight_decay=KAPPA, max_iterations=1
        )


@pytest.mark.parametrize("steps", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_iso_classification_paths_agree(surface, minimum, steps):
    """Steps both ways: the multipliers agree to the finite differences' O(h^2) and both paths
    keep C fixed far better than the first-order change they avoid."""
    result = compare_dynamics(
        surface,
        minimum.theta,
        LAMBDA,
        GAMMA,
        relative_steps=(0.02,),
        steps=steps,
        weight_decay=KAPPA,
        check_conjugate_gradient=False,
        gradient_tolerance=TOLERANCE,
    )
    exact_path, finite_path = result.exact_path, result.finite_difference_path
    moved = exact_path[-1].lambda_ - exact_path[0].lambda_
    assert moved == pytest.approx(steps * 0.02 * LAMBDA, rel=0.1)
    # The rates differ by the finite differences' relative error at h = 0.02 (about 1e-3 here)
    assert result.path_differences["lambda"] <= 1e-2 * abs(moved)
    # dC along the path, had lambda moved alone: |dC/dlambda| * |delta lambda|
    first_order = abs(result.exact.derivatives["classification"][0]) * abs(moved)
    for path in (exact_path, finite_path):
        assert abs(path[-1].classification - path[0].classification) < 0.05 * first_order
    assert finite_path[-1].gradient_norm <= TOLERANCE
    for point in finite_path[:-1]:  # along the path, finite differences still match Lemma 5
        for estimate, value in zip(
            point.classification_derivatives, point.exact_classification_derivatives, strict=True
        ):
            assert estimate == pytest.approx(value, rel=1e-2)


@pytest.mark.slow
def test_conjugate_gradients_agree_with_the_dense_solve(surface, minimum, exact):
    """equilibrium_tangents (Hessian-vector products, Remark 6) with damping = kappa is Lemma 5
    for J_kappa: it matches the dense solve once it converges (~470 iterations here, ~30 s)."""
    iterative = equilibrium_tangents(
        surface, minimum.theta, LAMBDA, GAMMA, damping=KAPPA, tolerance=1e-12
    )
    assert all(solve.relative_residual <= 1e-11 for solve in iterative.solves)
    for name in NAMES:
        for index in range(2):
            assert iterative.derivatives[name][index] == pytest.approx(
                exact.derivatives[name][index], rel=1e-8
            )
    assert math.isclose(
        float((iterative.theta_lambda - exact.theta_lambda).norm()),
        0.0,
        abs_tol=1e-8 * float(exact.theta_lambda.norm()),
    )
