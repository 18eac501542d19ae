"""The LDM pair programs: derived terms against closed forms, and the SimCLR/VICReg correspondences."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.special import i0
from thermossl.models.ldm_pairs import PairLDM
from thermossl.objectives.entropy import kde_entropy, knn_entropy, logdet_entropy
from thermossl.objectives.losses import nt_xent, vicreg
from torch import nn

from tests.common import assert_relative_close, gradients, mlp, two_views
from thermossl.distributions import log_sphere_area, log_von_mises_fisher_normalizer


def _pairs(n=48, dim=5, seed=0):
    return two_views(n, dim, seed=seed, noise=0.3)


def test_plane_terms_are_the_gaussian_conditional_and_the_joint_entropy():
    x1, x2 = _pairs()
    beta, d, n = 5.0, 5, x1.shape[0]
    program = PairLDM(nn.Identity(), space="plane", entropy="knn", concentration=beta)
    bound = program.bound(x1, x2)
    assert list(bound.terms) == ["z1", "z2", "entropy"]
    assert float(bound.terms["z1"]) == 0.0  # the flat prior
    # log N(z2; z1, d / (2 beta)) summed: -beta * sum_i mean_d (z1 - z2)^2 - N d/2 log(pi d / beta)
    expected_z2 = -beta * (x1 - x2).pow(2).mean(-1).sum() - n * d / 2 * math.log(math.pi * d / beta)
    assert_relative_close(bound.terms["z2"], expected_z2)
    assert_relative_close(bound.terms["entropy"], n * knn_entropy(torch.cat([x1, x2], -1)))
    assert_relative_close(bound.total, expected_z2 + bound.terms["entropy"])


def test_sphere_terms_are_the_uniform_prior_and_the_von_mises_fisher_conditional():
    x1, x2 = _pairs(dim=2)
    beta, n = 3.0, x1.shape[0]
    program = PairLDM(nn.Identity(), space="sphere", entropy="knn", concentration=beta)
    bound = program.bound(x1, x2)
    z1, z2 = (x / x.norm(dim=-1, keepdim=True) for x in (x1, x2))
    assert_relative_close(
        bound.terms["z1"], torch.tensor(-n * math.log(2 * math.pi), dtype=torch.float64)
    )
    # on the circle the vMF is the von Mises law, normalized by 2 pi I0(beta)
    expected = beta * (z1 * z2).sum() - n * math.log(2 * math.pi * i0(beta))
    assert_relative_close(bound.terms["z2"], expected)


def test_mutual_information_term_turns_the_joint_entropy_into_the_two_marginals():
    x1, x2 = _pairs()
    program = PairLDM(mlp(5, 4), space="plane", entropy="logdet", mutual_information=True)
    bound = program.bound(x1, x2)
    assert list(bound.terms) == ["z1", "z2", "entropy", "mutual_information"]
    z1, z2 = program.latents(x1), program.latents(x2)
    n = x1.shape[0]
    marginals = n * (logdet_entropy(z1) + logdet_entropy(z2))
    with torch.no_grad():
        assert_relative_close(bound.terms["entropy"] + bound.terms["mutual_information"], marginals)
    # the joint estimate cancels in the gradient as well as in the value
    parameters = list(program.parameters())
    total = program.bound(x1, x2).total
    z1, z2 = program.latents(x1), program.latents(x2)
    expected = program.bound(x1, x2).terms["z2"] + n * (logdet_entropy(z1) + logdet_entropy(z2))
    for actual, wanted in zip(
        gradients(total, parameters), gradients(expected, parameters), strict=True
    ):
        assert_relative_close(actual, wanted, atol=1e-12)


@pytest.mark.parametrize("temperature", [0.2, 0.5])
def test_simclr_is_the_sphere_goal_with_mi_and_a_pooled_leave_one_out_vmf_kde(temperature):
    x1, x2 = _pairs(n=32, dim=6, seed=3)
    encoder = mlp(6, 4, seed=1)
    program = PairLDM(
        encoder,
        space="sphere",
        entropy="kde",
        entropy_options={"bandwidth": temperature**0.5, "leave_one_out": True},
        mutual_information=True,
        pooled_marginals=True,
        concentration=2 / temperature,
    )
    n, d = x1.shape[0], 4
    goal = program.bound(x1, x2).total / n
    loss = nt_xent(encoder(x1), encoder(x2), temperature=temperature)
    constant = (
        log_von_mises_fisher_normalizer(d, 2 / temperature)
        - log_sphere_area(d)
        + 2 * (math.log(2 * n - 1) - log_von_mises_fisher_normalizer(d, 1 / temperature))
    )
    assert_relative_close(goal, -2 * loss + constant)
    parameters = list(encoder.parameters())
    for actual, wanted in zip(
        gradients(goal, parameters), gradients(-2 * loss, parameters), strict=True
    ):
        assert_relative_close(actual, wanted, atol=1e-12)


def test_vicreg_invariance_term_is_the_plane_conditional():
    x1, x2 = _pairs()
    beta, n, d = 5.0, x1.shape[0], 5
    program = PairLDM(nn.Identity(), space="plane", entropy="logdet", concentration=beta)
    invariance = vicreg(x1, x2, sim_weight=1.0, var_weight=0.0, cov_weight=0.0)
    constant = -d / 2 * math.log(math.pi * d / beta)
    assert_relative_close(program.bound(x1, x2).terms["z2"] / n, -beta * invariance + constant)


def _standardized_with_correlation(epsilon: float, n=4096, d=4, seed=0):
    """Latents with unit (unbiased) variances and off-diagonal correlations of order epsilon."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(n, d, generator=generator, dtype=torch.float64)
    base = base - base.mean(0)
    base = base @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(base.T))).T  # exactly white
    mixing = torch.eye(d, dtype=torch.float64) + epsilon * torch.tensor(
        [[0, 1, 1, 0], [1, 0, 1, 0], [1, 1, 0, -1], [0, 0, -1, 0]], dtype=torch.float64
    )
    z = base @ mixing
    return z / z.std(0)


