"""CPC as LDM over time: the derived bound is InfoNCE with every other (sequence, step) as negative."""

from __future__ import annotations

import math

import pytest
import torch
from thermossl.models.ldm_cpc import PredictiveCPC
from thermossl.objectives.losses import info_nce

from tests.common import assert_relative_close, gradients, mlp


def _program(seed=0):
    torch.manual_seed(seed)
    return PredictiveCPC(
        mlp(4, 3, seed=seed), latent_dim=3, context_dim=5, concentration=4.0
    ).double()


def test_derived_bound_is_infonce_over_time_in_value_and_gradient():
    program = _program()
    frames = torch.randn(5, 7, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    count = 5 * 6
    goal = program.bound(frames).total / count
    z = program.latents(frames)
    mu = program.predictions(z).reshape(-1, 3)
    loss = info_nce(z[:, 1:].reshape(-1, 3), mu, temperature=1 / 4.0)
    assert_relative_close(goal, -loss + math.log(count))
    parameters = list(program.parameters())
    for actual, wanted in zip(
        gradients(program.bound(frames).total / count, parameters),
        gradients(-info_nce(z[:, 1:].reshape(-1, 3), mu, 0.25), parameters),
        strict=True,
    ):
        assert_relative_close(actual, wanted, atol=1e-12)


def test_the_prediction_term_is_the_von_mises_fisher_log_density():
    program = _program()
    frames = torch.randn(2, 3, 4, dtype=torch.float64)
    z = program.latents(frames)
    mu = program.predictions(z)
    cosines = (mu * z[:, 1:]).sum(-1)
    # d = 3: log C = log(kappa / (4 pi sinh kappa))
    log_normalizer = math.log(4.0 / (4 * math.pi * math.sinh(4.0)))
    expected = (4.0 * cosines + log_normalizer).sum()
    assert_relative_close(program.bound(frames).terms["z_next"], expected)


def test_the_context_sees_only_the_past():
    program = _program()
    frames = torch.randn(1, 6, 4, dtype=torch.float64)
    changed = frames.clone()
    changed[0, 4:] += 1.0
    before = program.predictions(program.latents(frames))
    after = program.predictions(program.latents(changed))
    assert torch.equal(before[:, :4], after[:, :4])  # mu_t for t < 4 ignores frames 4, 5


def test_bad_input_is_named():
    program = _program()
    with pytest.raises(ValueError, match="time steps"):
        program.bound(torch.randn(2, 1, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="latent_dim"):
        PredictiveCPC(mlp(4, 1), latent_dim=1)
    with pytest.raises(ValueError, match="concentration"):
        PredictiveCPC(mlp(4, 3), latent_dim=3, concentration=0.0)
    frames = torch.randn(2, 3, 4, dtype=torch.float64)
    frames[0, 1, 2] = math.nan
    with pytest.raises(ValueError, match="frames"):
        program.bound(frames)
