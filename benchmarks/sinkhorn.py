"""Sinkhorn-Knopp at SwAV scale: ``thermossl.inference.sinkhorn_knopp`` against POT.

The problem (defaults): ``N = 4096`` samples and ``K = 3000`` prototypes, scores ``s_ij`` the
cosine similarities of random unit vectors in 128 dimensions (features and prototypes drawn
independently, ``--scenario random``), energies ``eps = -s``, inverse temperature
``beta = 1 / 0.05`` (SwAV's epsilon), uniform marginals ``a = 1/N``, ``b = 1/K``. ``--scenario
clustered`` draws each feature near one of 30 prototypes (scores up to ~0.9), a harder problem
that needs more sweeps. Solvers, each on the same problem:

1. ``ot.sinkhorn(a, b, M, reg)`` (POT's exp-domain Sinkhorn-Knopp) with ``M = eps`` and
   ``reg = 1 / beta``, NumPy float64 inputs (**an anchor**);
2. ``ot.bregman.sinkhorn_log(a, b, M, reg)`` (POT's log-domain solver), NumPy float64
   (**an anchor**);
3. the same two POT solvers given torch float64 tensors (POT's torch backend: multithreaded
   ``exp``), for reference;
4. ``sinkhorn_knopp(eps, beta, tolerance=...)`` in float64 (the stabilized loop) and float32;
5. the plain log-domain loop this library used before (two log-sum-exp passes per sweep, still
   the path taken when autograd records the solve), float64.

A second table times SwAV's fixed three sweeps (``iterations=3``, how SwAV computes its codes
at every training step): ``sinkhorn_knopp(..., iterations=3)`` against SwAV's exp-domain
``distributed_sinkhorn`` (``thermossl.objectives.losses.swav_codes``, a line-by-line
transcription, whose codes are ``N q``) and the log-domain loop, all float64.

**How the tolerances are matched.** POT stops when the 2-norm of the label-marginal error
``||q^T 1 - b||_2`` is below ``stopThr`` (checked every 10 iterations); ``sinkhorn_knopp``
stops when its *max-abs* error ``||q^T 1 - b||_inf`` is below ``tolerance`` (checked every
sweep). POT gets ``stopThr = --tolerance`` (default ``1e-9``, POT's own default) and ours gets
``tolerance = --tolerance / sqrt(K)``: since ``||e||_2 <= sqrt(K) ||e||_inf``, our stopping rule
then implies POT's, so ours is never held to a looser criterion (it is usually held to a much
tighter one: POT's 2-norm error spreads over K labels). The row "matched accuracy" instead
stops ours as soon as its max-abs label error is at most the max-abs error that POT's
``ot.sinkhorn`` actually returned on this problem (measured once, before timing): the time to
deliver POT's accuracy. Both solvers end on a sample (row) update, so their row marginals hold to
rounding. The float32 row uses ``--float32-tolerance``
(default ``1e-6``, the library's float32 default: float32 rounding floors the label error near
``1e-9`` here). After every solve the achieved errors of the returned plan are measured in
float64 (label and sample marginals, max-abs and 2-norm) and reported, with the sweep count and
the largest relative difference from POT's exp-domain plan.

Every time is the median over ``--repeats`` interleaved rounds (each round runs every solver
once, after one untimed warm-up call each); ``POT / ours`` is a POT solver's median time over
ours (float64). Goal: ``>= 1.0`` for both NumPy POT solvers, on this machine's CPU.

Run: OMP_NUM_THREADS=2 python benchmarks/sinkhorn.py [--samples 4096 --labels 3000 --dim 128
     --epsilon 0.05 --tolerance 1e-9 --repeats 5 --threads 2 --device cpu --scenario random
     --skip-slow (drops the log-domain solvers, for small epsilon where they take minutes)]
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import ot
import torch
from thermossl.inference import sinkhorn as sinkhorn_module
from thermossl.inference.sinkhorn import sinkhorn_knopp
from thermossl.objectives.losses import swav_codes


def make_scores(samples, labels, dim, scenario, seed=0):
    """Cosine similarities ``[samples, labels]`` (float64) of unit features and prototypes."""
    generator = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(labels, dim, generator=generator, dtype=torch.float64)
    prototypes = prototypes / prototypes.norm(dim=1, keepdim=True)
    if scenario == "random":
        features = torch.randn(samples, dim, generator=generator, dtype=torch.float64)
    else:  # each feature near one of 30 prototypes
        centres = torch.randint(0, 30, (samples,), generator=generator)
        noise = torch.randn(samples, dim, generator=generator, dtype=torch.float64)
        features = 3.0 * prototypes[centres] + noise / math.sqrt(dim)
    features = features / features.norm(dim=1, keepdim=True)
    return features @ prototypes.T


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_sweeps(solve: Callable) -> int:
    """Sweeps of the stabilized loop: one ``u^T K`` product per sweep plus the final check."""
    original, calls = sinkhorn_module._vector_matrix, [0]

    def counting(u, kernel):
        calls[0] += 1
        return original(u, kernel)

    sinkhorn_module._vector_matrix = counting
    try:
        solve()
    finally:
        sinkhorn_module._vector_matrix = original
    return calls[0] - 1


def marginal_errors(plan, a, b):
    """Max-abs and 2-norm errors of the label (column) and sample (row) marginals, in float64."""
    plan = np.asarray(plan.detach().cpu().double() if torch.is_tensor(plan) else plan)
    col, row = plan.sum(0) - b, plan.sum(1) - a
    return {
        "col_max": float(np.abs(col).max()),
        "col_2": float(np.linalg.norm(col)),
        "row_max": float(np.abs(row).max()),
        "row_2": float(np.linalg.norm(row)),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--labels", type=int, default=3000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--epsilon", type=float, default=0.05)
    parser.add_argument("--tolerance", type=float, default=1e-9)
    parser.add_argument("--float32-tolerance", type=float, default=1e-6)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--scenario", choices=["random", "clustered"], default="random")
    parser.add_argument("--max-iterations", type=int, default=100_000)
    parser.add_argument("--skip-slow", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    n, k = args.samples, args.labels
    beta, reg = 1.0 / args.epsilon, args.epsilon
    scores = make_scores(n, k, args.dim, args.scenario)
    energies = (-scores).to(device)
    energies32 = energies.float()
    a_np, b_np, cost_np = np.full(n, 1.0 / n), np.full(k, 1.0 / k), (-scores).numpy()
    a_t = torch.full((n,), 1.0 / n, dtype=torch.float64, device=device)
    b_t = torch.full((k,), 1.0 / k, dtype=torch.float64, device=device)
    ours_tolerance = args.tolerance / math.sqrt(k)
    cap = args.max_iterations

    # POT's achieved max-abs label error, the target of the "matched accuracy" row.
    pot_plan = ot.sinkhorn(a_np, b_np, cost_np, reg, stopThr=args.tolerance, numItermax=cap)
    pot_error = float(np.abs(pot_plan.sum(0) - b_np).max())
    solvers: dict[str, Callable] = {
        "POT ot.sinkhorn (NumPy)": lambda: ot.sinkhorn(
            a_np, b_np, cost_np, reg, stopThr=args.tolerance, numItermax=cap, log=True
        ),
        "POT ot.bregman.sinkhorn_log (NumPy)": lambda: ot.bregman.sinkhorn_log(
            a_np, b_np, cost_np, reg, stopThr=args.tolerance, numItermax=cap, log=True
        ),
        "POT ot.sinkhorn (torch backend)": lambda: ot.sinkhorn(
            a_t, b_t, energies, reg, stopThr=args.tolerance, numItermax=cap, log=True
        ),
        "POT ot.bregman.sinkhorn_log (torch backend)": lambda: ot.bregman.sinkhorn_log(
            a_t, b_t, energies, reg, stopThr=args.tolerance, numItermax=cap, log=True
        ),
        "sinkhorn_knopp float64": lambda: sinkhorn_knopp(
            energies, beta, tolerance=ours_tolerance, max_iterations=cap
        ),
        "sinkhorn_knopp float64, matched accuracy": lambda: sinkhorn_knopp(
            energies, beta, tolerance=pot_error, max_iterations=cap
        ),
        "sinkhorn_knopp float32": lambda: sinkhorn_knopp(
            energies32, beta, tolerance=args.float32_tolerance, max_iterations=cap
        ),
        "log-domain loop (before) float64": lambda: sinkhorn_module._log_domain_sinkhorn(
            energies,
            beta,
            torch.log(a_t),
            torch.log(b_t),
            None,
            ours_tolerance,
            cap,
        ),
    }

    log_a, log_b = torch.log(a_t), torch.log(b_t)
    swav: dict[str, Callable] = {
        "SwAV distributed_sinkhorn (exp domain), / N": lambda: (
            swav_codes(scores.to(device), args.epsilon, 3) / n
        ),
        "sinkhorn_knopp iterations=3 float64": lambda: sinkhorn_knopp(energies, beta, iterations=3),
        "log-domain loop (before) iterations=3 float64": lambda: (
            sinkhorn_module._log_domain_sinkhorn(energies, beta, log_a, log_b, 3, 0.0, 3)
        ),
    }
    if args.skip_slow:
        for name in list(solvers):
            if "sinkhorn_log" in name or "before" in name:
                del solvers[name]
    tables = {"converged": solvers, "three sweeps": swav}

    results, times = {}, {}
    for table in tables.values():
        for name, solve in table.items():  # warm-up, sweeps, accuracy
            output = solve()
            plan, log = output if isinstance(output, tuple) else (output, None)
            if log is not None:
                sweeps = int(log["niter"]) + 1
            elif name.startswith("sinkhorn_knopp") and table is solvers:
                sweeps = count_sweeps(solve)
            elif table is swav:
                sweeps = 3
            else:
                sweeps = None  # the same iterates as the stabilized float64 loop
            results[name] = {"sweeps": sweeps, **marginal_errors(plan, a_np, b_np), "plan": plan}
            times[name] = []
    references = {
        "converged": torch.as_tensor(results[next(iter(solvers))]["plan"]),
        "three sweeps": results[next(iter(swav))]["plan"].detach().cpu().double(),
    }
    for key, table in tables.items():
        for name in table:
            plan = torch.as_tensor(results[name].pop("plan")).detach().cpu().double()
            error = ((plan - references[key]).abs() / references[key]).max()
            results[name]["vs_reference"] = float(error)
    for _ in range(args.repeats):
        for table in tables.values():
            for name, solve in table.items():
                synchronize(device)
                start = time.perf_counter()
                solve()
                synchronize(device)
                times[name].append(time.perf_counter() - start)

    print(
        f"# N={n} K={k} dim={args.dim} scenario={args.scenario} beta={beta:g} "
        f"score range [{float(scores.min()):.3f}, {float(scores.max()):.3f}]"
    )
    print(
        f"# {platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"POT {ot.__version__}, NumPy {np.__version__}, device {device}; POT stopThr "
        f"{args.tolerance:g} (2-norm), ours tolerance {ours_tolerance:.2e} (max-abs), matched "
        f"accuracy {pot_error:.2e} (max-abs), float32 {args.float32_tolerance:g}; median of "
        f"{args.repeats}"
    )
    for key, table in tables.items():
        ours_name = next(name for name in table if name.startswith("sinkhorn_knopp"))
        ours = statistics.median(times[ours_name])
        print(f"\n{key}: time / ours = time / ({ours_name})")
        print(
            "| solver | ms per solve | sweeps | label err max-abs | label err 2-norm "
            "| sample err max-abs | max rel. diff. from first row | time / ours |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for name in table:
            median = statistics.median(times[name])
            r = results[name]
            sweeps = "=" if r["sweeps"] is None else str(r["sweeps"])
            print(
                f"| {name} | {1e3 * median:.1f} | {sweeps} | {r['col_max']:.1e} "
                f"| {r['col_2']:.1e} | {r['row_max']:.1e} | {r['vs_reference']:.1e} "
                f"| {median / ours:.2f}x |"
            )
    ours = statistics.median(times["sinkhorn_knopp float64"])
    for name in solvers:
        if name.startswith("POT"):
            print(f"# {name} / ours float64: {statistics.median(times[name]) / ours:.2f}")


if __name__ == "__main__":
    main()
