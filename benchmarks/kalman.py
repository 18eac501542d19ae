"""Kalman filter log-likelihood: thermossl's parallel and sequential filters against GaussianHMM.

Times, side by side in one run and in float32, on a batch of sequences (default 64 sequences of
T = 1000 steps, D = 16 hidden states, L = 8 observed):

1. Pyro's ``GaussianHMM(...).log_prob(z)`` forward (its parallel-scan reduction, which returns
   only the log-likelihood);
2. ``kalman_filter(..., parallel=True)`` forward (associative scans, which also return every
   step's filtered and predicted moments);
3. ``kalman_filter(..., parallel=False)`` forward (the sequential recursion);
4. log-likelihood + gradient (``backward`` w.r.t. every parameter and the observations) for all
   three.

Scenarios: ``shared`` (time-invariant parameters shared by the batch, the case of the
performance goal), ``single`` (one sequence, batch 1) and ``time-varying`` (per-sequence,
per-step covariances ``Q_t, R_t`` of shape ``[batch, T, ., .]``, nothing shared). Every figure
is the median over ``--repeats`` interleaved rounds (each round times every variant once, after
one untimed warm-up call each), which damps the drift of a shared machine. ``ratio`` is time /
GaussianHMM's time in the same scenario and pass. Goal: parallel forward / GaussianHMM forward
<= 1.0 on ``shared`` (CPU).

Run: python benchmarks/kalman.py [--batch 64 --steps 1000 --state-dim 16 --obs-dim 8
     --repeats 5 --threads 2 --device cpu --scenarios shared single time-varying]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import pyro.distributions as dist
import torch
from thermossl.inference.kalman import kalman_filter


def make_model(batch, steps, D, L, time_varying, device, seed=0):
    """Random stable float32 model and observations; returns a dict of leaf tensors."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=generator)

    def spd(*shape, scale=1.0):
        M = randn(*shape)
        return scale * (M @ M.mT / shape[-1] + 0.5 * torch.eye(shape[-1]))

    A = randn(D, D)
    A = 0.95 * A / torch.linalg.matrix_norm(A, ord=2)
    lead = (batch, steps) if time_varying else ()
    params = {
        "z": randn(batch, steps, L),
        "A": A,
        "c": 0.1 * randn(D),
        "Q": spd(*lead, D, D, scale=0.1),
        "H": randn(L, D) / D**0.5,
        "R": spd(*lead, L, L),
        "m0": randn(D),
        "P0": spd(D, D),
    }
    return {name: value.to(device) for name, value in params.items()}


def ours(parallel: bool) -> Callable:
    def run(p):
        result = kalman_filter(
            p["z"], p["A"], p["c"], p["Q"], p["H"], p["R"], p["m0"], p["P0"], parallel=parallel
        )
        return result.log_likelihood

    return run


def gaussian_hmm(p):
    steps, L = p["z"].shape[-2:]
    hmm = dist.GaussianHMM(
        dist.MultivariateNormal(p["m0"], p["P0"]),
        p["A"].mT,
        dist.MultivariateNormal(p["c"], p["Q"]),
        p["H"].mT,
        dist.MultivariateNormal(torch.zeros(L, device=p["z"].device), p["R"]),
        duration=steps,
    )
    return hmm.log_prob(p["z"])


def timed(function: Callable, params: dict, backward: bool, device: torch.device) -> float:
    if backward:
        leaves = {name: value.detach().requires_grad_(True) for name, value in params.items()}
    else:
        leaves = params
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    if backward:
        function(leaves).sum().backward()
    else:
        with torch.no_grad():
            function(leaves)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def run_scenario(name, batch, args, device) -> list[tuple[str, str, float]]:
    params = make_model(
        batch, args.steps, args.state_dim, args.obs_dim, name == "time-varying", device
    )
    variants = {
        "GaussianHMM": gaussian_hmm,
        "parallel": ours(True),
        "sequential": ours(False),
    }
    modes = ("forward", "forward+backward")
    keys = [(variant, mode) for mode in modes for variant in variants]
    for variant, mode in keys:  # warm-up
        timed(variants[variant], params, mode != "forward", device)
    samples: dict[tuple[str, str], list[float]] = {key: [] for key in keys}
    for _ in range(args.repeats):
        for variant, mode in keys:
            samples[(variant, mode)].append(
                timed(variants[variant], params, mode != "forward", device)
            )
    return [(variant, mode, statistics.median(samples[(variant, mode)])) for variant, mode in keys]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--state-dim", type=int, default=16)
    parser.add_argument("--obs-dim", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=["shared", "single", "time-varying"],
        default=["shared", "single", "time-varying"],
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"device {device}, torch.get_num_threads() = {torch.get_num_threads()}, float32, "
        f"T={args.steps}, D={args.state_dim}, L={args.obs_dim}, median of {args.repeats}"
    )
    header = f"{'scenario':<14} {'batch':>5} {'mode':<17} {'variant':<12} {'ms':>10} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    goal = None
    for scenario in args.scenarios:
        batch = 1 if scenario == "single" else args.batch
        rows = run_scenario(scenario, batch, args, device)
        anchor = {mode: ms for variant, mode, ms in rows if variant == "GaussianHMM"}
        for variant, mode, seconds in rows:
            ratio = seconds / anchor[mode]
            print(
                f"{scenario:<14} {batch:>5} {mode:<17} {variant:<12} {1e3 * seconds:>10.2f} "
                f"{ratio:>6.2f}x"
            )
            if (scenario, variant, mode) == ("shared", "parallel", "forward"):
                goal = ratio
    if goal is not None:
        verdict = "met" if goal <= 1.0 else "NOT met"
        print(
            f"goal: parallel forward / GaussianHMM forward on 'shared' = {goal:.3f} <= 1.0: {verdict}"
        )


if __name__ == "__main__":
    main()
