"""Log-domain Sinkhorn-Knopp of :mod:`thermossl.inference.sinkhorn` against POT, SwAV and limits.

All problems are float64. References are independent: POT's exp- and log-domain solvers, POT's
exact transport (``ot.emd``), SciPy's assignment solver, and a NumPy transcription of SwAV's
``distributed_sinkhorn``. The stabilized loop (scalings on an absorbed kernel, used without
autograd) is also checked against the plain log-domain loop that runs when autograd records the
solve: the two compute the same iterates, so they agree to rounding.
"""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from thermossl.inference import sinkhorn as sinkhorn_module
from thermossl.inference.sinkhorn import sinkhorn_knopp

from tests.common import assert_relative_close
from thermossl._tracing import record

CONVERGED = 1e-12  # tolerance on the label marginals for the converged solves


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _energies(n: int, k: int, seed: int, *batch: int) -> torch.Tensor:
    return torch.randn(*batch, n, k, generator=_generator(seed), dtype=torch.float64)


def _marginal(size: int, seed: int, *batch: int) -> torch.Tensor:
    """A strictly positive, non-uniform probability vector (or a batch of them)."""
    weights = 0.2 + torch.rand(*batch, size, generator=_generator(seed), dtype=torch.float64)
    return weights / weights.sum(-1, keepdim=True)


def _uniform(size: int) -> torch.Tensor:
    return torch.full((size,), 1.0 / size, dtype=torch.float64)


def _gge_residual(log_q: np.ndarray, beta: float, energies: np.ndarray) -> float:
    """Largest residual of the least-squares fit log q + beta * eps = u_i + v_j (N + K unknowns)."""
    n, k = energies.shape
    design = np.zeros((n * k, n + k))
    rows, cols = np.divmod(np.arange(n * k), k)
    design[np.arange(n * k), rows] = 1.0
    design[np.arange(n * k), n + cols] = 1.0
    target = (log_q + beta * energies).reshape(-1)
    solution, *_ = np.linalg.lstsq(design, target, rcond=None)
    return float(np.abs(design @ solution - target).max())


def _swav_codes(scores: np.ndarray, epsilon: float, iterations: int) -> np.ndarray:
    """NumPy transcription of SwAV's ``distributed_sinkhorn`` (one process, Caron et al. 2020)."""
    q = np.exp(scores / epsilon).T  # [K, B]
    num_samples, num_prototypes = q.shape[1], q.shape[0]
    q = q / q.sum()
    for _ in range(iterations):
        q = q / q.sum(axis=1, keepdims=True)
        q = q / num_prototypes
        q = q / q.sum(axis=0, keepdims=True)
        q = q / num_samples
    q = q * num_samples
    return q.T


# -- the converged plan ---------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.5, 2.0, 5.0])
@pytest.mark.parametrize("marginals", ["uniform", "random"])
def test_converged_plan_matches_pot(beta, marginals):
    """The converged plan has the requested marginals (1e-10) and equals POT's exp- and log-domain
    entropic plans with reg = 1/beta (relative 1e-8)."""
    n, k = 9, 5
    energies = _energies(n, k, seed=1)
    if marginals == "uniform":
        row, col = _uniform(n), _uniform(k)
        q = sinkhorn_knopp(energies, beta, tolerance=CONVERGED)
    else:
        row, col = _marginal(n, seed=2), _marginal(k, seed=3)
        q = sinkhorn_knopp(energies, beta, row, col, tolerance=CONVERGED)
    assert_relative_close(q.sum(-1), row, rtol=0, atol=1e-10)
    assert_relative_close(q.sum(-2), col, rtol=0, atol=1e-10)
    a, b, cost = row.numpy(), col.numpy(), energies.numpy()
    exp_domain = ot.sinkhorn(
        a, b, cost, 1 / beta, method="sinkhorn", numItermax=100_000, stopThr=1e-14
    )
    log_domain = ot.bregman.sinkhorn_log(a, b, cost, 1 / beta, numItermax=100_000, stopThr=1e-14)
    assert_relative_close(q, torch.from_numpy(exp_domain), rtol=1e-8)
    assert_relative_close(q, torch.from_numpy(log_domain), rtol=1e-8)


