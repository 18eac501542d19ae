"""TherML's worlds on digits (paper 003): the derived R, D, C against a computation by hand.

The hand computation writes every density from its formula (normal, mixture by log-sum-exp,
binomial by log-gamma, softmax) on the module's weights and the same latent noise, in float64;
the derived bound reads the same numbers off the Pyro programs' traces. The chains' vectorized
gradient is compared with a loop of plain derivations, one chain at a time.
"""

from __future__ import annotations

import math

import pytest
import torch
from thermossl.models.therml_digits import (
    DIGITS_SITES,
    MINIMUM_SCALE,
    ChainFunctionals,
    CommonNoiseNormal,
    DigitsWorlds,
    digits_data,
)
from thermossl.objectives import derive_bound
from thermossl.objectives.therml import Functionals, Multipliers, objective
from torch.nn.functional import log_softmax, softplus

from tests.common import assert_relative_close
from thermossl.therml_digits_chains import ThetaChains

EXACT = 1e-10


@pytest.fixture(scope="module")
def setting():
    data = digits_data(dtype=torch.float64)
    worlds = DigitsWorlds(latent_dim=3, hidden=8, num_components=4, seed=1, dtype=torch.float64)
    return data, worlds


def normal_log_density(value, loc, scale):
    return -0.5 * ((value - loc) / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)


def functionals_by_hand(worlds, pixels, labels, indices, noise, theta):
    """R, D, C summed over the N examples (N/B times the batch sum), from the formulas."""
    x, y = pixels[indices], labels[indices]
    features = torch.tanh(x / 16 @ worlds.encoder_trunk[0].weight.T + worlds.encoder_trunk[0].bias)
    outputs, hidden = 2 * worlds.latent_dim, features.shape[1]
    weight = theta[: outputs * hidden].reshape(outputs, hidden)
    output = features @ weight.T + theta[outputs * hidden :]
    loc, raw = output[:, : worlds.latent_dim], output[:, worlds.latent_dim :]
    scale = softplus(raw) + MINIMUM_SCALE
    z = loc + scale * noise
    log_encoder = normal_log_density(z, loc, scale).sum(-1)
    weights = log_softmax(worlds.mixture_logits, -1)
    components = normal_log_density(
        z[:, None, :], worlds.mixture_locs, softplus(worlds.mixture_scales_raw)
    ).sum(-1)
    log_marginal = torch.logsumexp(weights + components, dim=-1)
    first, second = worlds.decoder[0], worlds.decoder[2]
    logits = torch.tanh(z @ first.weight.T + first.bias) @ second.weight.T + second.bias
    log_choose = torch.lgamma(17 + 0 * x) - torch.lgamma(x + 1) - torch.lgamma(17 - x)
    log_one_minus = -torch.logaddexp(torch.zeros_like(logits), logits)  # log(1 - sigmoid)
    log_decoder = (log_choose + x * logits + 16 * log_one_minus).sum(-1)
    log_classifier = log_softmax(z @ worlds.classifier.weight.T + worlds.classifier.bias, -1)
    log_label = log_classifier.gather(-1, y[:, None]).squeeze(-1)
    scale_up = pixels.shape[0] / indices.shape[0]
    return (
        scale_up * (log_encoder - log_marginal).sum(),
        -scale_up * log_decoder.sum(),
        -scale_up * log_label.sum(),
    )


