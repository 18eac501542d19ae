"""Generalized Gibbs ensembles of :mod:`thermossl.inference.gibbs_ensembles` against independent
answers.

All problems are float64. References are independent of the solver under test:
``sinkhorn_knopp`` and POT's entropic transport for the Sinkhorn-Knopp class; a NumPy dual written
here and minimized by SciPy's ``trust-exact`` for constrained ensembles; closed forms (per-row
softmax, argmin, uniform) for the Gibbs, degenerate and adiabatic classes; and the second-order
expansion of :math:`S[q] - \\beta\\langle\\varepsilon, q\\rangle` along feasible directions for
the MaxEnt property.
"""

from __future__ import annotations

import warnings

import numpy as np
import ot
import pytest
import scipy.linalg
import torch
from scipy.optimize import minimize
from scipy.special import logsumexp
from thermossl.inference import gibbs_ensembles
from thermossl.inference.gibbs_ensembles import (
    GeneralizedGibbsEnsemble,
    LinearConstraint,
    generalized_gibbs_ensemble,
)
from thermossl.inference.sinkhorn import sinkhorn_knopp

from tests.common import assert_relative_close

CONVERGED = 1e-12  # constraint violation accepted from the converged solves
N, K = 8, 5


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _energies(n: int, k: int, seed: int) -> torch.Tensor:
    return torch.randn(n, k, generator=_generator(seed), dtype=torch.float64)


def _marginal(size: int, seed: int) -> torch.Tensor:
    """A strictly positive, non-uniform probability vector."""
    weights = 0.2 + torch.rand(size, generator=_generator(seed), dtype=torch.float64)
    return weights / weights.sum()


def _uniform(size: int) -> torch.Tensor:
    return torch.full((size,), 1.0 / size, dtype=torch.float64)


# -- problems with declared constraints ---------------------------------------------------------

LABELLED = {1: 2, 4: 0, 6: 3}  # sample -> its label, for the confidence constraints
KAPPA = 0.8  # the labelled samples put this fraction of their mass on their label


def _feasible_plan(row: torch.Tensor | None, col: torch.Tensor | None, seed: int) -> torch.Tensor:
    """A strictly positive plan with the requested marginals, from which targets are read.

    Taking every target from one positive plan makes the constraint set jointly feasible with
    an interior point, so the MaxEnt solution exists. With a free label marginal the labelled
    samples put exactly ``KAPPA * r_i`` on their label (the confidence constraint as stated);
    with both marginals fixed, ``kappa_i`` is whatever the plan gives.
    """
    row_ = row if row is not None else _marginal(N, seed + 1)
    if col is not None:
        return sinkhorn_knopp(_energies(N, K, seed), 1.0, row_, col, tolerance=CONVERGED)
    conditional = torch.softmax(_energies(N, K, seed), dim=-1)
    for i, label in LABELLED.items():
        others = conditional[i].clone()
        others[label] = 0.0
        conditional[i] = (1 - KAPPA) * others / others.sum()
        conditional[i, label] = KAPPA
    return row_[:, None] * conditional


def _confidence_feature(i: int, label: int) -> torch.Tensor:
    feature = torch.zeros(N, K, dtype=torch.float64)
    feature[i, label] = 1.0
    return feature


def _problem(kind: str):
    """(row marginal, col marginal, constraints) of one scenario; targets from a feasible plan."""
    random_feature = torch.randn(N, K, generator=_generator(11), dtype=torch.float64)
    sample_feature = torch.randn(N, 1, generator=_generator(12), dtype=torch.float64)
    if kind == "prior+confidence+random":  # non-uniform label prior as features, free labels
        row, col = _uniform(N), None
        plan = _feasible_plan(row, None, seed=14)
        features = [torch.eye(K, dtype=torch.float64)[m] for m in range(K - 1)]
    elif kind == "sinkhorn+confidence+random":  # transport polytope (22) plus extras
        row, col = _uniform(N), _uniform(K)
        plan = _feasible_plan(row, col, seed=15)
        features = []
    elif kind == "labels+sample+confidence+random":  # free sample marginal, a sample feature
        row, col = None, _marginal(K, seed=16)
        plan = _feasible_plan(_marginal(N, seed=17), col, seed=18)
        features = [sample_feature]
    elif kind == "features-only":  # no marginal at all: eq. (10) with three features
        row, col = None, None
        plan = _feasible_plan(None, None, seed=19)
        features = [torch.eye(K, dtype=torch.float64)[0]]
    else:
        raise AssertionError(kind)
    features += [_confidence_feature(i, label) for i, label in LABELLED.items()]
    features.append(random_feature)
    constraints = [LinearConstraint(f, float((f.expand(N, K) * plan).sum())) for f in features]
    return row, col, constraints, plan