def test_vicreg_covariance_penalty_is_the_second_order_expansion_of_the_logdet_entropy():
    """½ log det Σ = -(d/4) c(Z) + O(ρ³) for standardized latents (eq. 42), c as in VICReg."""
    remainders = []
    for epsilon in (0.08, 0.04, 0.02):
        z = _standardized_with_correlation(epsilon)
        d = z.shape[1]
        half_logdet = 0.5 * torch.linalg.slogdet(torch.cov(z.T)).logabsdet
        penalty = vicreg(z, z, sim_weight=0.0, var_weight=0.0, cov_weight=1.0) / 2  # c(Z)
        remainders.append(float(half_logdet + d / 4 * penalty))
    # The error is the cubic term (1/6) tr(E^3) of log det(I + E), E the off-diagonal
    # correlations (the mixing has a triangle 0-1-2, so tr(E^3) != 0): it falls 8x per halving.
    assert 6.0 < remainders[0] / remainders[1] < 10.0
    assert 6.0 < remainders[1] / remainders[2] < 10.0


def test_vicreg_like_goal_uses_the_logdet_of_each_view_with_mi():
    x1, x2 = _pairs(n=64)
    encoder = mlp(5, 3)
    program = PairLDM(encoder, space="plane", entropy="logdet", mutual_information=True)
    n, d, beta = 64, 3, 5.0
    z1, z2 = encoder(x1), encoder(x2)
    expected = (
        -beta * vicreg(z1, z2, sim_weight=1.0, var_weight=0.0, cov_weight=0.0)
        - d / 2 * math.log(math.pi * d / beta)
        + logdet_entropy(z1)
        + logdet_entropy(z2)
    )
    assert_relative_close(program.bound(x1, x2).total / n, expected)


def test_kde_on_the_plane_defaults_to_the_gaussian_kernel():
    x1, x2 = _pairs()
    program = PairLDM(nn.Identity(), entropy="kde", entropy_options={"bandwidth": 0.5})
    n = x1.shape[0]
    expected = n * kde_entropy(torch.cat([x1, x2], -1), bandwidth=0.5)
    assert_relative_close(program.bound(x1, x2).terms["entropy"], expected)


def test_a_callable_estimator_is_used_as_given():
    x1, x2 = _pairs()
    program = PairLDM(nn.Identity(), entropy=lambda z: z.var(0).sum())
    n = x1.shape[0]
    expected = n * torch.cat([x1, x2], -1).var(0).sum()
    assert_relative_close(program.bound(x1, x2).terms["entropy"], expected)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"space": "torus"}, "space"),
        ({"entropy": "histogram"}, "entropy"),
        ({"entropy": "kde"}, "bandwidth"),
        ({"concentration": 0.0}, "concentration"),
        ({"entropy": lambda z: z.sum(), "entropy_options": {"k": 3}}, "entropy_options"),
    ],
)
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PairLDM(nn.Identity(), **kwargs)


def test_mismatched_views_and_bad_latents_are_named():
    program = PairLDM(nn.Identity())
    x1, x2 = _pairs()
    with pytest.raises(ValueError, match="x2"):
        program.bound(x1, x2[:-1])
    with pytest.raises(ValueError, match="encoder"):
        PairLDM(nn.Flatten(0)).bound(x1, x2)
