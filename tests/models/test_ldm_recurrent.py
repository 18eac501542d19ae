"""The recurrent predictive LDM program: its log-likelihood against a hand-written LSTM recursion,
its kNN entropy term, and the stop-gradient identity."""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch
from thermossl.models.ldm_recurrent import RecurrentLDM
from thermossl.objectives.entropy import knn_entropy
from torch import nn

from tests.common import assert_relative_close, gradients, mlp

FRAMES = torch.randn(5, 7, 4, generator=torch.Generator().manual_seed(11), dtype=torch.float64)


def _program(entropy="knn", seed=0):
    torch.manual_seed(seed)
    program = RecurrentLDM(mlp(4, 2, seed=seed), latent_dim=2, hidden_dim=6, entropy=entropy)
    program = program.double()
    with torch.no_grad():
        program.log_scale.copy_(torch.tensor([-0.4, 0.3]))
    return program


def _lstm_by_hand(lstm: nn.LSTM, inputs: torch.Tensor) -> torch.Tensor:
    """h_t of one LSTM layer, step by step from its equations (input, forget, cell, output gates
    stacked in that order in ``weight_ih_l0`` and ``weight_hh_l0``), zero initial state."""
    batch, steps, _ = inputs.shape
    size = lstm.hidden_size
    h = inputs.new_zeros(batch, size)
    c = inputs.new_zeros(batch, size)
    outputs = []
    for t in range(steps):
        gates = (
            inputs[:, t] @ lstm.weight_ih_l0.T
            + lstm.bias_ih_l0
            + h @ lstm.weight_hh_l0.T
            + lstm.bias_hh_l0
        )
        i, f, g, o = gates.split(size, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outputs.append(h)
    return torch.stack(outputs, dim=1)


def test_the_latent_term_is_the_sum_of_gaussian_one_step_predictions():
    program = _program()
    z = program.latents(FRAMES)
    hidden = _lstm_by_hand(program.recurrence, z[:, :-1])
    mean = z[:, :-1] + program.head(hidden)
    scale = program.log_scale.exp()
    expected = sum(
        -0.5 * ((z[:, 1:, d] - mean[..., d]) / scale[d]).square()
        - torch.log(scale[d])
        - 0.5 * math.log(2 * math.pi)
        for d in range(2)
    ).sum()
    bound = program.bound(FRAMES)
    assert_relative_close(bound.terms["z_next"], expected, rtol=1e-10)
    parameters = list(program.parameters())
    for actual, wanted in zip(
        gradients(bound.terms["z_next"], parameters), gradients(expected, parameters), strict=True
    ):
        assert_relative_close(actual, wanted, rtol=1e-8, atol=1e-12)


def test_the_prediction_of_step_t_reads_only_the_past():
    program = _program()
    z = program.latents(FRAMES).detach()
    changed = z.clone()
    changed[:, 4:] += 1.0  # steps 5..7 (0-based 4..6)
    before, after = program.predictions(z), program.predictions(changed)
    # predictions[:, j] is the prediction of step j + 2 (1-based); it reads z_1..z_{j+1}
    assert torch.equal(before[:, :4], after[:, :4])
    assert not torch.allclose(before[:, 4:], after[:, 4:])


def test_the_knn_entropy_pools_the_predicted_frames_times_their_count():
    program = _program()
    z = program.latents(FRAMES)
    expected = 5 * 6 * knn_entropy(z[:, 1:].reshape(-1, 2), k=3, clip_quantile=0.9)
    assert_relative_close(program.bound(FRAMES).terms["entropy"], expected)


def test_stopgrad_cancels_in_value_and_detaches_each_target_in_gradient():
    """Eq. 54-55: the goal's value is 0 and its gradient is that of sum log N(sg(z_t); mu_t, sigma)."""
    program = _program(entropy="stopgrad")
    bound = program.bound(FRAMES)
    assert abs(float(bound.total.detach())) < 1e-12 * abs(float(bound.terms["z_next"].detach()))
    z = program.latents(FRAMES)
    detached_targets = (
        dist.Normal(program.predictions(z), program.log_scale.exp()).log_prob(z[:, 1:].detach())
    ).sum()
    parameters = list(program.parameters())
    for actual, wanted in zip(
        gradients(bound.total, parameters), gradients(detached_targets, parameters), strict=True
    ):
        assert_relative_close(actual, wanted, rtol=1e-8, atol=1e-12)


def test_bad_settings_and_inputs_are_named():
    with pytest.raises(ValueError, match="entropy"):
        RecurrentLDM(nn.Identity(), latent_dim=2, entropy="kde")
    with pytest.raises(ValueError, match="entropy_options"):
        RecurrentLDM(nn.Identity(), latent_dim=2, entropy="stopgrad", entropy_options={"k": 3})
    with pytest.raises(ValueError, match="hidden_dim"):
        RecurrentLDM(nn.Identity(), latent_dim=2, hidden_dim=0)
    program = _program()
    with pytest.raises(ValueError, match="time steps"):
        program.bound(FRAMES[:, :1])
    with pytest.raises(ValueError, match="encoder"):
        RecurrentLDM(mlp(4, 3), latent_dim=2).double().bound(FRAMES)
    frames = FRAMES.clone()
    frames[1, 2, 3] = math.nan
    with pytest.raises(ValueError, match="frames"):
        program.bound(frames)
