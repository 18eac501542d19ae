"""Quadrature log-normalizer: closed forms, exact gradients, and its place in GEDI training."""

from __future__ import annotations

import math

import pytest
import torch
from thermossl.inference.quadrature import GridQuadrature
from thermossl.models.gedi import EnergyModel

from thermossl.training import TrainingConfig, load_checkpoint, start, train


def gaussian_box_log_normalizer(mean, scale, lower, upper) -> float:
    """log of the integral of exp(-|x - mean|^2 / (2 scale^2)) over a box, by erf, per axis."""
    total = 0.0
    for m, s, lo, hi in zip(mean, scale, lower, upper, strict=True):
        a, b = (lo - m) / (s * math.sqrt(2)), (hi - m) / (s * math.sqrt(2))
        total += math.log(s * math.sqrt(math.pi / 2) * (math.erf(b) - math.erf(a)))
    return total


def test_the_midpoint_rule_matches_the_gaussian_closed_form_on_a_box():
    """Midpoint-rule error is O(h^2): with 400 cells per axis it is far below 1e-5."""
    data = torch.tensor([[-1.0, -0.5], [2.0, 1.0]], dtype=torch.float64)
    quadrature = GridQuadrature(points_per_axis=400, margin=0.0)
    grid = quadrature.init(data)
    mean, scale = torch.tensor([0.3, 0.2]).double(), torch.tensor([0.7, 0.4]).double()

    def energy(x):
        return 0.5 * (((x - mean) / scale) ** 2).sum(-1)

    truth = gaussian_box_log_normalizer(mean.tolist(), scale.tolist(), [-1, -0.5], [2, 1])
    assert float(grid.log_normalizer(energy)) == pytest.approx(truth, abs=1e-5)
    assert grid.points.shape == (400 * 400, 2)
    assert math.exp(grid.log_cell_volume) == pytest.approx(3.0 * 1.5 / 400**2, rel=1e-12)


def test_the_generative_term_has_the_exact_log_likelihood_gradient():
    """With the grid, log p(x) and its gradient in the energy's parameters are exact (to the
    quadrature error): here d/d(mean) log N_box(x; mean, scale) by autograd of the erf form."""
    data = torch.tensor([[-2.0], [3.0]], dtype=torch.float64)
    grid = GridQuadrature(points_per_axis=20_000, margin=0.0).init(data)
    mean = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    scale = 0.8

    def energy(x):
        return 0.5 * ((x[:, 0] - mean) / scale) ** 2

    x = torch.tensor([[0.1], [1.2], [-0.7]], dtype=torch.float64)
    value = EnergyModel(energy, grid, batch_size=3).log_prob(x).sum()
    (gradient,) = torch.autograd.grad(value, mean)

    m = mean.detach().clone().requires_grad_(True)
    a = (-2.0 - m) / (scale * math.sqrt(2))
    b = (3.0 - m) / (scale * math.sqrt(2))
    log_z = torch.log(scale * math.sqrt(math.pi / 2) * (torch.erf(b) - torch.erf(a)))
    exact = (-0.5 * ((x[:, 0] - m) / scale) ** 2 - log_z).sum()
    (expected,) = torch.autograd.grad(exact, m)
    assert float(value.detach()) == pytest.approx(float(exact.detach()), abs=1e-7)
    assert float(gradient) == pytest.approx(float(expected), abs=1e-7)


def test_bad_grids_are_refused():
    with pytest.raises(ValueError, match="d <= 3"):
        GridQuadrature().init(torch.randn(10, 4))
    with pytest.raises(ValueError, match="flat"):
        GridQuadrature().init(torch.zeros(10, 2))
    with pytest.raises(ValueError, match="points_per_axis"):
        GridQuadrature(points_per_axis=0)
    with pytest.raises(ValueError, match="margin"):
        GridQuadrature(margin=-0.1)


def test_gedi_trains_and_resumes_with_the_quadrature_normalizer(tmp_path):
    config = TrainingConfig(method="gedi", data="circles", seed=1, iterations=4, batch_size=32)
    config.settings.normalizer = "quadrature"
    config.settings.quadrature_points = 16
    run, data = train(config, tmp_path, progress=False)
    # the bound's generative term is the mean log-density on the box, computed independently
    method, x1 = run.method, data.train_inputs[:32]
    _, terms = method.loss(x1, x1 + 0.03, run.buffer)
    points, log_cell = run.buffer
    with torch.no_grad():
        log_z = torch.logsumexp(-method.energy(points), 0) + log_cell
        expected = float((-method.energy(x1) - log_z).mean())
    assert terms["x"] == pytest.approx(expected, rel=1e-5)
    fresh = load_checkpoint(start(config, data), tmp_path / "checkpoint.pt")
    assert torch.equal(fresh.buffer.points, run.buffer.points)
    assert fresh.buffer.log_cell_volume == run.buffer.log_cell_volume
    config.settings.normalizer = "exact"
    with pytest.raises(ValueError, match="unknown normalizer 'exact'"):
        train(config, tmp_path / "bad", progress=False)
