"""Energy, heat, work, free energy and the three processes of paper 000, in float64.

References: the first law as an identity between independently computed sums, SwAV's and
DeepCluster's published losses (for the demon's potential), hand-derived derivatives of the free
energy (for eq. 15) and Taylor's theorem (for the demon's sign, eq. 17).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from thermossl.objectives import losses
from thermossl.objectives.stochastic_thermodynamics import (
    ensemble_entropy,
    free_energy,
    gibbs_cross_entropy,
    gibbs_ensemble,
    heat,
    internal_energy,
    irreversible_work,
    prototype_energies,
    swap_heat,
    uniform_ensemble,
    work,
)
from thermossl.objectives.thermodynamic_processes import (
    adiabatic_step,
    first_law_residual,
    isochoric_heating,
    swap_occupations,
)

DTYPE = torch.float64


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ensemble(n: int, k: int, seed: int) -> torch.Tensor:
    """A random joint ensemble (Dirichlet(1) over the N K states)."""
    weights = -torch.rand(n, k, generator=_generator(seed), dtype=DTYPE).log()
    return weights / weights.sum()


def _energies(n: int, k: int, seed: int) -> torch.Tensor:
    return torch.randn(n, k, generator=_generator(seed), dtype=DTYPE)


# -- the first law and the swap ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_first_law_holds_for_any_pair_of_transformations(seed):
    """(q, eps) -> (q', eps'): U' - U = W - Q with W (eq. 3) and Q (eq. 4), to 1e-12."""
    n, k = 7, 4
    q, q_after = _ensemble(n, k, seed), _ensemble(n, k, seed + 100)
    before, after = _energies(n, k, seed + 200), _energies(n, k, seed + 300)
    change = internal_energy(q_after, after) - internal_energy(q, before)
    first_law = work(q, before, after) - heat(q, q_after, after)
    assert abs(float(change - first_law)) <= 1e-12


def test_each_process_obeys_the_first_law_and_its_own_restriction():
    n, k = 9, 3
    q, heated = _ensemble(n, k, 1), _ensemble(n, k, 2)
    before, after = _energies(n, k, 3), _energies(n, k, 4)
    heating = isochoric_heating(q, before, heated)
    step = adiabatic_step(heated, before, after, beta=2.0)
    for record in (heating, step):
        assert abs(float(first_law_residual(record))) <= 1e-12
    assert float(heating.work) == 0.0 and float(step.heat) == 0.0
    # a heating and then an adiabatic step: the cycle's heat and work add up to the total change
    total = internal_energy(heated, after) - internal_energy(q, before)
    assert abs(float(total - (step.work - heating.heat))) <= 1e-12


def test_swap_heat_is_minus_the_energy_change_of_the_combined_system():
    """Eq. 13–14: the swap does no work, so the heat given off is -(E_after - E_before)."""
    n, k = 6, 5
    q, q_twin = _ensemble(n, k, 5), _ensemble(n, k, 6)
    eps, eps_twin = _energies(n, k, 7), _energies(n, k, 8)
    before = internal_energy(q, eps) + internal_energy(q_twin, eps_twin)
    after = internal_energy(q_twin, eps) + internal_energy(q, eps_twin)  # eq. 13
    assert abs(float(swap_heat(q, q_twin, eps, eps_twin) + (after - before))) <= 1e-12
    record = swap_occupations(torch.stack([q, q_twin]), torch.stack([eps, eps_twin]))
    assert abs(float(first_law_residual(record))) <= 1e-12
    assert torch.equal(record.ensemble, torch.stack([q_twin, q]))


# -- free energy, Gibbs ensembles and the limits -----------------------------------------------------


def test_free_energy_and_gibbs_ensemble_against_explicit_sums():
    n, k, beta = 5, 4, 1.7
    eps = _energies(n, k, 9)
    partition = n * torch.exp(-beta * eps).sum(-1)  # Z_i
    assert torch.allclose(free_energy(eps, beta), -partition.log().sum(), rtol=1e-14)
    q_gibbs = gibbs_ensemble(eps, beta)
    assert torch.allclose(q_gibbs, torch.exp(-beta * eps) / partition[:, None], rtol=1e-13)
    assert torch.allclose(q_gibbs.sum(-1), torch.full((n,), 1 / n, dtype=DTYPE))


