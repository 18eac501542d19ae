"""The Kalman-predictive LDM program: its law against Pyro's GaussianHMM, its two entropy terms."""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch
from thermossl.models.ldm_kalman import KalmanLDM
from thermossl.objectives.entropy import knn_entropy
from torch import nn

from tests.common import assert_relative_close, gradients, mlp


def _program(entropy="knn", noise_aware=False, state_dim=3, seed=0):
    torch.manual_seed(seed)
    program = KalmanLDM(
        mlp(4, 2, seed=seed),
        latent_dim=2,
        state_dim=state_dim,
        entropy=entropy,
        noise_aware=noise_aware,
    ).double()
    with torch.no_grad():  # move away from the initialization's symmetric values
        generator = torch.Generator().manual_seed(seed + 1)
        for parameter in (program.transition_matrix, program.stationary_mean):
            parameter.add_(
                0.2 * torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
            )
        program.log_transition_variance.fill_(-1.0)
        program.log_observation_variance.copy_(torch.tensor([-0.5, 0.3]))
        program.log_scale.fill_(0.2)
        if noise_aware:
            program.noise_slope.fill_(1.5)
    return program


def _gaussian_hmm(program, steps, noise_level=None):
    """The same latent model written with Pyro's GaussianHMM (right-multiplication convention)."""
    A = program.transition_matrix
    D = A.shape[0]
    eye = torch.eye(D, dtype=A.dtype)
    scale = program.log_scale.exp()
    offset = (eye - A) @ program.stationary_mean
    transition = dist.MultivariateNormal(
        offset, torch.diag(scale * program.log_transition_variance.exp())
    )
    log_variance = program.log_observation_variance
    if noise_level is not None:
        log_variance = log_variance + program.noise_slope * noise_level.log().unsqueeze(-1)
    observation = dist.MultivariateNormal(
        torch.zeros(2, dtype=A.dtype), torch.diag_embed(scale * log_variance.exp())
    )
    return dist.GaussianHMM(
        dist.MultivariateNormal(torch.zeros(D, dtype=A.dtype), eye),
        A.T,
        transition,
        eye[:2].T,
        observation,
        duration=steps,
    )


FRAMES = torch.randn(4, 9, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(7))


def test_the_latent_term_is_gaussian_hmm_log_prob_with_hidden_states():
    program = _program()
    bound = program.bound(FRAMES)
    z = program.latents(FRAMES)
    expected = _gaussian_hmm(program, 9).log_prob(z).sum()
    assert_relative_close(bound.terms["z"], expected, rtol=1e-10)
    parameters = list(program.parameters())
    for actual, wanted in zip(
        gradients(program.bound(FRAMES).terms["z"], parameters),
        gradients(_gaussian_hmm(program, 9).log_prob(program.latents(FRAMES)).sum(), parameters),
        strict=True,
    ):
        assert_relative_close(actual, wanted, rtol=1e-8, atol=1e-10)


def test_the_knn_entropy_is_the_pooled_single_step_estimate_times_the_frame_count():
    program = _program()
    z = program.latents(FRAMES)
    expected = 4 * 9 * knn_entropy(z.reshape(-1, 2))
    assert_relative_close(program.bound(FRAMES).terms["entropy"], expected)


def test_noise_aware_covariances_read_the_noise_level():
    program = _program(noise_aware=True)
    noise = torch.rand(4, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) + 0.05
    z = program.latents(FRAMES)
    expected = _gaussian_hmm(program, 9, noise).log_prob(z).sum()
    assert_relative_close(program.bound(FRAMES, noise).terms["z"], expected, rtol=1e-10)
    with pytest.raises(ValueError, match="noise_level"):
        program.bound(FRAMES)
    with pytest.raises(ValueError, match="noise_level"):
        program.bound(FRAMES, noise[:, :3])


