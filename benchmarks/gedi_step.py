"""Time per training iteration of GEDI against SwAV and JEM, and the share spent in Langevin sampling.

One iteration is :func:`thermossl.training.training_step`: minibatch of 400, Gaussian augmentation,
model samples from the replay-buffer Langevin sampler (GEDI, JEM), the derived bound's loss and an
Adam step. The Langevin share is the time of ``sampler.sample`` alone (same buffer, same batch,
timed over the same number of calls) divided by the time of a whole iteration. Each figure is the
median over ``--repeats`` timed blocks of ``--iterations`` iterations after a warm-up; ratios are
against SwAV (the paper's §4 compares GEDI's cost with SwAV's: no Sinkhorn, but extra passes for
the samples). On the two-dimensional sets, ``gedi+quadrature`` is GEDI with the log-normalizer by
quadrature on a 64 x 64 grid instead of the sampler, ``gedi+quadrature32`` on a 32 x 32 grid.
GEDI's loss replays its recorded derivation (:class:`~thermossl.objectives.TracedBound`);
``+derived`` re-derives it through Pyro at every step instead, for comparison.

Run: python benchmarks/gedi_step.py [--iterations 200] [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from thermossl.models.datasets import load_dataset

from thermossl.training import TrainingConfig, start, to_device, training_step

METHODS = ("swav", "gedi", "jem")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_method(name: str, data_name: str, iterations: int, repeats: int, device) -> dict:
    # "gedi+quadrature32": a 32 x 32 grid; "...+derived": the bound re-derived at every step
    method, _, variant = name.partition("+")
    normalizer, _, derivation = variant.partition("+")
    config = TrainingConfig(method=method, data=data_name, seed=0)
    if normalizer:
        config.settings.normalizer = "quadrature"
        config.settings.quadrature_points = int(normalizer.removeprefix("quadrature") or 64)
    data = load_dataset(data_name, 0)
    run = start(config, data)
    if derivation == "derived":
        run.method._derived_bound = lambda: run.method.program.bound
    run = to_device(run, device)
    inputs = data.train_inputs.to(device)

    def block(function) -> float:
        synchronize(device)
        began = time.perf_counter()
        for _ in range(iterations):
            function()
        synchronize(device)
        return (time.perf_counter() - began) / iterations

    step = lambda: training_step(run, config, inputs)  # noqa: E731
    block(step)  # warm-up: allocator, Adam state, buffer
    step_seconds = statistics.median(block(step) for _ in range(repeats))
    sample_seconds = 0.0
    if run.method.needs_samples:
        sampler = run.method.sampler

        def sample() -> None:
            sampler.sample(
                run.buffer, run.method.energy, config.batch_size, generator=run.generator
            )

        sample_seconds = statistics.median(block(sample) for _ in range(repeats))
    return {
        "method": name,  # "gedi+quadrature": GEDI with the quadrature log-normalizer
        "data": data_name,
        "ms_per_iteration": 1e3 * step_seconds,
        "langevin_share": sample_seconds / step_seconds,
        "langevin_steps": getattr(run.method.sampler, "steps", 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", nargs="+", default=["moons", "digits"])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {device}, "
        f"{torch.get_num_threads()} threads, {args.iterations} iterations x {args.repeats}"
    )
    rows = []
    for data_name in args.data:
        planar = data_name in ("moons", "circles")
        quadrature = ["gedi+quadrature", "gedi+quadrature32", "gedi+quadrature32+derived"]
        names = [*METHODS, *(quadrature if planar else [])]
        results = {
            m: time_method(m, data_name, args.iterations, args.repeats, device) for m in names
        }
        anchor = results["swav"]["ms_per_iteration"]
        for result in results.values():
            result["ratio_to_swav"] = result["ms_per_iteration"] / anchor
            rows.append(result)
            print(
                f"{data_name:7s} {result['method']:26s} {result['ms_per_iteration']:8.2f} ms/iter  "
                f"x{result['ratio_to_swav']:.2f} of SwAV  Langevin share "
                f"{100 * result['langevin_share']:4.1f}% ({result['langevin_steps']} steps)"
            )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