def test_gibbs_limits_are_the_degenerate_and_the_adiabatic_ensembles():
    """beta -> inf: each row on its lowest energy (§IV.B); beta -> 0: uniform 1/(NK) (§IV.C)."""
    n, k = 8, 5
    eps = _energies(n, k, 10)
    hard = gibbs_ensemble(eps, float("inf"))
    expected = torch.nn.functional.one_hot(eps.argmin(-1), k).to(DTYPE) / n
    assert torch.equal(hard, expected)
    gap = (eps.sort(-1).values[:, 1] - eps.sort(-1).values[:, 0]).min()
    beta = 40.0 / float(gap)  # every competitor weighs at most (K - 1) e^{-40}
    assert (gibbs_ensemble(eps, beta) - hard).abs().max() <= (k - 1) * math.exp(-40.0)
    assert torch.allclose(gibbs_ensemble(eps, 0.0), uniform_ensemble(eps), rtol=0, atol=1e-17)
    assert abs(float(ensemble_entropy(hard)) - math.log(n)) <= 1e-12
    assert abs(float(ensemble_entropy(uniform_ensemble(eps))) - math.log(n * k)) <= 1e-12


# -- irreversible work and the demon ---------------------------------------------------------------


def test_irreversible_work_is_the_change_of_the_gibbs_cross_entropy():
    """W_irr = beta W - sum_i r_i dF_i = d[-<q, log q^G>] (eq. 12, 25), exact for finite steps."""
    n, k, beta = 6, 4, 3.0
    q = _ensemble(n, k, 11)
    before, after = _energies(n, k, 12), _energies(n, k, 13)
    cross_entropy = [
        -(q * gibbs_ensemble(eps, beta).log()).sum() for eps in (before, after)
    ]  # written out, not through gibbs_cross_entropy
    assert torch.allclose(
        irreversible_work(q, before, after, beta), cross_entropy[1] - cross_entropy[0], rtol=1e-12
    )
    assert float(irreversible_work(q, before, after, beta=0.0)) == 0.0


def test_gibbs_cross_entropy_is_swav_and_deepcluster_loss_plus_log_n():
    """After the swap each view holds the other's codes / N; the composite (weights 1/2) demon
    potential is the published loss per pair + log N."""
    n, k = 16, 6
    scores = torch.randn(2, n, k, generator=_generator(14), dtype=DTYPE)
    tau = 0.1
    codes = torch.stack([losses.swav_codes(s) for s in scores])  # rows sum to one
    swapped = codes.flip(0) / n
    potential = gibbs_cross_entropy(swapped, -scores, beta=1 / tau).mean()
    published = losses.swav(scores[0], scores[1], temperature=tau)
    assert torch.allclose(potential, published + math.log(n), rtol=1e-12)

    hard = torch.stack([gibbs_ensemble(-s, float("inf")) for s in scores]).flip(0)
    potential = gibbs_cross_entropy(hard, -scores, beta=1 / tau).mean()
    published = losses.deepcluster(scores[0], scores[1], temperature=tau)
    assert torch.allclose(potential, published + math.log(n), rtol=1e-12)


def _prototype_model(seed: int):
    """Energies eps(lambda) = -H tanh(A I) of fixed data I (eq. 18 with a one-layer phi)."""
    generator = _generator(seed)
    inputs = torch.randn(10, 3, generator=generator, dtype=DTYPE)
    parameters = [
        torch.randn(4, 3, generator=generator, dtype=DTYPE),  # A
        torch.randn(5, 4, generator=generator, dtype=DTYPE),  # H
    ]

    def energies(A, H):
        return prototype_energies(torch.tanh(inputs @ A.T), H)

    return energies, parameters


