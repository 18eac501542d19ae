"""TherML's toy (paper 003, Appendix B) and its two worlds as Pyro programs.

The functionals read off the derived bound are compared, value and gradient in float64, with an
independent computation from the probability tables written straight from the definitions of §1.1;
the data process is checked against its target mutual information; the hand-crafted optimal model
against the entropies of the process; the bounds of eq. 12 on untrained models.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm
from thermossl.models.therml import (
    CommonNoiseLogNormal,
    HandCraftedToy,
    ToyWorlds,
    toy_data,
    toy_mean,
)
from thermossl.objectives.therml import (
    RECONSTRUCTION_FREE_SITES,
    Functionals,
    Multipliers,
    conditional_information,
    entropy,
    functionals,
    objective,
)
from torch.distributions import LogNormal, kl_divergence

from tests.common import EXACT, assert_relative_close, gradients

NUM_EXAMPLES = 50


def test_toy_mean_gives_half_a_nat():
    exact = toy_data()
    assert exact.mutual_information == pytest.approx(0.5, abs=1e-6)
    assert toy_mean() == pytest.approx(1.666, abs=1e-3)  # the paper's "mu close to 1.67"
    # the end bins fold the tails: the first bin's mass is P(h < -2.8) under each class
    edge = -3.0 + 6.0 / 30
    first = 0.3 * norm.cdf(edge, -toy_mean()) + 0.7 * norm.cdf(edge, toy_mean())
    assert float(exact.joint[0].sum()) == pytest.approx(first, rel=1e-12)
    assert float(exact.joint.sum()) == pytest.approx(1.0, abs=1e-14)
    # H(z) = 0.611 nats bounds I(x; z)
    assert float(entropy(exact.joint.sum(0))) == pytest.approx(0.6109, abs=1e-4)


def test_finite_data_is_the_empirical_law_of_its_examples():
    data = toy_data(NUM_EXAMPLES, seed=3)
    assert data.num_examples == NUM_EXAMPLES and data.examples.shape == (NUM_EXAMPLES, 2)
    counts = torch.zeros(30, 2, dtype=torch.float64)
    for x, y in data.examples.tolist():
        counts[x, y] += 1
    assert torch.equal(data.joint, counts / NUM_EXAMPLES)
    x, y, probability = data.cells()
    assert bool((probability > 0).all()) and float(probability.sum()) == pytest.approx(1.0)
    assert torch.equal(toy_data(NUM_EXAMPLES, seed=3).examples, data.examples)
    assert not torch.equal(toy_data(NUM_EXAMPLES, seed=4).examples, data.examples)


def test_bad_data_size_is_named():
    with pytest.raises(ValueError, match="num_examples"):
        toy_data(0)


def test_hand_crafted_model_sits_at_the_mutual_information():
    exact = toy_data()
    worlds = HandCraftedToy()
    values = functionals(worlds.model, worlds.guide, *exact.cells(), 1, num_examples=1)
    joint = exact.joint  # p(x, z) with y = z
    assert float(values.rate) == pytest.approx(0.5, abs=1e-9)
    h_x_given_z = entropy(joint) - entropy(joint.sum(0))
    assert float(values.distortion) == pytest.approx(float(h_x_given_z), rel=1e-12)
    # C = H(Y | Z') where Z' ~ p(z | x) is an independent copy of the latent given x
    p_x = joint.sum(1)
    posterior = joint / p_x[:, None]
    pair = torch.einsum("x,xy,xz->yz", p_x, posterior, posterior)
    assert float(values.classification) == pytest.approx(
        float(entropy(pair) - entropy(pair.sum(0))), rel=1e-12
    )
    assert values.entropy is None  # nothing learned: no parameter site


def _independent_functionals(
    worlds: ToyWorlds, cells, noise: torch.Tensor, per_draw: bool = False
) -> torch.Tensor:
    """R, D, C, S per example straight from the tables (no Pyro): ``[4]``, or ``[P, 4]`` per draw."""
    x, y, probability = cells
    alpha = worlds.encoder_log_alpha.exp()
    loc, scale = worlds.encoder_log_weight - alpha / 2, alpha.sqrt()
    theta = torch.exp(loc + scale * noise)  # [P, K]
    u = worlds.bin_positions[x]  # [M]
    log_encoder = torch.log_softmax(
        -((theta[:, None, :] * u[None, :, None] - worlds.encoder_bias) ** 2), -1
    )  # [P, M, K]
    encoder = log_encoder.exp()
    log_marginal = torch.log_softmax(worlds.marginal, -1)
    log_decoder = torch.log_softmax(
        -(
            (worlds.decoder_weight[:, None] * worlds.bin_positions - worlds.decoder_bias[:, None])
            ** 2
        ),
        -1,
    )  # [K, X]
    s = worlds.latent_positions[:, None]
    log_classifier = torch.log_softmax(
        -((worlds.classifier_weight * s - worlds.classifier_bias) ** 2), -1
    )  # [K, Y]
    rate = (encoder * (log_encoder - log_marginal)).sum(-1)  # [P, M]
    distortion = -(encoder * log_decoder[:, x].T).sum(-1)
    classification = -(encoder * log_classifier[:, y].T).sum(-1)
    prior_loc, prior_scale = worlds.prior_loc, worlds.prior_scale
    kl = (
        math.log(prior_scale)
        - scale.log()
        + (scale**2 + (loc - prior_loc) ** 2) / (2 * prior_scale**2)
        - 0.5
    )
    values = torch.stack(
        [
            (probability * rate).sum(-1),
            (probability * distortion).sum(-1),
            (probability * classification).sum(-1),
            (kl.sum() / NUM_EXAMPLES).expand(noise.shape[0]),
        ],
        dim=-1,
    )
    return values if per_draw else values.mean(0)


@pytest.mark.parametrize("data", ["finite", "exact"])
def test_derived_functionals_equal_the_tables(data):
    worlds = ToyWorlds(seed=1, initial_log_alpha=-1.0, dtype=torch.float64)
    cells = (toy_data(NUM_EXAMPLES) if data == "finite" else toy_data()).cells()
    noise = torch.randn(7, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    derived = functionals(
        worlds.model, worlds.guide, *cells, NUM_EXAMPLES, noise, num_examples=NUM_EXAMPLES
    )
    expected = _independent_functionals(worlds, cells, noise)
    assert derived.volume is None
    assert_relative_close(torch.stack(list(derived)[:4]).detach(), expected.detach(), rtol=EXACT)
    multipliers = Multipliers(rho=0.9, delta=1.0, gamma=3.0, sigma=0.5)
    parameters = list(worlds.parameters())
    derived_gradient = gradients(objective(derived, multipliers), parameters)
    expected_gradient = gradients(
        torch.tensor(multipliers[:4], dtype=torch.float64) @ expected, parameters
    )
    for actual, wanted in zip(derived_gradient, expected_gradient, strict=True):
        assert_relative_close(actual, wanted, rtol=1e-7, atol=1e-12)


def test_fresh_parameter_draws_average_to_the_common_noise_value():
    """P fresh draws per call: the Monte Carlo mean over calls matches a large common-noise value."""
    worlds = ToyWorlds(seed=2, initial_log_alpha=-1.0, dtype=torch.float64, num_parameter_draws=64)
    cells = toy_data(NUM_EXAMPLES).cells()
    torch.manual_seed(0)
    draws = torch.stack(
        [
            torch.stack(
                list(functionals(worlds.model, worlds.guide, *cells, 50, num_examples=50))[:4]
            ).detach()
            for _ in range(20)
        ]
    )
    noise = torch.randn(20_000, 30, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    reference = _independent_functionals(worlds, cells, noise).detach()
    error = draws.std(0) / math.sqrt(draws.shape[0])  # Monte Carlo standard error of the mean
    # S is analytic (no Monte Carlo): equal; R, D, C within 4 standard errors of both estimates
    assert float(draws[:, 3].std()) == 0.0
    per_draw = _independent_functionals(worlds, cells, noise, per_draw=True).detach()
    reference_error = per_draw.std(0) / math.sqrt(noise.shape[0])
    bound = 4 * torch.sqrt(error**2 + reference_error**2)
    assert bool(((draws.mean(0) - reference).abs()[:3] <= bound[:3]).all()), (
        draws.mean(0),
        reference,
    )


def test_common_noise_log_normal_is_a_log_normal():
    loc, scale = torch.tensor([0.3, -1.0]), torch.tensor([0.5, 2.0])
    noise = torch.tensor([[1.5, -0.2]])
    fixed = CommonNoiseLogNormal(loc, scale, noise)
    assert torch.allclose(fixed.rsample(), torch.exp(loc + scale * noise))
    other = LogNormal(torch.tensor(0.0), torch.tensor(1.0))
    assert torch.allclose(kl_divergence(fixed, other), kl_divergence(LogNormal(loc, scale), other))
    with pytest.raises(ValueError, match="sample_shape"):
        fixed.rsample((3,))


@pytest.mark.parametrize("seed", range(4))
def test_rate_plus_distortion_bounds_hold_for_any_model(seed):
    """Eq. 12: R + D >= H(X) + I(Z; Theta | X), exactly, on the law the functionals average over."""
    worlds = ToyWorlds(seed=seed, initial_log_alpha=-0.5, dtype=torch.float64)
    noise = torch.randn(16, 30, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    for data in (toy_data(NUM_EXAMPLES, seed=seed), toy_data()):
        with torch.no_grad():
            values = functionals(
                worlds.model, worlds.guide, *data.cells(), 50, noise, num_examples=50
            )
            theta = worlds.parameter_posterior(noise).rsample().reshape(16, 1, 30)
            encoder = worlds.encoder_logits(torch.arange(30), theta).softmax(-1)
        p_x = data.joint.sum(1)
        tighter = entropy(p_x) + conditional_information(encoder, p_x)
        assert float(values.rate + values.distortion) >= float(tighter) - 1e-12
        assert float(conditional_information(encoder, p_x)) > 0


def test_multipliers_and_missing_sites_are_named():
    with pytest.raises(ValueError, match="sigma"):
        Multipliers(1, 0, 0, -0.1).checked()
    with pytest.raises(ValueError, match="delta"):
        Multipliers(1, float("nan"), 0, 0).checked()
    one = torch.tensor(1.0)
    values = Functionals(one, None, one, None)
    with pytest.raises(ValueError, match="'x'"):
        objective(values, Multipliers(1, 1, 0, 0))
    with pytest.raises(ValueError, match="'theta'"):
        objective(values, Multipliers(1, 0, 1, 0.5))
    assert float(objective(values, Multipliers(0.5, 0, 2, 0))) == pytest.approx(2.5)
    with pytest.raises(ValueError, match="every multiplier is zero"):
        objective(values, Multipliers(0, 0, 0, 0))


# Appendix A: the reconstruction-free world Q -------------------------------------------------------


@pytest.mark.parametrize("data", ["finite", "exact"])
def test_reconstruction_free_functionals_equal_the_tables(data):
    """V, C, S of the pair q(theta) prod q(z|x) q(y|z) against the tables, value and gradient."""
    worlds = ToyWorlds(
        seed=4, initial_log_alpha=-1.0, dtype=torch.float64, reconstruction_free=True
    )
    assert sum(p.numel() for p in worlds.parameters()) == 154
    x, y, probability = cells = (toy_data(NUM_EXAMPLES) if data == "finite" else toy_data()).cells()
    noise = torch.randn(5, 30, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    derived = functionals(
        worlds.model,
        worlds.guide,
        *cells,
        NUM_EXAMPLES,
        noise,
        num_examples=NUM_EXAMPLES,
        sites=RECONSTRUCTION_FREE_SITES,
    )
    assert derived.rate is None and derived.distortion is None

    # the tables, from the definitions of Appendix A
    alpha = worlds.encoder_log_alpha.exp()
    loc, scale = worlds.encoder_log_weight - alpha / 2, alpha.sqrt()
    theta = torch.exp(loc + scale * noise)  # [P, K]
    u = worlds.bin_positions[x]
    log_encoder = torch.log_softmax(
        -((theta[:, None, :] * u[None, :, None] - worlds.encoder_bias) ** 2), -1
    )  # [P, M, K]
    log_predictive = torch.log_softmax(
        -((worlds.predictive_weight * u[:, None] - worlds.predictive_bias) ** 2), -1
    )  # [M, K]
    s = worlds.latent_positions[:, None]
    log_classifier = torch.log_softmax(
        -((worlds.classifier_weight * s - worlds.classifier_bias) ** 2), -1
    )
    encoder = log_encoder.exp()
    volume = (probability * (encoder * (log_encoder - log_predictive)).sum(-1)).sum(-1).mean()
    classification = -(probability * (encoder * log_classifier[:, y].T).sum(-1)).sum(-1).mean()
    prior = LogNormal(torch.full_like(loc, worlds.prior_loc), worlds.prior_scale)
    entropy_term = kl_divergence(LogNormal(loc, scale), prior).sum() / NUM_EXAMPLES
    expected = torch.stack([volume, classification, entropy_term])
    got = torch.stack([derived.volume, derived.classification, derived.entropy])
    assert_relative_close(got.detach(), expected.detach(), rtol=EXACT)
    multipliers = Multipliers(rho=0, gamma=2.0, sigma=0.3, nu=1.0)
    parameters = list(worlds.parameters())
    derived_gradient = gradients(
        objective(derived, multipliers, RECONSTRUCTION_FREE_SITES), parameters
    )
    expected_gradient = gradients(volume + 2.0 * classification + 0.3 * entropy_term, parameters)
    for actual, wanted in zip(derived_gradient, expected_gradient, strict=True):
        assert_relative_close(actual, wanted, rtol=1e-7, atol=1e-12)


class _AveragedPredictive(ToyWorlds):
    """q(z | x) set to the parameter-averaged encoder at given draws: V's bound is then tight."""

    def __init__(self, noise: torch.Tensor):
        super().__init__(
            seed=5, initial_log_alpha=-0.5, dtype=torch.float64, reconstruction_free=True
        )
        with torch.no_grad():
            theta = self.parameter_posterior(noise).rsample().reshape(-1, 1, 30)
            encoder = self.encoder_logits(torch.arange(30), theta).softmax(-1).mean(0)
        self.register_buffer("averaged", encoder.log())

    def predictive_logits(self, x):
        return self.averaged[x]


