"""Entropy estimators of :mod:`thermossl.objectives.entropy` against closed forms.

Test distributions (float64):

* ``gaussian``: :math:`N(0, \\Sigma)`, :math:`\\Sigma_{ij} = 4 \\cdot 0.5^{|i-j|}` (non-diagonal),
  :math:`H = \\tfrac d2(1 + \\log 2\\pi) + \\tfrac12\\log\\det\\Sigma` (2.11 nats at d = 1, 15.9 at d = 8);
* ``box``: uniform on :math:`[-2, 2]^d` (side 4), :math:`H = d \\log 4` (1.39 nats at d = 1).

Tolerances are ``Z_MAX`` standard errors of the mean over the test's own repeated draws, plus a
bias term where the estimator has a known one: exact for LogDet (Wishart), exact Jensen lower
bounds plus the leading-order (delta-method) Jensen gap for KDE. The full bias/sd table over
``d in {1, 2, 8, 32}``, ``n in {256, 2048}`` with 20 repeats is ``benchmarks/entropy_estimators.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import special
from thermossl.objectives.entropy import (
    gaussian_entropy,
    kde_entropy,
    knn_entropy,
    logdet_entropy,
    logdet_entropy_bias,
    plugin_conditional_entropy,
    uniform_box_entropy,
    uniform_sphere_entropy,
)
from torch.distributions import Independent, MultivariateNormal, Normal, Uniform

from tests.common import assert_relative_close
from thermossl.distributions import _log_bessel_i, log_von_mises_fisher_normalizer

DTYPE = torch.float64
Z_MAX = 4.0
HALF_SIDE = 2.0


def ar1_covariance(dim: int) -> torch.Tensor:
    index = torch.arange(dim, dtype=DTYPE)
    return 4.0 * 0.5 ** (index[:, None] - index[None, :]).abs()


def draw(distribution: str, shape: tuple[int, ...], dim: int, generator) -> torch.Tensor:
    """``[*shape, dim]`` samples of ``gaussian`` or ``box``."""
    if distribution == "gaussian":
        cholesky = torch.linalg.cholesky(ar1_covariance(dim))
        return torch.randn(*shape, dim, generator=generator, dtype=DTYPE) @ cholesky.T
    return HALF_SIDE * (2 * torch.rand(*shape, dim, generator=generator, dtype=DTYPE) - 1)


def truth(distribution: str, dim: int) -> float:
    if distribution == "gaussian":
        return float(gaussian_entropy(ar1_covariance(dim)))
    return dim * math.log(2 * HALF_SIDE)


def mean_and_se(values: torch.Tensor) -> tuple[float, float]:
    return float(values.mean()), float(values.std() / math.sqrt(values.numel()))


def finite_value_and_grad(estimator, z: torch.Tensor) -> None:
    z = z.clone().requires_grad_(True)
    value = estimator(z)
    (grad,) = torch.autograd.grad(value.sum(), z)
    assert bool(torch.isfinite(value).all()), f"value {value}"
    assert bool(torch.isfinite(grad).all()), f"gradient {grad}"


def duplicated(dtype=DTYPE) -> torch.Tensor:
    """12 points in 3-D, with rows 1 and 2 copies of row 0 (distance 0 to their neighbours)."""
    z = torch.randn(12, 3, generator=torch.Generator().manual_seed(1), dtype=dtype)
    z[1] = z[0]
    z[2] = z[0]
    return z


# -- closed forms --------------------------------------------------------------------------------


def test_closed_forms_match_torch_distributions():
    covariance = ar1_covariance(5)
    expected = MultivariateNormal(torch.zeros(5, dtype=DTYPE), covariance).entropy()
    assert_relative_close(gaussian_entropy(covariance), expected)
    low = torch.tensor([-2.0, 0.0, 1.0], dtype=DTYPE)
    high = torch.tensor([2.0, 0.5, 4.0], dtype=DTYPE)
    assert_relative_close(uniform_box_entropy(low, high), Uniform(low, high).entropy().sum())
    assert uniform_sphere_entropy(2) == pytest.approx(math.log(2 * math.pi))
    assert uniform_sphere_entropy(3) == pytest.approx(math.log(4 * math.pi))
    with pytest.raises(ValueError, match="covariance"):
        gaussian_entropy(-torch.eye(2, dtype=DTYPE))
    with pytest.raises(ValueError, match="high"):
        uniform_box_entropy(high, low)
    with pytest.raises(ValueError, match="dim"):
        uniform_sphere_entropy(1)


@pytest.mark.parametrize("kappa", [1e-3, 0.5, 4.0, 100.0, 600.0])
def test_vmf_normalizer_matches_closed_forms(kappa):
    # S^2: C_3 = kappa / (4 pi sinh kappa); S^1: C_2 = 1 / (2 pi I_0(kappa)).
    log_sinh = kappa + math.log1p(-math.exp(-2 * kappa)) - math.log(2)
    assert log_von_mises_fisher_normalizer(3, kappa) == pytest.approx(
        math.log(kappa / (4 * math.pi)) - log_sinh, rel=1e-12, abs=1e-12
    )
    log_i0 = math.log(special.ive(0, kappa)) + kappa
    assert log_von_mises_fisher_normalizer(2, kappa) == pytest.approx(
        -math.log(2 * math.pi) - log_i0
    )


@pytest.mark.parametrize(("order", "x"), [(60.0, 1e-3), (255.0, 5.0), (1000.0, 0.1), (5e3, 40.0)])
def test_log_bessel_in_the_underflow_regime(order, x):
    # scipy's ive underflows here, so the Debye expansion answers; check it against mpmath.
    mpmath = pytest.importorskip("mpmath")
    expected = float(mpmath.log(mpmath.besseli(order, x)))
    assert _log_bessel_i(order, x) == pytest.approx(expected, rel=1e-12)


# -- kNN -----------------------------------------------------------------------------------------


def test_knn_hand_computed_value_and_gradient():
    # x = (0, 1, 3), k = 1: r = (|x1 - x2|, |x2 - x1|, |x3 - x2|) = (1, 1, 2), so
    # H = psi(3) - psi(1) + log 2 + (1/3)(log r1 + log r2 + log r3) = 1.5 + (4/3) log 2, and
    # dH/dx = (1/3) * (2 / (x1 - x2), 2 / (x2 - x1) + 1 / (x2 - x3), 1 / (x3 - x2)).
    z = torch.tensor([[0.0], [1.0], [3.0]], dtype=DTYPE, requires_grad=True)
    value = knn_entropy(z, k=1)
    assert float(value.detach()) == pytest.approx(1.5 + 4 / 3 * math.log(2), rel=1e-12)
    (grad,) = torch.autograd.grad(value, z)
    expected = torch.tensor([[-2 / 3], [1 / 2], [1 / 6]], dtype=DTYPE)
    assert_relative_close(grad, expected, rtol=1e-10)


def test_knn_gradcheck_and_constants():
    z = torch.randn(10, 3, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    z.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: knn_entropy(x, k=3), (z,))
    constants = special.digamma(10) - special.digamma(3) + 1.5 * math.log(math.pi)
    constants -= math.lgamma(2.5)
    difference = knn_entropy(z.detach(), k=3) - knn_entropy(z.detach(), k=3, constants=False)
    assert float(difference) == pytest.approx(constants, rel=1e-12)


def test_knn_is_translation_and_scale_equivariant():
    # H(a z + b) = H(z) + d log a holds for the estimate exactly, as for the entropy.
    z = torch.randn(50, 4, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    shifted = 3.0 * z + torch.tensor([1.0, -2.0, 5.0, 0.0], dtype=DTYPE)
    assert_relative_close(knn_entropy(shifted), knn_entropy(z) + 4 * math.log(3.0), rtol=1e-12)


def test_knn_batch_dimensions():
    z = torch.randn(2, 3, 40, 5, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    batched = knn_entropy(z, k=2, clip_quantile=0.8)
    assert batched.shape == (2, 3)
    looped = torch.stack(
        [torch.stack([knn_entropy(s, k=2, clip_quantile=0.8) for s in b]) for b in z]
    )
    assert_relative_close(batched, looped, rtol=1e-12)


def test_knn_clipping():
    z = torch.randn(100, 2, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    z.requires_grad_(True)
    full = knn_entropy(z, k=3, constants=False)
    clipped = knn_entropy(z, k=3, constants=False, clip_quantile=0.9)
    assert float(clipped.detach()) < float(
        full.detach()
    )  # clipping lowers the estimate: a downward bias
    assert_relative_close(
        knn_entropy(z.detach(), clip_quantile=1.0), knn_entropy(z.detach()), rtol=1e-12
    )
    # By hand: r_i above the 0.9-quantile of r are replaced by it.
    with torch.no_grad():
        distances = torch.cdist(z, z) + torch.diag(torch.full((100,), math.inf, dtype=DTYPE))
        r = distances.kthvalue(3, dim=-1).values
        threshold = torch.quantile(r, 0.9)
        expected = 2 * r.clamp_max(threshold).log().mean()
    assert float(clipped.detach()) == pytest.approx(float(expected), rel=1e-10)
    # The clipped samples carry no gradient of their own: a sample whose distance is clipped
    # and that is nobody's k-th neighbour gets none at all.
    (grad,) = torch.autograd.grad(clipped, z)
    with torch.no_grad():
        neighbours = distances.topk(3, dim=-1, largest=False).indices[:, 2]
    lonely = (r > threshold) & ~torch.isin(torch.arange(100), neighbours)
    assert int(lonely.sum()) > 0
    assert bool((grad[lonely] == 0).all())
    assert int((grad.abs().sum(-1) > 0).sum()) >= 80


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_knn_finite_at_duplicates(dtype):
    finite_value_and_grad(knn_entropy, duplicated(dtype))
    finite_value_and_grad(lambda z: knn_entropy(z, clip_quantile=0.9), duplicated(dtype))
    finite_value_and_grad(knn_entropy, torch.ones(8, 32, dtype=dtype))  # all rows equal
    assert knn_entropy(duplicated(torch.float32)).dtype == torch.float32


@pytest.mark.parametrize(
    ("distribution", "dim"),
    [
        ("gaussian", 1),
        ("gaussian", 2),
        ("gaussian", 8),
        ("box", 1),
        ("box", 2),
        pytest.param(
            "box",
            8,
            marks=pytest.mark.xfail(
                strict=True, reason="kNN boundary bias on a box in d = 8: +9.6 % at n = 2048"
            ),
        ),
    ],
)
def test_knn_within_five_percent_at_n2048(distribution, dim):
    """The requirement: kNN (k = 3, all constants) within 5 % of the truth for d <= 8, n = 2048,
    for the mean over draws and for every single draw.

    It fails for the box at d = 8: the estimator's boundary bias there is about +1.06 nats
    (+9.6 %), reproduced with an independent scipy cKDTree implementation. The bias is absolute
    (the estimate is exactly equivariant, H(a z) = H(z) + d log a), so the relative figure only
    depends on the arbitrary side length; recorded as a strict xfail.
    """
    generator = torch.Generator().manual_seed(10 + dim)
    values = torch.stack(
        [knn_entropy(draw(distribution, (2048,), dim, generator)) for _ in range(3)]
    )
    expected = truth(distribution, dim)
    assert abs(float(values.mean()) - expected) <= 0.05 * abs(expected)
    assert bool(((values - expected).abs() <= 0.05 * abs(expected)).all()), values


def test_knn_box_bias_at_d8_is_upward_and_shrinks_with_n():
    """What does hold for the box at d = 8 (and for both distributions at d = 32): the kNN
    estimate overestimates, by more than Z_MAX standard errors, and less so at n = 2048."""
    generator = torch.Generator().manual_seed(3)
    for distribution, dim in [("box", 8), ("gaussian", 32), ("box", 32)]:
        expected = truth(distribution, dim)
        small = knn_entropy(draw(distribution, (8, 256), dim, generator))
        large = torch.stack(
            [knn_entropy(draw(distribution, (2048,), dim, generator)) for _ in range(3)]
        )
        small_mean, (large_mean, large_se) = float(small.mean()), mean_and_se(large)
        assert large_mean - expected > Z_MAX * large_se, (distribution, dim)
        assert small_mean > large_mean, (distribution, dim, small_mean, large_mean)


# -- KDE -----------------------------------------------------------------------------------------


def naive_kde(z: torch.Tensor, h: float, kernel: str, leave_one_out: bool) -> torch.Tensor:
    """Direct double sum over pairs (an independent implementation)."""
    n, d = z.shape
    if kernel == "gaussian":
        squared = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
        weights = torch.exp(-squared / (2 * h * h)) / (2 * math.pi * h * h) ** (d / 2)
    else:
        kappa = 1 / (h * h)
        log_c = (d / 2 - 1) * math.log(kappa) - d / 2 * math.log(2 * math.pi)
        log_c -= math.log(special.iv(d / 2 - 1, kappa))
        weights = torch.exp(kappa * z @ z.T + log_c)
    if leave_one_out:
        weights = weights * (1 - torch.eye(n, dtype=z.dtype))
        return -torch.log(weights.sum(1) / (n - 1)).mean()
    return -torch.log(weights.mean(1)).mean()


@pytest.mark.parametrize("kernel", ["gaussian", "von_mises_fisher"])
@pytest.mark.parametrize("leave_one_out", [False, True])
def test_kde_matches_direct_double_sum_and_gradcheck(kernel, leave_one_out):
    z = torch.randn(2, 30, 4, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    if kernel == "von_mises_fisher":
        z = z / z.norm(dim=-1, keepdim=True)
    estimate = kde_entropy(z, 0.7, kernel, leave_one_out)
    expected = torch.stack([naive_kde(s, 0.7, kernel, leave_one_out) for s in z])
    assert_relative_close(estimate, expected, rtol=1e-10)
    z = z[0].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: kde_entropy(x, 0.7, kernel, leave_one_out), (z,))


@pytest.mark.parametrize("kernel", ["gaussian", "von_mises_fisher"])
@pytest.mark.parametrize("leave_one_out", [False, True])
def test_kde_finite_at_duplicates(kernel, leave_one_out):
    z = duplicated()
    z = z / z.norm(dim=-1, keepdim=True)
    finite_value_and_grad(lambda x: kde_entropy(x, 0.3, kernel, leave_one_out), z)
    all_equal = torch.full((6, 3), 1 / math.sqrt(3), dtype=DTYPE)
    finite_value_and_grad(lambda x: kde_entropy(x, 0.3, kernel, leave_one_out), all_equal)


@pytest.mark.parametrize(("dim", "n"), [(1, 256), (1, 2048), (2, 2048)])
def test_gaussian_kde_with_silverman_bandwidth(dim, n):
    """Resubstitution KDE on Gaussian data with the (fixed) Silverman bandwidth.

    With p_h = N(0, Sigma + h^2 I), the expected kernel average at a sample z_i is
    m(z_i) = K(0)/N + (N-1)/N p_h(z_i), so by Jensen E[H_hat] >= P := E_z[-log m(z)], exactly;
    the gap is, to leading order (delta method), G := E_z[(N-1)/N^2 Var_y K(z - y) / (2 m(z)^2)]
    with E_y K(z - y)^2 = (4 pi h^2)^(-d/2) N(z; 0, Sigma + h^2/2 I). Both are Gaussian
    expectations, computed by Monte Carlo with 2e5 draws. The test asserts
    P - tol <= mean <= P + 2 G + tol (tol: Z_MAX standard errors of the repeats and of P), and that
    P is within 1 % of the true entropy: Silverman's bandwidth is accurate in d = 1-2.
    """
    generator = torch.Generator().manual_seed(dim * n)
    covariance = ar1_covariance(dim)
    h = math.sqrt(float(covariance.diagonal().mean())) * (4 / ((dim + 2) * n)) ** (1 / (dim + 4))
    eye = torch.eye(dim, dtype=DTYPE)
    zero = torch.zeros(dim, dtype=DTYPE)
    reference = draw("gaussian", (200_000,), dim, generator)
    p_h = MultivariateNormal(zero, covariance + h * h * eye).log_prob(reference).exp()
    m = (2 * math.pi * h * h) ** (-dim / 2) / n + (n - 1) / n * p_h
    second_moment = (4 * math.pi * h * h) ** (-dim / 2)
    second_moment *= (
        MultivariateNormal(zero, covariance + h * h / 2 * eye).log_prob(reference).exp()
    )
    prediction, prediction_se = mean_and_se(-m.log())
    gap = float(((n - 1) / n**2 * (second_moment - p_h**2) / (2 * m**2)).mean())

    repeats = 6
    values = torch.stack(
        [kde_entropy(draw("gaussian", (n,), dim, generator), h) for _ in range(repeats)]
    )
    mean, se = mean_and_se(values)
    tolerance = Z_MAX * math.hypot(se, prediction_se)
    assert prediction - tolerance <= mean <= prediction + 2 * gap + tolerance, (
        mean,
        prediction,
        gap,
        tolerance,
    )
    expected = truth("gaussian", dim)
    assert abs(prediction + gap - expected) <= 0.01 * expected


def test_vmf_kde_of_uniform_sphere_approaches_log_area():
    """Uniform data on S^2: the vMF-smoothed density is exactly uniform, so E[p_hat_(-i)] = 1/A.

    Leave-one-out: E[H_hat] >= log A (Jensen), with the leading-order gap
    G = (A C(kappa)^2 / C(2 kappa) - 1) / (2 (N - 1)). Resubstitution: E[H_hat] >= -log m with
    m = K(0)/N + (N-1)/(N A), gap (N-1)/N^2 Var K / (2 m^2). Both converge to log A = log 4 pi
    as N grows, and the errors shrink.
    """
    generator = torch.Generator().manual_seed(0)
    h, dim = 0.5, 3
    kappa = 1 / h**2
    area = 4 * math.pi

    def normalizer(k: float) -> float:  # C_3(kappa), the vMF normalizer on S^2
        return k / (4 * math.pi * math.sinh(k))

    kernel_variance = normalizer(kappa) ** 2 / (normalizer(2 * kappa) * area) - 1 / area**2
    errors = []
    for n in (64, 256, 1024):
        z = torch.randn(10, n, dim, generator=generator, dtype=DTYPE)
        z = z / z.norm(dim=-1, keepdim=True)
        loo_mean, loo_se = mean_and_se(kde_entropy(z, h, "von_mises_fisher", leave_one_out=True))
        loo_gap = (area * normalizer(kappa) ** 2 / normalizer(2 * kappa) - 1) / (2 * (n - 1))
        assert -Z_MAX * loo_se <= loo_mean - math.log(area) <= 2 * loo_gap + Z_MAX * loo_se
        resub_mean, resub_se = mean_and_se(kde_entropy(z, h, "von_mises_fisher"))
        m = normalizer(kappa) * math.exp(kappa) / n + (n - 1) / (n * area)
        resub_gap = (n - 1) / n**2 * kernel_variance / (2 * m**2)
        assert -Z_MAX * resub_se <= resub_mean + math.log(m) <= 2 * resub_gap + Z_MAX * resub_se
        errors.append((abs(loo_mean - math.log(area)), abs(resub_mean - math.log(area))))
    assert errors[0][0] > errors[1][0] > errors[2][0]
    assert errors[0][1] > errors[1][1] > errors[2][1]
    assert errors[2][0] < 0.01 and errors[2][1] < 0.01


# -- LogDet --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [1, 2, 8, 32])
@pytest.mark.parametrize("n", [256, 2048])
def test_logdet_is_exact_up_to_the_wishart_bias(dim, n):
    """(N-1) Sigma_hat ~ Wishart(Sigma, N-1): E[H_hat] = H + logdet_entropy_bias(N, d) exactly and
    Var[H_hat] = (1/4) sum_i psi'((N - i)/2), so the test uses the exact standard error."""
    repeats = 64 if n == 256 else 16
    z = draw("gaussian", (repeats, n), dim, torch.Generator().manual_seed(dim + n))
    values = logdet_entropy(z)
    assert values.shape == (repeats,)
    sd = 0.5 * math.sqrt(sum(special.polygamma(1, (n - i) / 2) for i in range(1, dim + 1)))
    assert float(values.std()) == pytest.approx(sd, rel=0.5)
    se = sd / math.sqrt(repeats)
    bias = logdet_entropy_bias(n, dim)
    expected = truth("gaussian", dim)
    assert abs(float(values.mean()) - expected - bias) <= Z_MAX * se
    if dim == 32 and n == 256:  # the bias is resolved: ignoring it would fail
        assert abs(float(values.mean()) - expected) > Z_MAX * se