def test_first_order_irreversible_work_is_eq_15_with_the_hand_derived_free_energy_gradient():
    """W_irr(h v) = h beta sum_ij (q_ij - r_i p_ij) d eps_ij[v] + O(h^2), p = softmax(-beta eps_i)
    (dF_i = beta sum_j p_ij d eps_ij); the O(h^2) remainder quarters when h halves."""
    energies, parameters = _prototype_model(15)
    direction = [torch.randn(p.shape, generator=_generator(16), dtype=DTYPE) for p in parameters]
    beta = 2.5
    eps = energies(*parameters)
    q = _ensemble(*eps.shape, seed=17)
    _, eps_dot = torch.func.jvp(energies, tuple(parameters), tuple(direction))
    p = torch.softmax(-beta * eps, dim=-1)
    rate = beta * ((q - q.sum(-1, keepdim=True) * p) * eps_dot).sum()

    def remainder(h):
        moved = [p0 + h * v for p0, v in zip(parameters, direction, strict=True)]
        return float(irreversible_work(q, eps, energies(*moved), beta)) - h * float(rate)

    ratios = [remainder(h) / remainder(h / 2) for h in (1e-2, 5e-3)]
    assert all(3.6 < r < 4.4 for r in ratios), ratios


@pytest.mark.parametrize("seed", range(3))
def test_the_demons_gradient_step_extracts_irreversible_work(seed):
    """Eq. 16–17: delta lambda = -gamma grad[-<q, log q^G>] gives W_irr = -gamma |grad|^2 (1 + O(gamma))
    <= 0: the relative error halves when gamma halves."""
    energies, parameters = _prototype_model(20 + seed)
    beta = 1.5
    eps = energies(*parameters)
    q = gibbs_ensemble(energies(*[p + 0.3 for p in parameters]), beta).detach()  # other labels
    leaves = [p.clone().requires_grad_(True) for p in parameters]
    gradient = torch.autograd.grad(gibbs_cross_entropy(q, energies(*leaves), beta), leaves)
    squared_norm = sum(float(g.square().sum()) for g in gradient)

    def relative_error(gamma):
        moved = [p - gamma * g for p, g in zip(parameters, gradient, strict=True)]
        w_irr = float(irreversible_work(q, eps, energies(*moved), beta))
        assert w_irr < 0
        return w_irr / (-gamma * squared_norm) - 1

    errors = [relative_error(gamma) for gamma in (4e-3, 2e-3, 1e-3)]
    assert all(1.8 < a / b < 2.2 for a, b in itertools.pairwise(errors)), errors


# -- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: work(torch.ones(2, 3) / 6, torch.zeros(2, 3), torch.zeros(3, 2)), "same states"),
        (lambda: heat(torch.ones(2, 3) / 6, torch.ones(3, 2) / 6, torch.zeros(2, 3)), "same"),
        (lambda: free_energy(torch.zeros(2, 3), beta=-1.0), "beta must be >= 0"),
        (lambda: free_energy(torch.zeros(2, 3), beta=float("nan")), "beta"),
        (lambda: irreversible_work(*[torch.ones(2, 2) / 4] * 3, beta=float("inf")), "finite"),
        (lambda: prototype_energies(torch.zeros(4, 3), torch.zeros(5, 2)), "disagree on R"),
        (lambda: internal_energy(torch.ones(3), torch.ones(3)), "ensemble"),
        (lambda: swap_occupations(torch.ones(3, 2, 2), torch.ones(3, 2, 2)), "two twin"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("beta", [0.5, 5.0])
def test_swapping_two_equilibrium_ensembles_never_gives_off_heat(beta):
    """For GGEs q = argmin <q, eps> - S/beta and q~ likewise for eps~ over the same polytope, adding
    the two optimality inequalities gives <q - q~, eps - eps~> <= 0: the swap (eq. 14) only absorbs
    heat. Checked on 50 random pairs with the converged Sinkhorn-Knopp ensembles."""
    from thermossl.inference.sinkhorn import sinkhorn_knopp

    for seed in range(50):
        eps, eps_twin = _energies(8, 3, 1000 + seed), _energies(8, 3, 2000 + seed)
        q = sinkhorn_knopp(eps, beta, tolerance=1e-13)
        q_twin = sinkhorn_knopp(eps_twin, beta, tolerance=1e-13)
        assert float(swap_heat(q, q_twin, eps, eps_twin)) <= 1e-12
