"""The example scripts run end to end with their smoke-run flags."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(script: str, *flags: str, cwd: Path) -> str:
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *flags],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


def test_declare_latent_model(tmp_path):
    output = run("declare_latent_model.py", "--num-pairs", "32", "--steps", "2", cwd=tmp_path)
    assert "Derived bound at initialization" in output
    for term in ("z", "view1", "view2", "total"):
        assert f"\n{term}" in output


@pytest.mark.parametrize("flags", [("--replicates", "3", "--steps", "3")])
def test_compare_bounds(tmp_path, flags):
    output = run("compare_bounds.py", *flags, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert "MI bounds" in output and "sinkhorn" in output and "NMI" in output
    assert (tmp_path / "out" / "mi_bounds.png").stat().st_size > 10_000


def test_gedi_initializations_loss_is_the_derived_bound():
    """The example's closed form equals the loss the library derives from GEDI's program."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        from gedi_initializations import population_loss
    finally:
        sys.path.pop(0)
    from thermossl.methods import MethodSettings, build_method

    torch.manual_seed(0)
    method = build_method("gedi", 2, MethodSettings(normalizer="quadrature", quadrature_points=8))
    x1 = torch.randn(24, 2)
    x2 = x1 + 0.03 * torch.randn(24, 2)
    grid = method.sampler.init(x1)
    linears = [m for m in method.modules() if isinstance(m, torch.nn.Linear)]
    population = []
    for linear in linears:  # nn.Linear's [out, in] -> the example's [1, in, out] and [1, 1, out]
        population.append(linear.weight.detach().T[None].clone().requires_grad_())
        if linear.bias is not None:
            population.append(linear.bias.detach()[None, None].clone().requires_grad_())
    expected, _ = method.loss(x1, x2, grid)
    loss = population_loss(population, x1[None], x2[None], grid.points, grid.log_cell_volume)
    assert torch.allclose(loss[0], expected, rtol=1e-5)
    expected_grads = torch.autograd.grad(expected, [p for m in linears for p in m.parameters()])
    grads = torch.autograd.grad(loss[0], population)
    for got, want in zip(grads, expected_grads, strict=True):
        got = got[0].T if want.dim() == 2 else got.reshape(want.shape)
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)


def test_gedi_initializations_smoke(tmp_path):
    output = run("gedi_initializations.py", "--population", "2", "--iterations", "3", cwd=tmp_path)
    assert "iteration 3" in output and "initializations at NMI >= 0.95" in output