@pytest.mark.parametrize("dim", [1, 8])
def test_logdet_on_a_box_estimates_the_gaussian_surrogate(dim):
    """For non-Gaussian data LogDet estimates the entropy of the Gaussian with the same covariance
    ((side^2 / 12) I here), which exceeds the truth. The uniform is platykurtic, so its sample
    covariance varies less than a Gaussian's and its log-det bias is at most the Gaussian one."""
    n, repeats = 2048, 16
    z = draw("box", (repeats, n), dim, torch.Generator().manual_seed(dim))
    mean, se = mean_and_se(logdet_entropy(z))
    surrogate = float(gaussian_entropy((2 * HALF_SIDE) ** 2 / 12 * torch.eye(dim, dtype=DTYPE)))
    assert mean - truth("box", dim) > Z_MAX * se
    assert abs(mean - surrogate) <= abs(logdet_entropy_bias(n, dim)) + Z_MAX * se


def test_logdet_by_hand_gradcheck_and_ridge():
    z = torch.randn(20, 3, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    centred = z - z.mean(0)
    covariance = centred.T @ centred / 19
    assert_relative_close(logdet_entropy(z), gaussian_entropy(covariance))
    ridged = covariance + 0.1 * torch.eye(3, dtype=DTYPE)
    assert_relative_close(logdet_entropy(z, ridge=0.1), gaussian_entropy(ridged))
    z.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: logdet_entropy(x, ridge=0.1), (z,))
    finite_value_and_grad(lambda x: logdet_entropy(x, ridge=1e-3), duplicated())
    finite_value_and_grad(lambda x: logdet_entropy(x, ridge=1e-3), torch.ones(8, 32, dtype=DTYPE))
    assert float(logdet_entropy(torch.ones(8, 3, dtype=DTYPE))) == -math.inf  # singular, no ridge


