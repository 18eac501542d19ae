"""On a GPU: every family's derived bound and its traced replay equal the CPU computation.

Skipped on machines without CUDA (CI has none); run on a GPU machine with
``pytest tests/test_cuda.py``.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from thermossl.inference import sinkhorn_knopp
from thermossl.objectives import TracedBound, derive_bound

from tests.common import assert_relative_close, family_programs, gradients, two_views

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("name", list(family_programs()))
@pytest.mark.parametrize("traced", [False, True], ids=["derived", "traced"])
def test_gpu_equals_cpu(name, traced):
    cpu_program = family_programs()[name]
    gpu_program = copy.deepcopy(cpu_program).cuda()
    x1, x2 = two_views(32, 3, seed=1)
    results = []
    for program, device in ((cpu_program, "cpu"), (gpu_program, "cuda")):
        inputs = (x1.to(device), x2.to(device))
        if traced:
            bound = TracedBound(program)(*inputs)
        else:
            bound = derive_bound(program.model, program.guide, *inputs)
        assert bound.total.device.type == device
        results.append((bound.total, gradients(bound.total, program.parameters())))
    (cpu_total, cpu_grads), (gpu_total, gpu_grads) = results
    assert_relative_close(gpu_total.detach().cpu(), cpu_total.detach(), rtol=1e-10)
    scale = max(float(g.abs().max()) for g in cpu_grads)
    for got, expected in zip(gpu_grads, cpu_grads, strict=True):
        assert_relative_close(got.cpu(), expected, rtol=1e-8, atol=1e-10 * scale)


def test_sinkhorn_on_gpu_equals_cpu():
    energies = torch.randn(
        4, 64, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    cpu = sinkhorn_knopp(energies, beta=5.0, tolerance=1e-12)
    gpu = sinkhorn_knopp(energies.cuda(), beta=5.0, tolerance=1e-12)
    assert_relative_close(gpu.cpu(), cpu, rtol=1e-9)


@pytest.mark.parametrize("kernel", ["sgld", "sghmc"])
@pytest.mark.parametrize("block_size", [1, 10])
def test_sampling_on_gpu_matches_the_conjugate_posterior(kernel, block_size):
    """Chains, minibatch indices and noise live on the GPU; the mean is the closed form's."""
    import arviz as az
    import pyro
    import pyro.distributions as dist
    from thermossl.inference import Potential, sample

    generator = torch.Generator().manual_seed(0)
    n, d = 200, 3
    X = torch.randn(n, d, generator=generator, dtype=torch.float64).cuda()
    w_true = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, device="cuda")
    y = X @ w_true + 0.5 * torch.randn(n, generator=generator, dtype=torch.float64).cuda()

    def model(X, y, batch_size=None):
        w = pyro.sample(
            "w", dist.Normal(torch.zeros(d, dtype=X.dtype, device=X.device), 1.0).to_event(1)
        )
        with pyro.plate("data", n, subsample_size=batch_size) as index:
            pyro.sample("y", dist.Normal(X[index] @ w, 0.5), obs=y[index])

    precision = torch.eye(d, dtype=torch.float64, device="cuda") + X.T @ X / 0.25
    mean = torch.linalg.solve(precision, X.T @ y / 0.25).cpu().numpy()
    step = 0.02 / float(torch.linalg.eigvalsh(precision).max())
    idata = sample(
        Potential.from_pyro_model(model, X, y),
        kernel,
        step_size=step if kernel == "sgld" else step**0.5,
        friction=20.0,
        num_chains=64,
        num_draws=400,
        num_warmup=400,
        device="cuda",
        dtype=torch.float64,
        block_size=block_size,
        progress=False,
    )
    draws = idata.posterior["w"].values
    error = az.mcse(idata, var_names=["w"], method="mean")["w"].values
    assert np.all(np.abs(draws.mean((0, 1)) - mean) < 4 * error)


def test_gedi_training_step_on_gpu_is_the_cpu_loss_of_its_draws():
    """A whole GEDI iteration runs on the GPU: minibatch, augmentation, Langevin samples, Adam step.

    The draws are replayed from a copy of the generator with a copy of the model as it was before
    the step, and the same loss is evaluated on the CPU in float64.
    """
    from thermossl.models.datasets import load_dataset

    from thermossl.training import TrainingConfig, start, to_device, training_step

    config = TrainingConfig(method="gedi", data="moons", seed=0, generative_warmup=0)
    data = load_dataset("moons", 0)
    run = start(config, data)
    assert run.method.needs_samples
    cpu_method = copy.deepcopy(run.method).double()
    run = to_device(run, "cuda")
    assert run.generator.device.type == "cuda"
    inputs = data.train_inputs.cuda()
    before, buffer = copy.deepcopy(run.method), run.buffer
    replay = torch.Generator("cuda")
    replay.set_state(run.generator.get_state())

    terms = training_step(run, config, inputs)

    index = torch.randint(inputs.shape[0], (config.batch_size,), generator=replay, device="cuda")
    x1 = inputs[index]
    x2 = x1 + config.augmentation_noise * torch.randn(x1.shape, generator=replay, device="cuda")
    _, samples, _ = before.sampler.sample(
        buffer, before.energy, config.batch_size, generator=replay
    )
    cpu_loss, _ = cpu_method.loss(*(t.detach().cpu().double() for t in (x1, x2, samples)))
    # float32 on the GPU against float64: a sum over 400 pairs, relative error well below 1e-4
    expected = float(cpu_loss.detach())
    assert abs(terms["loss"] - expected) <= 1e-4 * max(1.0, abs(expected))
    assert run.buffer.samples.device.type == "cuda"
    assert all(p.device.type == "cuda" and torch.isfinite(p).all() for p in run.method.parameters())


def test_cycle_recorder_on_gpu_equals_cpu():
    """One recorded SwAV cycle (float64): heat, swap heat, work and W_irr agree across devices."""
    import functools

    from thermossl.methods import build_method
    from thermossl.thermo_cycles import CycleRecorder, cycle_rule, system_energies

    rows = []
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        method = build_method("swav", input_dim=2).double().to(device)
        generator = torch.Generator().manual_seed(1)
        x1 = torch.randn(64, 2, generator=generator, dtype=torch.float64)
        x1, x2 = x1.to(device), (x1 + 0.03 * torch.randn(x1.shape, generator=generator)).to(device)
        optimizer = torch.optim.SGD(method.parameters(), lr=0.01)

        def step(method=method, optimizer=optimizer, x1=x1, x2=x2):
            optimizer.zero_grad()
            loss, _ = method.loss(x1, x2)
            loss.backward()
            optimizer.step()
            return {"loss": loss.item()}

        recorder = CycleRecorder(
            functools.partial(system_energies, method), cycle_rule(method), method
        )
        rows.append(recorder.cycle(x1, x2, step))
    for key in ("heating_heat", "swap_heat", "work", "irreversible_work", "internal_energy"):
        assert rows[1][key] == pytest.approx(rows[0][key], rel=1e-8, abs=1e-12), key