def _sufficient_statistics(n, k, row, col, constraints):
    """``[S, n * k]`` statistics and ``[S]`` targets of the dual with its gauge removed: the row
    indicators but the first (implied by the others and the normalization), the column
    indicators but the first, and the declared features."""
    stats, taus = [], []
    if row is not None:
        for i in range(1, n):
            indicator = np.zeros((n, k))
            indicator[i] = 1.0
            stats.append(indicator)
            taus.append(float(row[i]))
    if col is not None:
        for j in range(1, k):
            indicator = np.zeros((n, k))
            indicator[:, j] = 1.0
            stats.append(indicator)
            taus.append(float(col[j]))
    for features, target in constraints:
        stats.append(np.broadcast_to(features.numpy(), (n, k)))
        taus.append(float(target))
    return np.stack(stats).reshape(len(stats), n * k), np.array(taus)


def _reference_dual_solution(energies, beta, row, col, constraints):
    """Minimize the convex dual of the MaxEnt problem with SciPy (NumPy only, exact Hessian).

    Sufficient statistics: the row indicators but the first (the first is implied by the others
    and the normalization), the column indicators but the first, and the declared features;
    the dual is ``logsumexp(-beta eps - lambda . T) + lambda . tau``.
    """
    eps = energies.numpy()
    n, k = eps.shape
    T, tau = _sufficient_statistics(n, k, row, col, constraints)
    base = -beta * eps.reshape(-1)

    def plan(lam):
        logits = base - lam @ T
        return np.exp(logits - logsumexp(logits))

    def dual(lam):
        logits = base - lam @ T
        return logsumexp(logits) + lam @ tau

    def gradient(lam):
        return tau - T @ plan(lam)

    def hessian(lam):
        q = plan(lam)
        mean = T @ q
        return (T * q) @ T.T - np.outer(mean, mean)

    result = minimize(
        dual,
        np.zeros(len(tau)),
        jac=gradient,
        hess=hessian,
        method="trust-exact",
        options={"gtol": 1e-13, "maxiter": 1000},
    )
    lam = result.x
    for _ in range(5):  # polish with full Newton steps: quadratic convergence near the optimum
        lam = lam - np.linalg.solve(hessian(lam), gradient(lam))
    return plan(lam).reshape(n, k), float(np.abs(gradient(lam)).max())


def _gge_residual(log_q: np.ndarray, offset: np.ndarray) -> float:
    """Largest residual of the least-squares fit ``log q + offset = u_i + v_j``."""
    n, k = log_q.shape
    design = np.zeros((n * k, n + k))
    rows, cols = np.divmod(np.arange(n * k), k)
    design[np.arange(n * k), rows] = 1.0
    design[np.arange(n * k), n + cols] = 1.0
    target = (log_q + offset).reshape(-1)
    solution, *_ = np.linalg.lstsq(design, target, rcond=None)
    return float(np.abs(design @ solution - target).max())


def _feature_sum(constraints, multipliers) -> torch.Tensor:
    return sum(
        (a * f.expand(N, K) for (f, _), a in zip(constraints, multipliers, strict=True)),
        torch.zeros(N, K, dtype=torch.float64),
    )


KINDS = [
    "prior+confidence+random",
    "sinkhorn+confidence+random",
    "labels+sample+confidence+random",
    "features-only",
]


# -- 1. the Sinkhorn-Knopp class ---------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.5, 2.0, 5.0])
@pytest.mark.parametrize("marginals", ["uniform", "random"])
def test_without_features_equals_sinkhorn_knopp_and_pot(beta, marginals):
    """No features, both marginals constrained: the plan is sinkhorn_knopp's and POT's entropic
    plan with reg = 1/beta (all three converged to 1e-12; relative 1e-8, as in the Sinkhorn
    tests); the potentials and log Z rebuild the plan (eq. 24)."""
    energies = _energies(9, 5, seed=1)
    if marginals == "uniform":
        row, col = _uniform(9), _uniform(5)
        gge = generalized_gibbs_ensemble(energies, beta, tolerance=CONVERGED)
    else:
        row, col = _marginal(9, seed=2), _marginal(5, seed=3)
        gge = generalized_gibbs_ensemble(
            energies, beta, row_marginal=row, col_marginal=col, tolerance=CONVERGED
        )
    assert isinstance(gge, GeneralizedGibbsEnsemble)
    assert gge.violation <= CONVERGED
    assert gge.multipliers.shape == (0,)
    reference = sinkhorn_knopp(energies, beta, row, col, tolerance=CONVERGED)
    assert_relative_close(gge.plan, reference, rtol=1e-8)
    pot = ot.sinkhorn(
        row.numpy(),
        col.numpy(),
        energies.numpy(),
        1 / beta,
        method="sinkhorn",
        numItermax=100_000,
        stopThr=1e-14,
    )
    assert_relative_close(gge.plan, torch.from_numpy(pot), rtol=1e-8)
    rebuilt = (
        -beta * energies
        - gge.row_potential[:, None]
        - gge.col_potential[None, :]
        - gge.log_partition
    )
    assert_relative_close(gge.plan.log(), rebuilt, rtol=0, atol=1e-12)