def test_volume_bounds_the_conditional_information_and_meets_it():
    """V >= I(Z; Theta | X) (Appendix A), with equality for the averaged encoder as q(z | x)."""
    data = toy_data()
    noise = torch.randn(6, 30, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    tight = _AveragedPredictive(noise)
    loose = ToyWorlds(seed=5, initial_log_alpha=-0.5, dtype=torch.float64, reconstruction_free=True)
    theta = tight.parameter_posterior(noise).rsample().reshape(-1, 1, 30)
    per_draw = tight.encoder_logits(torch.arange(30), theta).softmax(-1)
    information = float(conditional_information(per_draw, data.joint.sum(-1)).detach())
    assert information > 1e-3  # the noise is large enough for the check to mean something
    for worlds, equal in ((tight, True), (loose, False)):
        values = functionals(
            worlds.model,
            worlds.guide,
            *data.cells(),
            1,
            noise,
            num_examples=1,
            sites=RECONSTRUCTION_FREE_SITES,
        )
        if equal:
            assert float(values.volume.detach()) == pytest.approx(information, rel=1e-10)
        else:
            assert float(values.volume.detach()) > information + 0.1


def test_reconstruction_free_worlds_have_no_decoder():
    worlds = ToyWorlds(reconstruction_free=True)
    with pytest.raises(ValueError, match="no q\\(x \\| z\\)"):
        worlds.decoder_logits()
    assert set(worlds.tables()) == {"encoder", "predictive", "classifier"}
    values = Functionals(None, None, torch.tensor(1.0), None, torch.tensor(2.0))
    with pytest.raises(
        ValueError, match=r"rho is 1\.0 but the programs have no sample site that carries it"
    ):
        objective(values, Multipliers(rho=1.0, nu=1.0), RECONSTRUCTION_FREE_SITES)