def test_stopgrad_cancels_in_value_and_detaches_each_target_in_gradient():
    """Eq. 54-55: log p(z) + H_plugin = 0, and its gradient is that of
    sum_t log N(sg(z_t); H m_t(z_<t), S_t)."""
    program = _program(entropy="stopgrad")
    bound = program.bound(FRAMES)
    assert abs(float(bound.total.detach())) < 1e-9 * abs(float(bound.terms["z"].detach()))
    parameters = list(program.parameters())
    z = program.latents(FRAMES)
    law = program.latent_law(4, 9)
    result = law.filter(z)
    H = torch.eye(3, dtype=torch.float64)[:2]
    covariance = H @ result.predicted_covariance @ H.T + law.parameters[4]
    detached_targets = dist.MultivariateNormal(result.predicted_mean @ H.T, covariance).log_prob(
        z.detach()
    )
    for actual, wanted in zip(
        gradients(program.bound(FRAMES).total, parameters),
        gradients(detached_targets.sum(), parameters),
        strict=True,
    ):
        assert_relative_close(actual, wanted, rtol=1e-8, atol=1e-10)


def test_filtered_states_come_from_the_same_law():
    program = _program()
    result = program.filter(FRAMES)
    assert result.filtered_mean.shape == (4, 9, 3)
    assert_relative_close(result.log_likelihood.sum(), program.bound(FRAMES).terms["z"])


def test_bad_settings_and_inputs_are_named():
    with pytest.raises(ValueError, match="state_dim"):
        KalmanLDM(nn.Identity(), latent_dim=3, state_dim=2)
    with pytest.raises(ValueError, match="entropy"):
        KalmanLDM(nn.Identity(), latent_dim=2, entropy="kde")
    with pytest.raises(ValueError, match="entropy_options"):
        KalmanLDM(nn.Identity(), latent_dim=2, entropy="stopgrad", entropy_options={"k": 3})
    program = _program()
    with pytest.raises(ValueError, match="encoder"):
        KalmanLDM(mlp(4, 3), latent_dim=2).double().bound(FRAMES)
    frames = FRAMES.clone()
    frames[0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="frames"):
        program.bound(frames)


def test_contrastive_entropy_makes_the_goal_infonce_over_time():
    """With the predictive densities as kernels, G = sum_i log softmax_j(log N(z_i; m_j, S_j))_i
    + M log M: CPC's InfoNCE with the Kalman predictive log-density as the critic. The critic is
    recomputed here one candidate at a time from the filter's moments."""
    program = _program(entropy="contrastive", noise_aware=True)
    noise = torch.rand(4, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) + 0.05
    z = program.latents(FRAMES)
    law = program.latent_law(4, 9, noise)
    result = law.filter(z)
    H = torch.eye(3, dtype=torch.float64)[:2]
    means = (result.predicted_mean @ H.T).reshape(-1, 2)
    covariances = (H @ result.predicted_covariance @ H.T + law.parameters[4]).reshape(-1, 2, 2)
    latents = z.reshape(-1, 2)
    logits = torch.stack(
        [
            dist.MultivariateNormal(means[j], covariances[j]).log_prob(latents)
            for j in range(latents.shape[0])
        ],
        dim=-1,
    )
    M = latents.shape[0]
    infonce = torch.nn.functional.cross_entropy(logits, torch.arange(M), reduction="sum")
    bound = program.bound(FRAMES, noise)
    assert_relative_close(bound.total, -infonce + M * math.log(M), rtol=1e-10)
    parameters = list(program.parameters())
    for actual, wanted in zip(
        gradients(bound.total, parameters), gradients(-infonce, parameters), strict=True
    ):
        assert_relative_close(actual, wanted, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("entropy", ["knn", "stopgrad", "contrastive"])
def test_one_bound_runs_the_filter_once(entropy, monkeypatch):
    """log p(z) and the entropy estimate share one filter pass over the latents."""
    import thermossl.models.ldm_kalman as module

    calls = []
    original = module.kalman_filter
    monkeypatch.setattr(
        module, "kalman_filter", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    _program(entropy=entropy).bound(FRAMES)
    assert len(calls) == 1