@pytest.mark.parametrize("perturbed", [False, True], ids=["own theta", "given theta"])
def test_derived_functionals_equal_the_hand_computation(setting, perturbed):
    data, worlds = setting
    generator = torch.Generator().manual_seed(0)
    indices = torch.randperm(data.train_pixels.shape[0], generator=generator)[:40]
    noise = torch.randn(40, 3, generator=generator, dtype=torch.float64)
    theta = worlds.head_vector()
    given = None
    if perturbed:
        given = theta = theta + 0.3 * torch.randn(
            theta.shape, generator=generator, dtype=theta.dtype
        )
    bound = derive_bound(
        worlds.model, worlds.guide, data.train_pixels, data.train_labels, indices, noise, given
    )
    rate, distortion, classification = functionals_by_hand(
        worlds, data.train_pixels, data.train_labels, indices, noise, theta
    )
    assert list(bound.terms) == ["z", "x", "y"]
    assert_relative_close(-bound.terms["z"].detach(), rate.detach(), EXACT)
    assert_relative_close(-bound.terms["x"].detach(), distortion.detach(), EXACT)
    assert_relative_close(-bound.terms["y"].detach(), classification.detach(), EXACT)


def test_chain_functionals_equal_one_derivation_per_chain(setting):
    data, worlds = setting
    generator = torch.Generator().manual_seed(1)
    theta = worlds.head_vector() + 0.2 * torch.randn(
        5, worlds.head_size, generator=generator, dtype=torch.float64
    )
    noise = torch.randn(5, 30, 3, generator=generator, dtype=torch.float64)
    indices = torch.arange(30)
    chains = ChainFunctionals(worlds)(theta, data.train_pixels, data.train_labels, indices, noise)
    size = data.train_pixels.shape[0]
    for chain in range(5):
        single = functionals_by_hand(
            worlds, data.train_pixels, data.train_labels, indices, noise[chain], theta[chain]
        )
        for vectorized, by_hand in zip(chains[:3], single, strict=True):
            assert_relative_close(vectorized[chain].detach(), by_hand.detach() / size, EXACT)


def test_chain_gradients_equal_a_loop_of_derivations(setting):
    """The kernel's vectorized gradient in whitened u, and world Q's accumulated gradient."""
    data, worlds = setting
    multipliers = Multipliers(1.0, 0.5, 2.0)
    chains = ThetaChains(
        worlds, multipliers, data.train_pixels, data.train_labels, prior_scale=0.7, batch_size=32
    )
    generator = torch.Generator().manual_seed(2)
    metric = chains.kronecker_curvature(worlds.head_vector(), generator)
    beta, num_chains = 0.3, 3
    u = torch.randn(num_chains, worlds.head_size, generator=generator, dtype=torch.float64)
    batch = chains.batch(num_chains, generator, chains.stream(generator))
    point = [p for name, p in worlds.named_parameters() if not name.startswith("encoder_head.")]
    for parameter in point:
        parameter.grad = None
    estimate = chains.potential(beta, metric, point)(u, batch)
    accumulated = [parameter.grad.clone() for parameter in point]
    for parameter in point:
        parameter.grad = None

    size = data.train_pixels.shape[0]
    averaged = [torch.zeros_like(parameter) for parameter in point]
    for chain in range(num_chains):
        position = u[chain].clone().requires_grad_()
        theta = metric.to_theta(position, beta)
        bound = derive_bound(
            worlds.model,
            worlds.guide,
            data.train_pixels,
            data.train_labels,
            batch.indices,
            batch.latent_noise[chain],
            theta,
        )
        energy = size * objective(Functionals.from_bound(bound, size, DIGITS_SITES), multipliers)
        prior = torch.distributions.Normal(0.0, 0.7).log_prob(theta).sum()
        value = energy - prior / beta
        gradients = torch.autograd.grad(value, [position, *point])
        assert_relative_close(estimate.value[chain], value.detach(), EXACT)
        assert_relative_close(estimate.gradient[chain], gradients[0], EXACT, atol=1e-9)
        for total, gradient in zip(averaged, gradients[1:], strict=True):
            total += gradient / (num_chains * size)
    for total, gradient in zip(averaged, accumulated, strict=True):
        assert_relative_close(gradient, total, EXACT, atol=1e-12)


