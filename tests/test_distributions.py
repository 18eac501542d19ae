"""The sphere distributions: normalization by quadrature, closed forms, and the sampler's moments."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.special import i0

from thermossl.distributions import (
    UniformSphere,
    VonMisesFisher,
    log_sphere_area,
    log_von_mises_fisher_normalizer,
    mean_resultant_length,
)


@pytest.mark.parametrize("kappa", [0.0, 0.5, 5.0, 200.0])
def test_von_mises_fisher_density_integrates_to_one_on_the_circle(kappa):
    angles = torch.linspace(0, 2 * math.pi, 20001, dtype=torch.float64)[:-1]
    points = torch.stack([angles.cos(), angles.sin()], -1)
    law = VonMisesFisher(torch.tensor([0.6, 0.8], dtype=torch.float64), kappa)
    integral = law.log_prob(points).exp().mean() * 2 * math.pi  # periodic trapezoid: spectral
    assert float(integral) == pytest.approx(1.0, rel=1e-10)


def test_normalizer_closed_forms_in_two_and_three_dimensions():
    for kappa in (0.1, 3.0, 50.0):
        assert log_von_mises_fisher_normalizer(2, kappa) == pytest.approx(
            -math.log(2 * math.pi * i0(kappa)), rel=1e-12
        )
        # d = 3: C = kappa / (4 pi sinh kappa)
        expected = (
            math.log(kappa) - math.log(2 * math.pi) - kappa - math.log1p(-math.exp(-2 * kappa))
        )
        assert log_von_mises_fisher_normalizer(3, kappa) == pytest.approx(expected, rel=1e-12)
    assert log_von_mises_fisher_normalizer(5, 0.0) == pytest.approx(-log_sphere_area(5))
    # continuity at kappa -> 0 in a high dimension
    assert log_von_mises_fisher_normalizer(64, 1e-8) == pytest.approx(
        -log_sphere_area(64), abs=1e-6
    )


@pytest.mark.parametrize(("dim", "kappa"), [(2, 3.0), (3, 0.0), (8, 20.0), (32, 5.0)])
def test_sampler_matches_the_mean_resultant_length_and_the_entropy(dim, kappa):
    torch.manual_seed(dim)
    mu = torch.randn(dim, dtype=torch.float64)
    mu = mu / mu.norm()
    law = VonMisesFisher(mu, kappa)
    z = law.sample((20000,))
    assert torch.allclose(z.norm(dim=-1), torch.ones(20000, dtype=torch.float64), atol=1e-12)
    cosines = z @ mu
    standard_error = float(cosines.std()) / math.sqrt(z.shape[0])
    assert abs(float(cosines.mean()) - mean_resultant_length(dim, kappa)) <= 4 * standard_error
    # E[-log f(z)] is the entropy: -log C - kappa A(kappa)
    surprise = -law.log_prob(z)
    assert (
        abs(float(surprise.mean() - law.entropy()))
        <= 4 * float(surprise.std()) / math.sqrt(z.shape[0]) + 1e-12
    )


def test_uniform_sphere_is_the_zero_concentration_limit():
    sphere = UniformSphere(4, dtype=torch.float64)
    z = sphere.sample((10,))
    vmf = VonMisesFisher(torch.tensor([1.0, 0, 0, 0], dtype=torch.float64), 0.0)
    assert torch.allclose(sphere.log_prob(z), vmf.log_prob(z))
    assert float(sphere.entropy()) == pytest.approx(log_sphere_area(4))
    assert log_sphere_area(3) == pytest.approx(math.log(4 * math.pi))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="dim"):
        log_von_mises_fisher_normalizer(1, 1.0)
    with pytest.raises(ValueError, match="concentration"):
        log_von_mises_fisher_normalizer(3, -1.0)
    with pytest.raises(ValueError, match="dim"):
        UniformSphere(1)