# -- stop-gradient plug-in -----------------------------------------------------------------------


@pytest.mark.parametrize("dim", [1, 8])
def test_plugin_conditional_entropy_on_a_gaussian_conditional(dim):
    """z2 = 0.8 z1 + eps, z1, eps ~ N(0, Sigma): the true conditional gives H(z2 | z1) in
    expectation exactly, the context-free marginal predictor H(z2) = H(z2 | z1) + I(z1; z2)."""
    n, repeats = 256, 32
    generator = torch.Generator().manual_seed(dim)
    covariance = ar1_covariance(dim)
    cholesky = torch.linalg.cholesky(covariance)
    z1 = draw("gaussian", (repeats, n), dim, generator)
    z2 = 0.8 * z1 + draw("gaussian", (repeats, n), dim, generator)
    true_conditional = MultivariateNormal(0.8 * z1, scale_tril=cholesky)
    mean, se = mean_and_se(plugin_conditional_entropy(true_conditional, z2))
    expected = float(gaussian_entropy(covariance))
    assert abs(mean - expected) <= Z_MAX * se
    marginal = MultivariateNormal(torch.zeros(dim, dtype=DTYPE), (1 + 0.8**2) * covariance)
    marginal_mean, marginal_se = mean_and_se(plugin_conditional_entropy(marginal, z2))
    assert marginal_mean - expected > Z_MAX * marginal_se  # an upper bound ...
    marginal_entropy = float(gaussian_entropy((1 + 0.8**2) * covariance))
    assert abs(marginal_mean - marginal_entropy) <= Z_MAX * marginal_se  # ... off by I(z1; z2)