# -- 2. declared constraints against an independent dual solver --------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("beta", [0.7, 3.0])
def test_constrained_plan_matches_independent_dual_solver(kind, beta):
    """The constraints hold to the requested tolerance, and the plan equals the one found by
    SciPy's trust-exact on a NumPy dual. Both solvers stop at dual gradients <= 1e-11, and
    the plan moves by (inverse dual curvature) x (gradient), so relative 1e-7 leaves four orders
    of magnitude for curvatures down to 1e-3."""
    row, col, constraints, _ = _problem(kind)
    energies = _energies(N, K, seed=20)
    gge = generalized_gibbs_ensemble(energies, beta, constraints, row, col, tolerance=CONVERGED)
    q = gge.plan
    assert gge.violation <= CONVERGED
    assert_relative_close(q.sum(), torch.tensor(1.0, dtype=torch.float64), rtol=0, atol=1e-12)
    if row is not None:
        assert_relative_close(q.sum(-1), row, rtol=0, atol=CONVERGED)
    if col is not None:
        assert_relative_close(q.sum(-2), col, rtol=0, atol=CONVERGED)
    for features, target in constraints:
        expectation = (features.expand(N, K) * q).sum()
        assert abs(float(expectation) - target) <= CONVERGED

    reference, reference_gradient = _reference_dual_solution(energies, beta, row, col, constraints)
    assert reference_gradient <= 1e-11, "the reference solver did not converge"
    assert_relative_close(q, torch.from_numpy(reference), rtol=1e-7)


@pytest.mark.parametrize("kind", KINDS)
def test_constrained_plan_is_a_generalized_gibbs_ensemble(kind):
    """log q + beta eps + sum_m a_m phi_m is a row term plus a column term (eq. 10; least-squares
    residual <= 1e-8), the fields rebuild log q exactly, and an unconstrained marginal has a zero
    potential. Without the feature term the fit fails, so the check has teeth."""
    beta = 2.0
    row, col, constraints, _ = _problem(kind)
    energies = _energies(N, K, seed=21)
    gge = generalized_gibbs_ensemble(energies, beta, constraints, row, col, tolerance=CONVERGED)
    feature_term = _feature_sum(constraints, gge.multipliers)
    log_q = gge.plan.log()
    offset = beta * energies + feature_term
    assert _gge_residual(log_q.numpy(), offset.numpy()) <= 1e-8
    assert _gge_residual(log_q.numpy(), (beta * energies).numpy()) > 1e-3
    rebuilt = -offset - gge.row_potential[:, None] - gge.col_potential[None, :] - gge.log_partition
    assert_relative_close(log_q, rebuilt, rtol=0, atol=1e-10)
    if row is None:
        assert bool((gge.row_potential == 0).all())
    if col is None:
        assert bool((gge.col_potential == 0).all())


def test_label_prior_as_features_equals_label_marginal():
    """The same code solves a declared class: a label prior imposed by K - 1 indicator features
    (col_marginal=None) gives the plan of the Sinkhorn class with that label marginal
    (relative 1e-8, both solves converged to 1e-12)."""
    energies, beta = _energies(N, K, seed=22), 1.5
    prior = _marginal(K, seed=23)
    constraints = [
        LinearConstraint(torch.eye(K, dtype=torch.float64)[m], float(prior[m]))
        for m in range(K - 1)
    ]
    by_features = generalized_gibbs_ensemble(
        energies, beta, constraints, col_marginal=None, tolerance=CONVERGED
    )
    by_marginal = generalized_gibbs_ensemble(
        energies, beta, col_marginal=prior, tolerance=CONVERGED
    )
    assert_relative_close(by_features.plan, by_marginal.plan, rtol=1e-8)
    assert_relative_close(by_features.plan.sum(-2), prior, rtol=0, atol=CONVERGED)