@pytest.mark.parametrize("beta", [0.3, 3.0])
def test_converged_plan_is_a_generalized_gibbs_ensemble(beta):
    """log q + beta * eps is a row term plus a column term (least-squares residual <= 1e-8), and
    the fit detects a plan that is not of that form."""
    n, k = 8, 6
    energies = _energies(n, k, seed=4)
    q = sinkhorn_knopp(
        energies, beta, _marginal(n, seed=5), _marginal(k, seed=6), tolerance=CONVERGED
    )
    log_q, cost = q.log().numpy(), energies.numpy()
    assert _gge_residual(log_q, beta, cost) <= 1e-8
    perturbed = log_q.copy()
    perturbed[0, 0] += 1e-2
    assert _gge_residual(perturbed, beta, cost) > 1e-3


def test_default_marginals_are_uniform():
    """Omitting the marginals equals passing 1/N and 1/K explicitly; the plan sums to one."""
    n, k = 7, 3
    energies = _energies(n, k, seed=7)
    q = sinkhorn_knopp(energies, 1.5, tolerance=CONVERGED)
    explicit = sinkhorn_knopp(energies, 1.5, _uniform(n), _uniform(k), tolerance=CONVERGED)
    assert_relative_close(q, explicit, rtol=1e-12)
    assert_relative_close(q.sum(), torch.tensor(1.0, dtype=torch.float64), rtol=1e-12)


# -- SwAV -------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch, prototypes", [(32, 10), (16, 48)])
def test_three_sweeps_reproduce_swav_codes(batch, prototypes):
    """iterations=3, beta=1/0.05, energies=-scores: N * q equals SwAV's codes (relative 1e-12)."""
    generator = _generator(8)
    features = torch.randn(batch, 12, generator=generator, dtype=torch.float64)
    centroids = torch.randn(prototypes, 12, generator=generator, dtype=torch.float64)
    features = features / features.norm(dim=1, keepdim=True)
    centroids = centroids / centroids.norm(dim=1, keepdim=True)
    scores = features @ centroids.T  # cosine similarities, as in SwAV
    q = sinkhorn_knopp(-scores, beta=1 / 0.05, iterations=3)
    codes = _swav_codes(scores.numpy(), epsilon=0.05, iterations=3)
    assert_relative_close(batch * q, torch.from_numpy(codes), rtol=1e-12)
    # After the last (sample) sweep every code is a distribution over prototypes.
    assert_relative_close((batch * q).sum(-1), torch.ones(batch, dtype=torch.float64), rtol=1e-12)


# -- temperature limits -----------------------------------------------------------------------


def test_cold_limit_is_the_optimal_permutation():
    """beta = 1e4, N == K, every sample's minimum at a distinct label (minima in [-0.1, 0], other
    energies in [0, 1]): q is 1/N on scipy's linear_sum_assignment and 0 elsewhere, to 1e-6 / N."""
    n = 7
    generator = _generator(9)
    energies = torch.rand(n, n, generator=generator, dtype=torch.float64)
    permutation = torch.randperm(n, generator=generator)
    energies[torch.arange(n), permutation] = -0.1 * torch.rand(
        n, generator=generator, dtype=torch.float64
    )
    q = sinkhorn_knopp(energies, beta=1e4, tolerance=CONVERGED)
    rows, cols = linear_sum_assignment(energies.numpy())
    hard = torch.zeros(n, n, dtype=torch.float64)
    hard[rows, cols] = 1.0 / n
    assert torch.equal(torch.from_numpy(cols), permutation)
    assert_relative_close(q, hard, rtol=0, atol=1e-6 / n)


def test_cold_limit_with_more_samples_than_labels_is_the_exact_transport_plan():
    """beta = 1e4, N = 8, K = 4, two samples preferring each label (minima in [-0.1, 0], other
    energies in [0, 1]): q equals POT's exact transport plan (ot.emd) to 1e-6 / N."""
    n, k = 8, 4
    generator = _generator(10)
    energies = torch.rand(n, k, generator=generator, dtype=torch.float64)
    preferred = torch.randperm(n, generator=generator) % k
    energies[torch.arange(n), preferred] = -0.1 * torch.rand(
        n, generator=generator, dtype=torch.float64
    )
    q = sinkhorn_knopp(energies, beta=1e4, tolerance=CONVERGED)
    exact = ot.emd(_uniform(n).numpy(), _uniform(k).numpy(), energies.numpy())
    assert_relative_close(q, torch.from_numpy(exact), rtol=0, atol=1e-6 / n)
    assert torch.equal(q.argmax(-1), preferred)