def test_whitened_coordinates_are_a_bijection_fitted_to_the_bias_block(setting):
    """theta = V diag(scales) u inverts exactly, and V diag(lambda) V^T holds the bias Hessian."""
    data, worlds = setting
    chains = ThetaChains(
        worlds, Multipliers(1, 1, 1), data.train_pixels, data.train_labels, prior_scale=0.5
    )
    theta = worlds.head_vector()
    metric = chains.kronecker_curvature(theta, torch.Generator().manual_seed(3))
    basis = metric.basis
    assert torch.allclose(basis.T @ basis, torch.eye(basis.shape[0], dtype=basis.dtype), atol=1e-12)
    draws = torch.randn(4, theta.shape[0], dtype=torch.float64)
    assert torch.allclose(metric.to_theta(metric.to_whitened(draws, 0.2), 0.2), draws, atol=1e-12)
    # the bias block of G (x) A is G * A[1, 1] = G, the exact Hessian in the bias (eigenvalues
    # clamped at 0)
    bias = slice(theta.shape[0] - 6, None)
    batch = chains.batch(1, torch.Generator().manual_seed(3))  # the metric's first draw
    weights = theta[: theta.shape[0] - 6]

    def energy(b):
        return chains.objective(torch.cat([weights, b]).unsqueeze(0), batch)[0]

    hessian = torch.autograd.functional.hessian(energy, theta[bias])
    values, vectors = torch.linalg.eigh(0.5 * (hessian + hessian.T))
    clamped = vectors @ torch.diag(values.clamp_min(0)) @ vectors.T
    approximation = basis @ torch.diag(metric.curvature) @ basis.T
    assert_relative_close(approximation[bias, bias], clamped, 1e-8, atol=1e-8)


def test_common_noise_normal_draws_its_noise_only():
    law = CommonNoiseNormal(torch.zeros(2), torch.ones(2), torch.tensor([0.5, -1.0]))
    assert torch.equal(law.expand([3, 2]).rsample(), torch.tensor([0.5, -1.0]).expand(3, 2))
    with pytest.raises(ValueError, match="no sample_shape"):
        law.rsample((4,))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p, y, i, e: (p[:, :63], y, i, e), r"pixels must have shape \(N, 64\)"),
        (lambda p, y, i, e: (p + 0.5, y, i, e), "pixels must hold whole numbers in \\[0, 16\\]"),
        (lambda p, y, i, e: (p * 2, y, i, e), "pixels must hold whole numbers in \\[0, 16\\]"),
        (lambda p, y, i, e: (-p, y, i, e), "pixels must hold whole numbers"),
        (lambda p, y, i, e: (p, y + 5, i, e), r"labels must hold whole numbers in \[0, 9\]"),
        (lambda p, y, i, e: (p, y.double(), i, e), "labels must be a 1-d int64 tensor"),
        (lambda p, y, i, e: (p, y[:-1], i, e), "the same N examples"),
        (lambda p, y, i, e: (p, y, i + 2000, e), "indices must hold whole numbers"),
        (lambda p, y, i, e: (p, y, i, e[:, :2]), r"latent_noise must have shape \(8, 3\)"),
    ],
)
def test_bad_inputs_are_named(setting, change, message):
    data, worlds = setting
    arguments = (
        data.train_pixels,
        data.train_labels,
        torch.arange(8),
        torch.zeros(8, 3, dtype=torch.float64),
    )
    with pytest.raises(ValueError, match=message):
        derive_bound(worlds.model, worlds.guide, *change(*arguments))


def test_bad_theta_and_sizes_are_named(setting):
    data, worlds = setting
    with pytest.raises(ValueError, match="theta must end in the 54 entries"):
        worlds.encoder(data.train_pixels[:2], torch.zeros(53, dtype=torch.float64))
    with pytest.raises(ValueError, match="latent_dim must be a positive integer"):
        DigitsWorlds(latent_dim=0)
    with pytest.raises(ValueError, match="one row per chain"):
        ChainFunctionals(worlds)(
            torch.zeros(2, 54, dtype=torch.float64),
            data.train_pixels,
            data.train_labels,
            torch.arange(4),
            torch.zeros(3, 4, 3, dtype=torch.float64),
        )