def test_docstring_example_multiplier_matches_closed_form():
    """With one label feature f = delta_j0 and uniform rows, each row is r_i softmax(-beta eps_i
    - a f), and a solves a scalar equation; check the doctest's multiplier against a root-finder
    (independent of the Newton block) to 1e-9."""
    from scipy.optimize import brentq

    energies = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.0, 0.0]], dtype=torch.float64)
    prior = LinearConstraint(torch.tensor([1.0, 0.0], dtype=torch.float64), 0.75)
    gge = generalized_gibbs_ensemble(energies, 2.0, [prior], col_marginal=None)

    def mass_on_label_zero(a):
        logits = -2.0 * energies.numpy() - a * np.array([1.0, 0.0])
        rows = np.exp(logits - logsumexp(logits, axis=1, keepdims=True))
        return rows[:, 0].mean() - 0.75

    assert abs(float(gge.multipliers[0]) - brentq(mass_on_label_zero, -10, 10, xtol=1e-14)) < 1e-8


@pytest.mark.parametrize("col_marginal", ["uniform", None])
def test_cold_confidence_constraint_on_an_improbable_label_converges(col_marginal):
    """At large beta a confidence constraint can ask for mass on a cell the Gibbs ensemble leaves
    almost empty (here < 1e-30): its multiplier must move by ~70 nats, far outside the quadratic
    model. The solve converges without warning, meets every constraint to 1e-10, and stays a
    GGE (least-squares residual of eq. 10 <= 1e-8 relative to the size of the log-weights)."""
    n, k, beta = 16, 6, 40.0
    energies = torch.randn(n, k, generator=_generator(40), dtype=torch.float64)
    labels = energies.argmax(-1)[:3]  # the most expensive label of samples 0, 1, 2
    constraints = []
    for i, label in enumerate(labels.tolist()):
        feature = torch.zeros(n, k, dtype=torch.float64)
        feature[i, label] = 1.0
        constraints.append(LinearConstraint(feature, 0.5 / n))  # half of the sample's mass
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gge = generalized_gibbs_ensemble(
            energies, beta, constraints, col_marginal=col_marginal, tolerance=1e-10
        )
    cold = generalized_gibbs_ensemble(energies, beta, col_marginal=col_marginal)
    assert float(cold.plan[0, labels[0]]) < 1e-30
    assert gge.violation <= 1e-10
    for i, label in enumerate(labels.tolist()):
        assert abs(float(gge.plan[i, label]) - 0.5 / n) <= 1e-10
    offset = beta * energies + sum(
        a * f for (f, _), a in zip(constraints, gge.multipliers, strict=True)
    )
    log_q = gge.plan.log()
    size = float(log_q.abs().max())
    assert _gge_residual(log_q.numpy(), offset.numpy()) <= 1e-8 * size


def _cold_pinned_problem():
    """Uniform marginals at beta = 20 (log-weights spanning ~80 nats, the smallest cell 1e-33)
    with pinned labels that fight the energies and each other: samples 0-2 put 95% of their mass
    on label 0, whose uniform marginal leaves 1.15 / N for the other 13 samples, and samples 3-5
    put 90% on their most expensive other label. The block sweeps need ~1300 sweeps here."""
    n, k, beta = 16, 4, 20.0
    energies = torch.randn(n, k, generator=_generator(50), dtype=torch.float64)
    constraints = []
    for i in range(6):
        label = 0 if i < 3 else 1 + int(energies[i, 1:].argmax())
        feature = torch.zeros(n, k, dtype=torch.float64)
        feature[i, label] = 1.0
        constraints.append(LinearConstraint(feature, (0.95 if i < 3 else 0.9) / n))
    return energies, beta, constraints