def test_hot_limit_is_the_product_of_marginals():
    """beta = 1e-8: q_ij = r_i c_j (relative 1e-6), for random non-uniform marginals."""
    n, k = 6, 9
    row, col = _marginal(n, seed=11), _marginal(k, seed=12)
    q = sinkhorn_knopp(_energies(n, k, seed=13), 1e-8, row, col, tolerance=CONVERGED)
    assert_relative_close(q, row[:, None] * col[None, :], rtol=1e-6)


# -- batching ---------------------------------------------------------------------------------


@pytest.mark.parametrize("iterations", [None, 4])
def test_batched_problems_equal_separate_solves(iterations):
    """[B, N, K] with [B, N] / [B, K] marginals equals solving each problem alone; with shared
    [N] / [K] marginals too: to 1e-12 for fixed sweeps, 1e-9 for converged solves (a batch stops
    on its worst problem, so the others take extra sweeps)."""
    num, n, k, beta = 4, 6, 5, 1.7
    energies = _energies(n, k, 14, num)
    rows, cols = _marginal(n, 15, num), _marginal(k, 16, num)
    batched = sinkhorn_knopp(energies, beta, rows, cols, iterations, tolerance=CONVERGED)
    shared = sinkhorn_knopp(energies, beta, rows[0], cols[0], iterations, tolerance=CONVERGED)
    assert batched.shape == (num, n, k)
    rtol = 1e-12 if iterations is not None else 1e-9
    for b in range(num):
        alone = sinkhorn_knopp(energies[b], beta, rows[b], cols[b], iterations, CONVERGED)
        assert_relative_close(batched[b], alone, rtol=rtol)
        alone = sinkhorn_knopp(energies[b], beta, rows[0], cols[0], iterations, CONVERGED)
        assert_relative_close(shared[b], alone, rtol=rtol)


def test_one_matrix_with_batched_marginals_is_a_batch_of_problems():
    """[N, K] energies with [B, N] / [B, K] marginals give [B, N, K]: problem b equals the solve
    with marginals b alone (relative 1e-12, fixed sweeps: the same iterates)."""
    num, n, k, beta = 3, 6, 4, 2.5
    energies = _energies(n, k, seed=43)
    rows, cols = _marginal(n, 44, num), _marginal(k, 45, num)
    batched = sinkhorn_knopp(energies, beta, rows, cols, iterations=7)
    assert batched.shape == (num, n, k)
    for b in range(num):
        alone = sinkhorn_knopp(energies, beta, rows[b], cols[b], iterations=7)
        assert_relative_close(batched[b], alone, rtol=1e-12)


def test_fixed_sweeps_record_as_one_graph_and_replay_the_eager_plan():
    """iterations=3 with a label marginal has no data-dependent branch: it records under make_fx
    (value checks deferred, as TracedBound does) and the replay equals the eager plan (1e-12)."""
    energies, col = _energies(7, 4, seed=46), _marginal(4, seed=47)

    def codes(eps, marginal):
        return sinkhorn_knopp(eps, 1 / 0.05, col_marginal=marginal, iterations=3)

    graph = record(codes, energies, col, hint="sinkhorn_knopp must not branch")
    other = _energies(7, 4, seed=48)
    assert_relative_close(graph(other, col), codes(other, col), rtol=1e-12)


# -- numerical robustness ---------------------------------------------------------------------