def test_plugin_estimate_carries_the_gradient_into_the_samples():
    """Eq. 55: the predictor is frozen and the samples carry the gradient, so the LDM goal
    log p(z | c) + H_plugin equals, in derivative, log p(sg(z) | c) (eq. 54)."""
    context = torch.tensor([0.0, 1.0, 2.0, -1.0], dtype=DTYPE, requires_grad=True)
    target = torch.tensor([0.5, 1.0, 1.0, 3.0], dtype=DTYPE, requires_grad=True)
    weight = torch.tensor(0.5, dtype=DTYPE, requires_grad=True)
    frozen = Normal((weight * context).detach(), 1.0)
    estimate = plugin_conditional_entropy(frozen, target)
    (target_grad,) = torch.autograd.grad(estimate, [target], retain_graph=True)
    # d/dz of mean (z - w c)^2 / 2 = (z - w c) / N
    expected = (target.detach() - 0.5 * context.detach()) / 4
    assert torch.allclose(target_grad, expected, rtol=1e-12, atol=0)
    parameters = [context, target, weight]
    goal = Normal(weight * context, 1.0).log_prob(target).mean() + estimate
    detached_target = Normal(weight * context, 1.0).log_prob(target.detach()).mean()
    for actual, wanted in zip(
        torch.autograd.grad(goal, parameters, allow_unused=True),
        torch.autograd.grad(detached_target, parameters, allow_unused=True),
        strict=True,
    ):
        actual = torch.zeros(()) if actual is None else actual
        wanted = torch.zeros(()) if wanted is None else wanted
        assert torch.allclose(
            actual.double(), wanted.double().expand_as(actual), rtol=1e-12, atol=1e-15
        )
    assert abs(float(goal.detach())) < 1e-12  # and the value cancels exactly
    # Vector latents through Independent, with duplicated targets: finite.
    z = duplicated().requires_grad_(True)
    predictive = Independent(Normal(0.5 * z.detach(), 1.0), 1)
    value = plugin_conditional_entropy(predictive, z)
    assert value.shape == () and bool(torch.isfinite(torch.autograd.grad(value, z)[0]).all())