def test_joint_newton_matches_scipy_and_the_block_sweeps_on_a_cold_pinned_problem(monkeypatch):
    """On a strongly coupled instance the joint Newton steps converge (to 1e-12, no warning) in a
    few tens of iterations where the block sweeps alone take a thousand, and the plan equals
    SciPy's trust-exact on the NumPy dual and the sweeps-only solver's.

    Tolerance: each solver stops with every component of the gauge-free dual gradient g (the
    constraint violations, S of them) below 1e-12, so its multipliers lie within |g| / lambda of
    the optimum, lambda the smallest curvature of the dual there (computed here, ~2e-4). Two
    such solutions differ by at most 2 sqrt(S) 1e-12 / lambda in the multipliers; a log-weight
    moves by at most sqrt(3) times that (a cell has a row, a column and at most one feature
    indicator) and log Z by as much again: relative ~2e-7 in the plan."""
    energies, beta, constraints = _cold_pinned_problem()
    n, k = energies.shape
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        joint = generalized_gibbs_ensemble(energies, beta, constraints, tolerance=CONVERGED)
    assert joint.violation <= CONVERGED
    assert joint.iterations <= 30
    assert float(joint.plan.min()) < 1e-30  # the problem is cold: the plan spans 30+ decades
    T, _ = _sufficient_statistics(n, k, _uniform(n), _uniform(k), constraints)
    q = joint.plan.numpy().reshape(-1)
    mean = T @ q
    curvature = np.linalg.eigvalsh((T * q) @ T.T - np.outer(mean, mean)).min()
    rtol = 2 * np.sqrt(3) * 2 * np.sqrt(len(T)) * CONVERGED / curvature
    assert rtol < 1e-6

    reference, reference_gradient = _reference_dual_solution(
        energies, beta, _uniform(n), _uniform(k), constraints
    )
    assert reference_gradient <= CONVERGED, "the reference solver did not converge"
    assert_relative_close(joint.plan, torch.from_numpy(reference), rtol=rtol)

    monkeypatch.setattr(gibbs_ensembles, "_JOINT_MAX_SIZE", 0)  # block sweeps only
    sweeps = generalized_gibbs_ensemble(energies, beta, constraints, tolerance=CONVERGED)
    assert sweeps.violation <= CONVERGED
    assert sweeps.iterations > 10 * joint.iterations
    assert_relative_close(joint.plan, sweeps.plan, rtol=rtol)


def test_float32_input_is_solved_in_float64_and_returned_in_float32():
    """float32 energies and features: every output field is float32, and the returned plan (read
    back in float64) meets each constraint to the float32 default tolerance 1e-6 without a
    warning."""
    energies, beta, constraints = _cold_pinned_problem()
    constraints = [LinearConstraint(f.float(), t) for f, t in constraints]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gge = generalized_gibbs_ensemble(energies.float(), beta, constraints)
    for field in ("plan", "multipliers", "row_potential", "col_potential", "log_partition"):
        assert getattr(gge, field).dtype == torch.float32, field
    assert gge.violation <= 1e-6
    q = gge.plan.double()
    n, k = q.shape
    assert_relative_close(q.sum(-1), _uniform(n), rtol=0, atol=1e-6)
    assert_relative_close(q.sum(-2), _uniform(k), rtol=0, atol=1e-6)
    for features, target in constraints:
        assert abs(float((features.double() * q).sum()) - target) <= 1e-6


def test_initial_warm_start_reaches_the_same_plan_in_fewer_iterations():
    """Warm-started from the solution of the same problem the solver stops after one sweep;
    from the solution of a nearby problem (energies moved by 0.02 sd, as between two training
    steps) it needs fewer iterations than a cold start, and both plans agree to relative 1e-7
    (both converged to 1e-12, as in the tests above). An unconstrained marginal ignores the
    warm start's potential for it."""
    energies, beta, constraints = _cold_pinned_problem()
    first = generalized_gibbs_ensemble(energies, beta, constraints, tolerance=CONVERGED)
    again = generalized_gibbs_ensemble(
        energies, beta, constraints, tolerance=CONVERGED, initial=first
    )
    assert again.iterations == 1
    assert_relative_close(again.plan, first.plan, rtol=1e-8)

    moved = energies + 0.02 * torch.randn(
        energies.shape, generator=_generator(51), dtype=torch.float64
    )
    cold = generalized_gibbs_ensemble(moved, beta, constraints, tolerance=CONVERGED)
    warm = generalized_gibbs_ensemble(moved, beta, constraints, tolerance=CONVERGED, initial=first)
    assert warm.violation <= CONVERGED
    assert warm.iterations < cold.iterations
    assert_relative_close(warm.plan, cold.plan, rtol=1e-7)

    free = generalized_gibbs_ensemble(
        moved, beta, constraints, col_marginal=None, tolerance=CONVERGED, initial=first
    )
    assert bool((free.col_potential == 0).all())
    reference = generalized_gibbs_ensemble(
        moved, beta, constraints, col_marginal=None, tolerance=CONVERGED
    )
    assert_relative_close(free.plan, reference.plan, rtol=1e-7)


# -- 3. the MaxEnt property ---------------------------------------------------------------------