def test_huge_row_and_column_offsets_leave_the_plan_unchanged():
    """Energies eps + u_i + v_j with |beta * offsets| ~ 1e4 (exp would overflow) give the same
    finite plan as eps: the GGE potentials absorb them (relative 1e-8)."""
    n, k, beta = 10, 6, 3.0
    generator = _generator(17)
    energies = _energies(n, k, seed=18)
    u = 3e3 * torch.rand(n, 1, generator=generator, dtype=torch.float64)
    v = -3e3 * torch.rand(1, k, generator=generator, dtype=torch.float64)
    assert float((beta * (energies + u + v)).abs().max()) > 5e3
    with np.errstate(over="ignore"):
        kernel = np.exp(-beta * (energies + u + v).numpy())
    assert np.isinf(kernel).any()  # an exp-domain solver would already have failed
    row, col = _marginal(n, seed=19), _marginal(k, seed=20)
    reference = sinkhorn_knopp(energies, beta, row, col, tolerance=CONVERGED)
    shifted = sinkhorn_knopp(energies + u + v, beta, row, col, tolerance=CONVERGED)
    assert bool(torch.isfinite(shifted).all())
    assert_relative_close(shifted.sum(-2), col, rtol=0, atol=1e-10)
    assert_relative_close(shifted, reference, rtol=1e-8)


@pytest.mark.parametrize("iterations", [3, None])
def test_large_inverse_temperature_gives_a_finite_plan(iterations):
    """beta * eps spanning [-1e4, 1e4]: the plan is finite, non-negative, sums to one and matches
    the sample marginals after the final row sweep (label marginals need far more sweeps here)."""
    n, k = 12, 5
    energies = 2 * torch.rand(n, k, generator=_generator(21), dtype=torch.float64) - 1
    row = _marginal(n, seed=22)
    if iterations is None:  # 200 sweeps are too few for the label marginals: said, not hidden
        with pytest.warns(RuntimeWarning, match="did not reach tolerance") as record:
            q = sinkhorn_knopp(energies, 1e4, row, iterations=None, max_iterations=200)
        assert record[0].filename == __file__  # the warning points at the caller
    else:
        q = sinkhorn_knopp(energies, 1e4, row, iterations=iterations, max_iterations=200)
    assert bool(torch.isfinite(q).all())
    assert bool((q >= 0).all())
    assert_relative_close(q.sum(), torch.tensor(1.0, dtype=torch.float64), rtol=1e-12)
    assert_relative_close(q.sum(-1), row, rtol=1e-12)


# -- the stabilized loop against the plain log-domain loop --------------------------------------

# Rounding in exponents of size beta * |eps| <= 4e3 costs ~4e3 * 2**-52 ~ 1e-12 relative per
# operation; entries below the absorption floor bound**2 * tiny (~4e-154 in float64) are kept only
# absolutely (documented in sinkhorn_knopp).
SAME_ITERATES_RTOL = 1e-10
FLOOR = 1e-150


def _log_domain(energies, beta, *args, **kwargs):
    """The plain log-domain loop: the path taken when autograd records the solve."""
    return sinkhorn_knopp(energies.clone().requires_grad_(), beta, *args, **kwargs).detach()