# -- bad input -----------------------------------------------------------------------------------


_Z = torch.randn(10, 3, dtype=DTYPE)
_NAN = _Z.clone()
_NAN[2, 1] = math.nan


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: knn_entropy(_Z, k=10), "k"),
        (lambda: knn_entropy(_Z, k=12), "k"),
        (lambda: knn_entropy(_Z, k=0), "k"),
        (lambda: knn_entropy(_Z[0]), "z"),
        (lambda: knn_entropy(_NAN), "z"),
        (lambda: knn_entropy(_Z, clip_quantile=0.0), "clip_quantile"),
        (lambda: knn_entropy(_Z, clip_quantile=1.5), "clip_quantile"),
        (lambda: kde_entropy(_Z[0], 1.0), "z"),
        (lambda: kde_entropy(_NAN, 1.0), "z"),
        (lambda: kde_entropy(_Z, 0.0), "bandwidth"),
        (lambda: kde_entropy(_Z, -1.0), "bandwidth"),
        (lambda: kde_entropy(_Z, math.nan), "bandwidth"),
        (lambda: kde_entropy(_Z, 1.0, kernel="epanechnikov"), "kernel"),
        (lambda: kde_entropy(_Z[:, :1], 1.0, kernel="von_mises_fisher"), "z"),
        (lambda: kde_entropy(_Z[:1], 1.0, leave_one_out=True), "z"),
        (lambda: logdet_entropy(_Z[0]), "z"),
        (lambda: logdet_entropy(_NAN), "z"),
        (lambda: logdet_entropy(_Z[:3]), "z"),
        (lambda: logdet_entropy(_Z, ridge=-1.0), "ridge"),
        (lambda: plugin_conditional_entropy(Normal(0.0, 1.0), _NAN[:, 1]), "target"),
        (lambda: plugin_conditional_entropy(Normal(_Z, 1.0), _Z), "predictive"),
        (lambda: plugin_conditional_entropy(Normal(_Z[:, 0], 1.0), _Z[:1, 0]), "log_prob"),
    ],
)
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call()


def test_wrong_types():
    with pytest.raises(TypeError, match="predictive"):
        plugin_conditional_entropy(_Z, _Z)
    with pytest.raises(TypeError, match="z"):
        knn_entropy(torch.ones(5, 2, dtype=torch.long))