def _objective(q: np.ndarray, beta: float, eps: np.ndarray) -> float:
    """S[q] - beta <eps, q> (eq. 6 and 7)."""
    return float(-(q * np.log(q)).sum() - beta * (eps * q).sum())


def _constraint_matrix(row, col, constraints) -> np.ndarray:
    """Rows: the normalization, the constrained marginals and the features, over vec(q)."""
    rows = [np.ones(N * K)]
    if row is not None:
        rows += [np.kron(np.eye(N)[i], np.ones(K)) for i in range(N)]
    if col is not None:
        rows += [np.kron(np.ones(N), np.eye(K)[j]) for j in range(K)]
    rows += [np.broadcast_to(f.numpy(), (N, K)).reshape(-1) for f, _ in constraints]
    return np.stack(rows)


@pytest.mark.parametrize("kind", KINDS)
def test_plan_maximizes_the_free_entropy_among_feasible_plans(kind):
    """Along feasible directions d (null space of the constraints), the first variation of
    F = S - beta <eps, q> vanishes at q* (to 1e-9), and F drops by the second-order amount
    sum_ij q x^2 / 2, x = s d / q, up to the third-order remainder (relative <= max |x|). The
    feasible plan the targets came from scores lower too (concavity)."""
    beta = 1.3
    row, col, constraints, feasible = _problem(kind)
    energies = _energies(N, K, seed=24)
    gge = generalized_gibbs_ensemble(energies, beta, constraints, row, col, tolerance=CONVERGED)
    q, eps = gge.plan.numpy(), energies.numpy()
    null_space = scipy.linalg.null_space(_constraint_matrix(row, col, constraints))
    assert null_space.shape[1] > 0
    rng = np.random.default_rng(25)
    best = _objective(q, beta, eps)
    first_variation = -np.log(q) - 1.0 - beta * eps
    for _ in range(10):
        d = (null_space @ rng.standard_normal(null_space.shape[1])).reshape(N, K)
        d /= np.abs(d).max()
        assert abs(float((first_variation * d).sum())) <= 1e-9
        s = 1e-2 * q.min()  # max |x| = max |s d / q| <= 1e-2
        x = s * d / q
        drop = best - _objective(q + s * d, beta, eps)
        second_order = float((q * x**2).sum() / 2)
        assert drop > 0
        assert abs(drop - second_order) <= np.abs(x).max() * second_order
    assert _objective(feasible.numpy(), beta, eps) < best


# -- 4. the Gibbs, degenerate and adiabatic classes ---------------------------------------------


def test_free_label_marginal_gives_one_gibbs_ensemble_per_sample():
    """col_marginal=None, uniform rows, no features: q_ij = softmax_j(-beta eps_ij) / N exactly
    (one sweep, relative 1e-12); a non-uniform row marginal r_i replaces 1/N."""
    energies, beta = _energies(N, K, seed=26), 1.7
    gge = generalized_gibbs_ensemble(energies, beta, col_marginal=None)
    assert_relative_close(gge.plan, torch.softmax(-beta * energies, -1) / N, rtol=1e-12)
    assert gge.iterations == 1
    row = _marginal(N, seed=27)
    gge = generalized_gibbs_ensemble(energies, beta, row_marginal=row, col_marginal=None)
    assert_relative_close(gge.plan, row[:, None] * torch.softmax(-beta * energies, -1), rtol=1e-12)


def test_no_constraint_at_all_gives_the_gibbs_ensemble():
    """Both marginals free, no features: the Gibbs ensemble exp(-beta eps) / Z over all pairs."""
    energies, beta = _energies(N, K, seed=28), 0.9
    gge = generalized_gibbs_ensemble(energies, beta, row_marginal=None, col_marginal=None)
    expected = torch.softmax(-beta * energies.reshape(-1), 0).reshape(N, K)
    assert_relative_close(gge.plan, expected, rtol=1e-12)
    assert_relative_close(gge.log_partition, torch.logsumexp(-beta * energies, (0, 1)), rtol=1e-12)


def test_cold_limit_is_the_degenerate_class():
    """beta -> infinity with a free label marginal: the hard assignment delta_{j, argmin_j eps_ij}
    / N of k-means / DeepCluster (Sec. IV.B). The off-argmin mass is at most
    K exp(-beta * gap) / N with gap the smallest energy gap (beta makes it < 1e-22); the kept
    entries carry the rounding of exponentiating log-weights of size L = beta max |eps|, a
    relative error of a few ulps times L."""
    energies = _energies(N, K, seed=29)
    top2 = energies.topk(2, dim=-1, largest=False).values
    gap = float((top2[:, 1] - top2[:, 0]).min())
    beta = 50.0 / gap
    gge = generalized_gibbs_ensemble(energies, beta, col_marginal=None)
    hard = torch.nn.functional.one_hot(energies.argmin(-1), K).to(torch.float64) / N
    rounding = 8 * np.finfo(np.float64).eps * beta * float(energies.abs().max())
    assert_relative_close(gge.plan, hard, rtol=rounding, atol=K * np.exp(-50.0) / N)