class _SweepSpy:
    """Counts the sweeps redone in the log domain (each one absorbs the scalings)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        original = sinkhorn_module._log_domain_sweep

        def spy(*args):
            self.calls += 1
            return original(*args)

        monkeypatch.setattr(sinkhorn_module, "_log_domain_sweep", spy)


@pytest.mark.parametrize("beta, spread", [(200.0, 4.0), (1000.0, 1.0)])
@pytest.mark.parametrize("iterations", [3, 60])
def test_stabilized_loop_has_the_log_domain_iterates_at_large_beta(
    beta, spread, iterations, monkeypatch
):
    """beta * spread of 800 or 1000 (exp(-beta * eps) underflows to 0): fixed sweeps of the
    stabilized loop equal the log-domain loop's (relative 1e-10 above the floor, absolute 1e-150
    below), after at least one sweep redone in the log domain."""
    n, k = 9, 5
    energies = spread * torch.rand(n, k, generator=_generator(30), dtype=torch.float64)
    assert (np.exp(-beta * energies.numpy()) == 0).any()  # a naive kernel has lost entries
    row, col = _marginal(n, seed=31), _marginal(k, seed=32)
    spy = _SweepSpy(monkeypatch)
    q = sinkhorn_knopp(energies, beta, row, col, iterations=iterations)
    assert spy.calls >= 1
    reference = _log_domain(energies, beta, row, col, iterations=iterations)
    assert_relative_close(q, reference, rtol=SAME_ITERATES_RTOL, atol=FLOOR)
    assert_relative_close(q.sum(-1), row, rtol=1e-12)


@pytest.mark.parametrize("beta, spread", [(200.0, 4.0), (1000.0, 1.0)])
def test_converged_plan_at_large_beta_matches_pot_log_domain(beta, spread):
    """Converged at beta * spread = 800 or 1000: the label marginals hold to the tolerance, the
    sample marginals to rounding, the plan is the log-domain loop's (same stopping sweep) and
    POT's log-domain plan to 10 x tolerance absolutely (a plan's error is its stopping error in
    the marginals times the conditioning of the marginal map, O(1) on this small problem)."""
    n, k = 12, 7
    energies = spread * torch.rand(n, k, generator=_generator(33), dtype=torch.float64)
    q = sinkhorn_knopp(energies, beta, tolerance=CONVERGED, max_iterations=100_000)
    assert_relative_close(q.sum(-2), _uniform(k), rtol=0, atol=CONVERGED)
    assert_relative_close(q.sum(-1), _uniform(n), rtol=1e-12)
    reference = _log_domain(energies, beta, tolerance=CONVERGED, max_iterations=100_000)
    assert_relative_close(q, reference, rtol=SAME_ITERATES_RTOL, atol=FLOOR)
    pot = ot.bregman.sinkhorn_log(
        _uniform(n).numpy(),
        _uniform(k).numpy(),
        energies.numpy(),
        1 / beta,
        numItermax=1_000_000,
        stopThr=1e-14,
    )
    assert_relative_close(q, torch.from_numpy(pot), rtol=0, atol=10 * CONVERGED)


@pytest.mark.parametrize("iterations", [25, None])
def test_forced_absorptions_leave_the_answer_unchanged(iterations, monkeypatch):
    """With the scalings bounded by 1e2 instead of ~1e77, sweeps are redone in the log domain and
    absorbed repeatedly; the plan is the same as without (relative 1e-10 for fixed sweeps; for
    converged solves to the tolerance, as the stopping sweep may differ by one)."""
    n, k, beta = 10, 6, 30.0
    energies = _energies(n, k, seed=34)
    row, col = _marginal(n, seed=35), _marginal(k, seed=36)
    spy = _SweepSpy(monkeypatch)
    plain = sinkhorn_knopp(energies, beta, row, col, iterations, tolerance=CONVERGED)
    assert spy.calls == 0  # beta * spread ~ 200: the default bound is never reached
    monkeypatch.setattr(sinkhorn_module, "_scaling_bound", lambda dtype: 1e2)
    absorbed = sinkhorn_knopp(energies, beta, row, col, iterations, tolerance=CONVERGED)
    assert spy.calls >= 2
    if iterations is not None:
        assert_relative_close(absorbed, plain, rtol=SAME_ITERATES_RTOL)
    else:
        assert_relative_close(absorbed.sum(-2), col, rtol=0, atol=CONVERGED)
        assert_relative_close(absorbed, plain, rtol=0, atol=10 * CONVERGED)
        reference = _log_domain(energies, beta, row, col, tolerance=CONVERGED)
        assert_relative_close(absorbed, reference, rtol=0, atol=10 * CONVERGED)


@pytest.mark.parametrize("iterations", [40, None])
def test_batched_large_beta_problems_with_far_apart_energies_equal_separate_solves(iterations):
    """[3, N, K] at beta = 1000 whose problems sit 0, 5 and 50 energy units apart (one shared
    shift would underflow two of them): each equals its own log-domain solve, to rounding for
    fixed sweeps and to 10 x tolerance for converged ones (a batch stops on its worst problem)."""
    num, n, k, beta = 3, 8, 5, 1000.0
    energies = torch.rand(num, n, k, generator=_generator(37), dtype=torch.float64)
    energies = energies + torch.tensor([0.0, 5.0, 50.0], dtype=torch.float64)[:, None, None]
    rows, cols = _marginal(n, 38, num), _marginal(k, 39, num)
    batched = sinkhorn_knopp(
        energies, beta, rows, cols, iterations, tolerance=CONVERGED, max_iterations=100_000
    )
    assert batched.shape == (num, n, k)
    for b in range(num):
        alone = _log_domain(
            energies[b], beta, rows[b], cols[b], iterations, CONVERGED, max_iterations=100_000
        )
        if iterations is not None:
            assert_relative_close(batched[b], alone, rtol=SAME_ITERATES_RTOL, atol=FLOOR)
        else:
            assert_relative_close(batched[b].sum(-2), cols[b], rtol=0, atol=CONVERGED)
            assert_relative_close(batched[b], alone, rtol=0, atol=10 * CONVERGED)


def test_gradients_flow_through_the_log_domain_loop():
    """With energies that require grad the solve is differentiable (plain log-domain loop) and
    equals the stabilized solve; d/d eps of sum(q * w) matches central differences (1e-6)."""
    n, k, beta = 5, 4, 2.0
    energies = _energies(n, k, seed=40)
    weights = _energies(n, k, seed=41)
    leaf = energies.clone().requires_grad_()
    q = sinkhorn_knopp(leaf, beta, tolerance=CONVERGED)
    assert_relative_close(
        q.detach(), sinkhorn_knopp(energies, beta, tolerance=CONVERGED), rtol=1e-10
    )
    (gradient,) = torch.autograd.grad((q * weights).sum(), leaf)
    step = 1e-6
    bump = torch.zeros(n, k, dtype=torch.float64)
    bump[1, 2] = step
    up = (sinkhorn_knopp(energies + bump, beta, tolerance=CONVERGED) * weights).sum()
    down = (sinkhorn_knopp(energies - bump, beta, tolerance=CONVERGED) * weights).sum()
    assert_relative_close(gradient[1, 2], (up - down) / (2 * step), rtol=1e-6, atol=1e-10)


def test_float32_solve_meets_its_default_tolerance():
    """float32 SwAV-like problem (beta = 20): label marginals within the float32 default tolerance
    1e-6, and the plan equals the float64 plan to that tolerance, absolutely."""
    n, k = 256, 100
    generator = _generator(42)
    features = torch.nn.functional.normalize(torch.randn(n, 16, generator=generator), dim=1)
    prototypes = torch.nn.functional.normalize(torch.randn(k, 16, generator=generator), dim=1)
    scores = features @ prototypes.T
    q32 = sinkhorn_knopp(-scores, beta=20.0)
    q64 = sinkhorn_knopp(-scores.double(), beta=20.0)
    assert q32.dtype == torch.float32
    assert float((q32.double().sum(-2) - 1 / k).abs().max()) <= 1e-6
    assert_relative_close(q32.double(), q64, rtol=0, atol=1e-6)


# -- input validation -------------------------------------------------------------------------

_E = torch.zeros(3, 2, dtype=torch.float64)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"energies": torch.tensor([[0.0, math.nan], [1.0, 0.0]])}, "energies"),
        ({"energies": torch.tensor([[0.0, math.inf], [1.0, 0.0]])}, "energies"),
        ({"energies": torch.zeros(4, dtype=torch.float64)}, "energies"),
        ({"beta": 0.0}, "beta"),
        ({"beta": -1.0}, "beta"),
        ({"beta": math.nan}, "beta"),
        ({"beta": math.inf}, "beta"),
        ({"row_marginal": _uniform(4)}, "row_marginal"),
        ({"col_marginal": _uniform(3)}, "col_marginal"),
        ({"row_marginal": torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)}, "row_marginal"),
        ({"col_marginal": torch.tensor([1.5, -0.5], dtype=torch.float64)}, "col_marginal"),
        ({"col_marginal": torch.tensor([0.5, 0.6], dtype=torch.float64)}, "col_marginal"),
        ({"row_marginal": torch.tensor([0.5, math.nan, 0.5], dtype=torch.float64)}, "row_marginal"),
        ({"iterations": 0}, "iterations"),
        ({"iterations": -3}, "iterations"),
        ({"iterations": 2.5}, "iterations"),
        ({"iterations": True}, "iterations"),
        ({"max_iterations": 0}, "max_iterations"),
        ({"tolerance": 0.0}, "tolerance"),
    ],
)
def test_invalid_inputs_raise_value_error(kwargs, match):
    """NaN/inf or 1-d energies, beta <= 0, wrong-length, non-positive or unnormalized marginals,
    non-integer or < 1 (max_)iterations and tolerance <= 0 raise ValueError naming the argument."""
    arguments = {"energies": _E, "beta": 1.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        sinkhorn_knopp(**arguments)