@pytest.mark.parametrize("col_marginal", ["uniform", None])
def test_hot_limit_is_the_adiabatic_class(col_marginal):
    """beta -> 0: the uniform ensemble 1 / (N K) of the adiabatic class (Sec. IV.C), with or
    without the transport constraint; the deviation is O(beta max |eps|) relative."""
    energies, beta = _energies(N, K, seed=30), 1e-10
    gge = generalized_gibbs_ensemble(energies, beta, col_marginal=col_marginal)
    bound = 4 * beta * float(energies.abs().max())
    assert_relative_close(
        gge.plan, torch.full((N, K), 1.0 / (N * K), dtype=torch.float64), rtol=bound
    )


# -- 5. inputs, batching, dtype, warnings -------------------------------------------------------


def test_plan_keeps_dtype_and_carries_no_gradient():
    """float32 in, float32 out, within the float32 default tolerance; the plan is a target."""
    energies = _energies(N, K, seed=31).float().requires_grad_()
    constraints = [LinearConstraint(torch.eye(K)[0], 0.3)]
    gge = generalized_gibbs_ensemble(energies, 2.0, constraints, col_marginal=None)
    assert gge.plan.dtype == torch.float32 and gge.multipliers.dtype == torch.float32
    assert not gge.plan.requires_grad
    assert gge.violation <= 1e-6
    assert abs(float(gge.plan.sum(0)[0]) - 0.3) <= 1e-6


def test_constraints_accept_plain_pairs_and_tensor_targets():
    energies = _energies(N, K, seed=32)
    feature = torch.eye(K, dtype=torch.float64)[1]
    named = generalized_gibbs_ensemble(
        energies, 1.0, [LinearConstraint(feature, 0.1)], col_marginal=None
    )
    pair = generalized_gibbs_ensemble(
        energies, 1.0, [(feature, torch.tensor(0.1, dtype=torch.float64))], col_marginal=None
    )
    assert_relative_close(named.plan, pair.plan, rtol=1e-15)


def test_warns_when_max_iterations_is_reached():
    row, col, constraints, _ = _problem("sinkhorn+confidence+random")
    with pytest.warns(RuntimeWarning, match="did not reach tolerance"):
        gge = generalized_gibbs_ensemble(
            _energies(N, K, seed=33), 2.0, constraints, row, col, max_iterations=2
        )
    assert gge.iterations == 2 and gge.violation > 1e-9


def test_batched_energies_are_rejected():
    """Leading batch dimensions are rejected (each problem has its own multipliers and sweeps)."""
    with pytest.raises(ValueError, match=r"energies must have shape \[N, K\]"):
        generalized_gibbs_ensemble(torch.zeros(2, N, K, dtype=torch.float64), 1.0)


def _result(
    num_features: int = 0, num_samples: int = N, col_potential: float = 0.0
) -> GeneralizedGibbsEnsemble:
    """A GeneralizedGibbsEnsemble with fields of the given sizes, as a warm start."""
    return GeneralizedGibbsEnsemble(
        torch.full((num_samples, K), 1.0 / (num_samples * K), dtype=torch.float64),
        torch.zeros(num_features, dtype=torch.float64),
        torch.zeros(num_samples, dtype=torch.float64),
        torch.full((K,), col_potential, dtype=torch.float64),
        torch.tensor(0.0, dtype=torch.float64),
        1,
        0.0,
    )


def _label(value: float = 0.3) -> LinearConstraint:
    return LinearConstraint(torch.eye(K, dtype=torch.float64)[0], value)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"energies": torch.full((N, K), float("nan"))}, ValueError, "energies"),
        ({"energies": torch.zeros(N, K, dtype=torch.int64)}, TypeError, "energies"),
        ({"energies": [[0.0, 1.0]]}, TypeError, "energies"),
        ({"beta": 0.0}, ValueError, "beta"),
        ({"beta": -1.0}, ValueError, "beta"),
        ({"beta": float("inf")}, ValueError, "beta"),
        ({"tolerance": 0.0}, ValueError, "tolerance"),
        ({"max_iterations": 0}, ValueError, "max_iterations"),
        ({"row_marginal": "flat"}, ValueError, "row_marginal"),
        (
            {"row_marginal": torch.ones(N - 1, dtype=torch.float64) / (N - 1)},
            ValueError,
            "row_marginal",
        ),
        (
            {"col_marginal": torch.tensor([0.5, 0.5, 0.0, 0.0, 0.0], dtype=torch.float64)},
            ValueError,
            r"col_marginal must be strictly positive",
        ),
        (
            {"col_marginal": torch.full((K,), 0.3, dtype=torch.float64)},
            ValueError,
            "col_marginal must sum to 1",
        ),
        (
            {"col_marginal": torch.full((K,), float("nan"), dtype=torch.float64)},
            ValueError,
            "col_marginal",
        ),
        ({"constraints": _label()}, TypeError, "constraints must be a sequence"),
        ({"constraints": [torch.zeros(K)]}, TypeError, r"constraints\[0\]"),
        (
            {"constraints": [_label(1.0 / K), (torch.zeros(N, K + 1, dtype=torch.float64), 0.0)]},
            ValueError,
            r"constraints\[1\]\.features must broadcast",
        ),
        (
            {"constraints": [(torch.zeros(N, dtype=torch.float64), 0.0)]},
            ValueError,
            r"constraints\[0\]\.features must broadcast",
        ),
        (
            {"constraints": [(torch.zeros(2, N, K, dtype=torch.float64), 0.0)]},
            ValueError,
            r"constraints\[0\]\.features must broadcast",
        ),
        (
            {"constraints": [(torch.full((K,), float("inf"), dtype=torch.float64), 0.0)]},
            ValueError,
            r"constraints\[0\]\.features",
        ),
        ({"constraints": [_label(float("nan"))]}, ValueError, r"constraints\[0\]\.target"),
        ({"constraints": [_label("0.3")]}, TypeError, r"constraints\[0\]\.target"),
        ({"constraints": [_label(torch.ones(2))]}, ValueError, r"constraints\[0\]\.target"),
        # a target outside (min phi, max phi): the indicator's expectation lies in (0, 1)
        (
            {"constraints": [_label(1.2)], "col_marginal": None},
            ValueError,
            r"constraints\[0\]\.target = 1.2 is infeasible",
        ),
        (
            {"constraints": [_label(0.0)], "col_marginal": None},
            ValueError,
            r"constraints\[0\]\.target = 0.0 is infeasible",
        ),
        # a label feature under a fixed label marginal: its expectation is fixed at 1/K
        ({"constraints": [_label(0.3)]}, ValueError, r"fix the expectation .* at 0.2"),
        # a sample feature under fixed sample marginals: fixed at sum_i g_i / N = 1/N
        (
            {
                "constraints": [(torch.eye(N, dtype=torch.float64)[:, :1], 0.5)],
                "col_marginal": None,
            },
            ValueError,
            r"constraints\[0\]\.target = 0.5 is infeasible",
        ),
        # a warm start that is not an earlier result, or is one of another problem's shape
        ({"initial": "previous"}, TypeError, "initial must be a GeneralizedGibbsEnsemble"),
        ({"initial": _result(num_features=1)}, ValueError, r"initial\.multipliers must have"),
        ({"initial": _result(num_samples=N + 1)}, ValueError, r"initial\.row_potential"),
        ({"initial": _result(col_potential=float("nan"))}, ValueError, r"initial\.col_potential"),
        # a confidence target above the row mass: E[1_{(0, 0)}] <= r_0 = 1/N
        (
            {"constraints": [(_confidence_feature(0, 0), 0.2)], "col_marginal": None},
            ValueError,
            r"strictly inside",
        ),
    ],
)
def test_bad_input_raises_naming_the_argument(kwargs, error, match):
    arguments = {"energies": _energies(N, K, seed=34), "beta": 1.0, **kwargs}
    with pytest.raises(error, match=match):
        generalized_gibbs_ensemble(**arguments)


def test_consistent_redundant_constraint_is_accepted():
    """A label feature whose target equals the value the uniform label marginal fixes (1/K) is
    redundant, not infeasible: the plan is the Sinkhorn plan (relative 1e-8, both converged to
    1e-12)."""
    energies = _energies(N, K, seed=35)
    gge = generalized_gibbs_ensemble(energies, 1.0, [_label(1.0 / K)], tolerance=CONVERGED)
    reference = sinkhorn_knopp(energies, 1.0, tolerance=CONVERGED)
    assert_relative_close(gge.plan, reference, rtol=1e-8)
