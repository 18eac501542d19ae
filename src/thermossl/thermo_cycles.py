r"""SSL training as a cycle of heating, swap and adiabatic work (paper 000, §III, Fig. 1).

Each training step on a batch of :math:`N` pairs is one cycle of the composite system formed by
the two views' twin systems (the energies of view 1 and view 2, :math:`\varepsilon^{(1)},
\varepsilon^{(2)}`, stacked as ``[2, N, K]``):

1. **augmentation**: the new views change the energies at fixed weights and occupations: the
   work :math:`W_{aug}` the data pipeline does (zero on the first cycle);
2. **heating**: each system's occupations relax to the method's equilibrium ensemble at fixed
   weights (:func:`heat_systems`): heat :math:`Q_{heat}`;
3. **swap** (twin methods): the two systems exchange occupations: heat :math:`Q_{swap}` (eq. 14);
4. **adiabatic step**: the optimizer moves the weights at fixed occupations: work :math:`W`
   (eq. 3) and the demon's irreversible work :math:`W_{irr}` (eq. 25) at the inverse temperature
   of the method's predictive softmax.

Quantities of the composite are averages over the two systems (its ensemble sums to one), so
:math:`\Delta U = W_{aug} - Q_{heat} - Q_{swap} + W` over a cycle. :math:`W_{irr}` is weighted by
the directions of the method's loss (:attr:`CycleRule.demon_weights`): SwAV's swapped prediction
trains both systems, GEDI's invariance term only view 1 on view 2's labels.

:func:`fit_temperature` measures, from the heated ensemble alone, which generalized Gibbs
ensemble it is: the inverse temperature :math:`\beta` of :math:`\log q_{ij} + \beta
\varepsilon_{ij} = u_i + v_j` (eq. 24) by least squares on the double-centred matrices, the
residual, and the spread of the label potentials :math:`v_j` (zero for a Gibbs ensemble, whose
only constraints are per sample). :func:`classify` turns these into the paper's classes (§IV).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import Tensor, nn

from thermossl.inference.gibbs_ensembles import generalized_gibbs_ensemble
from thermossl.inference.sinkhorn import sinkhorn_knopp
from thermossl.methods import Method
from thermossl.objectives.stochastic_thermodynamics import (
    ensemble_entropy,
    gibbs_cross_entropy,
    gibbs_ensemble,
    internal_energy,
    irreversible_work,
    work,
)
from thermossl.objectives.thermodynamic_processes import (
    adiabatic_step,
    first_law_residual,
    isochoric_heating,
    swap_occupations,
)

__all__ = [
    "CLASSES",
    "CycleRecorder",
    "CycleRule",
    "EnsembleFit",
    "classify",
    "cycle_rule",
    "demon_alignment",
    "fit_temperature",
    "heat_systems",
    "system_energies",
]

#: The paper's classes (§IV) and the Gibbs class of methods that heat without label constraints.
CLASSES = {
    "sinkhorn-knopp": "Sinkhorn-Knopp class: a GGE with sample and label marginals (§IV.A)",
    "gibbs": "Gibbs class: a GGE with sample constraints only, at finite temperature",
    "degenerate": "degenerate class: hard self-labels, T = 0 (§IV.B)",
    "adiabatic": "adiabatic class: a fixed uniform ensemble, T = infinity (§IV.C)",
}

_HALF = (0.5, 0.5)


class CycleRule(NamedTuple):
    r"""How a method heats, swaps and whose work its demon extracts.

    ``label_marginals``: heat by Sinkhorn-Knopp to uniform label marginals (else a Gibbs
    ensemble per sample). ``heating_beta``: the heating's :math:`\beta` (``inf``: hard labels,
    ``0``: uniform). ``sinkhorn_iterations``: fixed sweeps (SwAV's 3) or ``None`` (converged).
    ``demon_beta``: :math:`\beta` of the predictive softmax the loss matches. ``swap``: the twin
    systems exchange occupations. ``demon_weights``: weight of systems 1 and 2 in the loss.
    ``label_marginal``: a declared non-uniform label marginal of the Sinkhorn heating (§V).
    ``constraints``: further declared :class:`~thermossl.inference.LinearConstraint` s (§V); the
    heating is then the converged generalized Gibbs ensemble.
    """

    label_marginals: bool
    heating_beta: float
    sinkhorn_iterations: int | None
    demon_beta: float
    swap: bool
    demon_weights: tuple[float, float]
    label_marginal: tuple[float, ...] | None = None
    constraints: tuple = ()


def cycle_rule(method: Method) -> CycleRule:
    """The :class:`CycleRule` of a cluster method or BYOL, read off its program's settings.

    :raises ValueError: for a method whose training is not a cycle of this kind.
    """
    if method.predictor is not None:  # BYOL: uniform ensemble over the representation's indices
        return CycleRule(False, 0.0, None, 0.0, False, _HALF)
    if not method.has_clusters:
        raise ValueError(
            f"{method.name} has neither self-labels nor a BYOL predictor; the thermodynamic "
            "cycle is defined for swav, sela, deepcluster, the GEDI family and byol"
        )
    program = method.program
    demon_beta = 1.0 / program.temperature
    weights = _HALF if program.symmetric else (1.0, 0.0)
    if program.auxiliary == "sinkhorn":
        beta = 1.0 / program.sinkhorn_epsilon
        marginal = program.code_marginal()
        if marginal is not None:
            marginal = tuple(float(p) for p in marginal)
        return CycleRule(
            True,
            beta,
            program.sinkhorn_iterations,
            demon_beta,
            True,
            weights,
            marginal,
            tuple(program.code_constraints),
        )
    if program.auxiliary == "hard":
        return CycleRule(False, math.inf, None, demon_beta, True, weights)
    return CycleRule(False, demon_beta, None, demon_beta, True, weights)  # GEDI: p(y | x')


def system_energies(method: Method, x1: Tensor, x2: Tensor) -> Tensor:
    r"""The twin systems' energies ``[2, N, K]``.

    Cluster methods: :math:`\varepsilon_{ij} = -s_{ij}`, the negative prototype scores (eq. 18;
    cosine scores where the method normalizes). BYOL (eq. 30): :math:`\varepsilon_{ij} = 2 - 2K
    \bar p_{ij} \bar z'_{ij}`, the online prediction of one view against the target projection of
    the other, so that the uniform ensemble's energy is BYOL's loss.

    .. warning:: Eq. 30 prints :math:`2 - 2NK \bar p_{ij} \bar x'_{ij}`, which with :math:`\sum_i`
        unnormalized gives :math:`N` times the per-pair loss; here the loss is per pair.
    """
    if method.predictor is not None:
        energies = []
        for prediction, target in method.byol_directions(x1, x2):
            p = nn.functional.normalize(prediction, dim=-1)
            z = nn.functional.normalize(target, dim=-1)
            energies.append(2 - 2 * p.shape[-1] * p * z)
        return torch.stack(energies)
    return -torch.stack([method.program.scores(x1), method.program.scores(x2)])


def heat_systems(rule: CycleRule, energies: Tensor) -> Tensor:
    """Each system's equilibrium ensemble under ``rule``: Sinkhorn-Knopp's GGE (eq. 24) with
    uniform sample marginals and uniform (or declared) label marginals, or the per-sample Gibbs
    ensemble (``inf``: hard, ``0``: uniform)."""
    if rule.label_marginals:
        marginal = None
        if rule.label_marginal is not None:
            marginal = torch.tensor(
                rule.label_marginal, dtype=energies.dtype, device=energies.device
            )
        if rule.constraints:
            return torch.stack(
                [
                    generalized_gibbs_ensemble(
                        system,
                        rule.heating_beta,
                        constraints=rule.constraints,
                        col_marginal="uniform" if marginal is None else marginal,
                    ).plan
                    for system in energies
                ]
            )
        return sinkhorn_knopp(
            energies,
            rule.heating_beta,
            col_marginal=marginal,
            iterations=rule.sinkhorn_iterations,
        )
    return gibbs_ensemble(energies, rule.heating_beta)


class EnsembleFit(NamedTuple):
    r"""Which GGE an ensemble is: :math:`\beta`, the largest residual of :math:`\log q + \beta
    \varepsilon = u_i + v_j`, the range of the label potentials :math:`v_j`, and whether every
    sample's mass sits on one label (:math:`\beta = \infty`)."""

    beta: float
    residual: float
    label_potential_spread: float
    degenerate: bool


def _double_centred(matrix: Tensor) -> Tensor:
    return (
        matrix
        - matrix.mean(-1, keepdim=True)
        - matrix.mean(-2, keepdim=True)
        + matrix.mean((-2, -1), keepdim=True)
    )


def fit_temperature(ensemble: Tensor, energies: Tensor) -> EnsembleFit:
    r"""Fit :math:`\log q_{ij} = -\beta\varepsilon_{ij} - u_i - v_j` (eq. 24) to one ``[N, K]``
    ensemble: double centring removes :math:`u, v`, and :math:`\beta` is the least-squares slope.

    Example::

        >>> energies = torch.randn(6, 3, dtype=torch.float64)
        >>> fit = fit_temperature(torch.softmax(-4.0 * energies, -1) / 6, energies)
        >>> round(fit.beta, 9), fit.residual < 1e-12, fit.label_potential_spread < 1e-12
        (4.0, True, True)
    """
    ensemble, energies = ensemble.double(), energies.double()
    if bool(((ensemble > 0).sum(-1) == 1).all()):
        return EnsembleFit(math.inf, 0.0, math.nan, True)
    log_q = ensemble.log()
    if not bool(torch.isfinite(log_q).all()):
        return EnsembleFit(math.nan, math.inf, math.nan, False)
    centred_log_q, centred_energies = _double_centred(log_q), _double_centred(energies)
    scale = float(centred_energies.square().sum())
    beta = -float((centred_log_q * centred_energies).sum()) / scale if scale > 0 else 0.0
    residual = float((centred_log_q + beta * centred_energies).abs().max())
    potentials = log_q + beta * energies  # = -(u_i + v_j) + residual
    label_potentials = potentials.mean(-2) - potentials.mean()
    spread = float(label_potentials.max() - label_potentials.min())
    return EnsembleFit(beta, residual, spread, False)


@contextmanager
def preserved_buffers(module: nn.Module | None) -> Iterator[None]:
    """Run a block and put ``module``'s buffers (batch-norm statistics) back as they were: the
    recorder's energy evaluations must not count as training batches."""
    if module is None:
        yield
        return
    saved = [buffer.clone() for buffer in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(module.buffers(), saved, strict=True):
                buffer.copy_(value)


class CycleRecorder:
    r"""Wraps a training step and records the cycle's heat, work and irreversible work.

    :param energy_function: ``(x1, x2) -> [2, N, K]`` energies of the twin systems at the current
        weights (for instance ``functools.partial(system_energies, method)``).
    :param CycleRule rule: how the method heats and swaps.
    :param torch.nn.Module module: whose buffers the energy evaluations must leave untouched.

    The recorder carries the occupations from one cycle to the next while the batch holds the
    same points (``same_points=True``, the paper's single minibatch); on a batch of new points the
    heating starts from the network's own Gibbs ensemble at the demon's :math:`\beta`.

    Example: one SwAV cycle on a moons batch::

        >>> from thermossl.methods import build_method
        >>> _ = torch.manual_seed(0)
        >>> method = build_method("swav", input_dim=2)
        >>> optimizer = torch.optim.SGD(method.parameters(), lr=0.01)
        >>> recorder = CycleRecorder(lambda a, b: system_energies(method, a, b), cycle_rule(method), method)
        >>> x1 = torch.randn(64, 2); x2 = x1 + 0.03 * torch.randn(64, 2)
        >>> def step():
        ...     optimizer.zero_grad(); loss = method.loss(x1, x2)[0]; loss.backward()
        ...     optimizer.step()
        ...     return {"loss": loss.item()}
        >>> row = recorder.cycle(x1, x2, step)
        >>> abs(row["first_law_residual"]) < 1e-12, round(row["heating_beta_fit"], 6)
        (True, 20.0)
    """

    def __init__(
        self,
        energy_function: Callable[[Tensor, Tensor], Tensor],
        rule: CycleRule,
        module: nn.Module | None = None,
    ):
        self.energy_function = energy_function
        self.rule = rule
        self.module = module
        self.occupations: Tensor | None = None
        self.energies: Tensor | None = None
        self.cycles = 0

    def _energies(self, x1: Tensor, x2: Tensor) -> Tensor:
        with preserved_buffers(self.module), torch.no_grad():
            return self.energy_function(x1, x2).double()

    def state(self) -> dict:
        """What a checkpoint needs to continue the record."""
        return {"occupations": self.occupations, "energies": self.energies, "cycles": self.cycles}

    def load_state(self, state: dict) -> None:
        self.occupations, self.energies = state["occupations"], state["energies"]
        self.cycles = state["cycles"]

    def cycle(
        self, x1: Tensor, x2: Tensor, step: Callable[[], dict], same_points: bool = True
    ) -> dict[str, float]:
        """One cycle around ``step`` (the optimizer step on ``(x1, x2)``); returns its row."""
        rule = self.rule
        half = torch.tensor(_HALF, dtype=torch.float64)
        demon = torch.tensor(rule.demon_weights, dtype=torch.float64)
        energies = self._energies(x1, x2)
        carried = (
            same_points
            and self.occupations is not None
            and self.occupations.shape == energies.shape
        )
        if carried:
            occupations = self.occupations.to(energies.device)
            augmentation = _weighted(work(occupations, self.energies, energies), half)
        else:
            occupations = gibbs_ensemble(energies, rule.demon_beta)
            augmentation = energies.new_zeros(())
        heated = heat_systems(rule, energies)
        heating = isochoric_heating(occupations, energies, heated, weights=half)
        occupations, swap_heat = heated, energies.new_zeros(())
        records = [heating]
        if rule.swap:
            swapping = swap_occupations(heated, energies)
            occupations, swap_heat = swapping.ensemble, swapping.heat / 2
            records.append(swapping)
        terms = step()
        energies_after = self._energies(x1, x2)
        adiabatic = adiabatic_step(occupations, energies, energies_after, rule.demon_beta, half)
        records.append(adiabatic)
        demon_work = _weighted(
            irreversible_work(occupations, energies, energies_after, rule.demon_beta), demon
        )
        fits = [fit_temperature(heated[s], energies[s]) for s in range(2)]
        self.occupations, self.energies = occupations, energies_after
        self.cycles += 1
        return {
            "cycle": self.cycles,
            **{key: float(value) for key, value in terms.items()},
            "internal_energy": float(_weighted(internal_energy(heated, energies), half)),
            "entropy": float(_weighted(ensemble_entropy(heated), half)),
            "augmentation_work": float(augmentation),
            "heating_heat": float(heating.heat),
            "swap_heat": float(swap_heat),
            "work": float(adiabatic.work),
            "irreversible_work": float(demon_work),
            "first_law_residual": max(abs(float(first_law_residual(r))) for r in records),
            "heating_beta_fit": statistics.fmean(fit.beta for fit in fits),
            "gge_residual": max(fit.residual for fit in fits),
            "label_potential_spread": statistics.fmean(fit.label_potential_spread for fit in fits),
            "energy_spread": float(energies.std(-1).mean()),
        }


def demon_alignment(
    method: Method, x1: Tensor, x2: Tensor, samples: Tensor | None = None
) -> dict[str, float]:
    r"""Where a training step's first-order irreversible work comes from, term by term.

    For a step :math:`\delta\lambda = -\gamma \nabla \ell` on the loss
    :math:`\ell = -\sum_k T_k / n` (the derived bound's terms :math:`T_k`),

    .. math::

        W_{irr} / \gamma = -\langle \nabla \Phi, \nabla \ell \rangle + O(\gamma)
        = \textstyle\sum_k \langle \nabla\Phi, \nabla T_k / n \rangle + O(\gamma),

    with :math:`\Phi = -\langle q, \log q^G \rangle` the demon's potential at the cycle's swapped
    ensemble held fixed (eq. 25). Eq. 17 (:math:`W_{irr} \le 0`) needs the sum to be negative;
    it is :math:`-\|\nabla\Phi\|^2` when the loss is the demon's potential (SwAV, whose codes are
    stop-gradient). Returns each term's share ``"<site>"`` and their sum ``"total"``;
    batch-norm statistics are left as they were. Methods with a derived bound only.
    """
    if method.program is None:
        raise ValueError(f"{method.name} has no derived bound to split into terms")
    rule = cycle_rule(method)
    parameters = [p for p in method.parameters() if p.requires_grad]
    with preserved_buffers(method):
        energies = system_energies(method, x1, x2)
        occupations = heat_systems(rule, energies.detach())  # held fixed, as in eq. 25
        if rule.swap:
            occupations = occupations.flip(0)
        weights = torch.tensor(rule.demon_weights, dtype=energies.dtype)
        potential = (weights * gibbs_cross_entropy(occupations, energies, rule.demon_beta)).sum()
        demon = torch.autograd.grad(potential, parameters, allow_unused=True)
        extra = [samples] if method.has_energy else []
        bound = method._derived_bound()(x1, x2, *extra)
        shares = {}
        for name, term in bound.terms.items():
            if not term.requires_grad:
                continue
            gradient = torch.autograd.grad(term, parameters, retain_graph=True, allow_unused=True)
            shares[name] = sum(
                float((a * b).sum()) / x1.shape[0]
                for a, b in zip(demon, gradient, strict=True)
                if a is not None and b is not None
            )
    shares["total"] = sum(shares.values())
    return shares


def _weighted(values: Tensor, weights: Tensor) -> Tensor:
    return (weights.to(values) * values).sum()


def classify(rows: list[dict[str, float]], tolerance: float = 1e-6) -> dict[str, object]:
    r"""The paper's class (§IV) of a recorded run and its measured temperature range.

    Degenerate when every heated ensemble is hard; adiabatic when it is uniform
    (:math:`\beta = 0`) and the heating exchanges no heat; otherwise Sinkhorn-Knopp when the label
    potentials :math:`v_j` are not constant (label constraints act), else Gibbs. The temperature
    :math:`T = 1/\beta` is given as measured, and relative to the energies' spread within a sample
    (the mean over samples of the standard deviation over labels), which tells how hot the
    ensemble is for the energies it sees.
    """
    if not rows:
        raise ValueError("no cycles were recorded")
    betas = [row["heating_beta_fit"] for row in rows]
    temperatures = [0.0 if math.isinf(b) else (math.inf if b == 0 else 1 / b) for b in betas]
    relative = [t / row["energy_spread"] for t, row in zip(temperatures, rows, strict=True)]
    if all(math.isinf(b) for b in betas):
        name = "degenerate"
    elif all(abs(b) <= tolerance for b in betas) and all(
        abs(row["heating_heat"]) <= tolerance for row in rows[1:]
    ):
        name = "adiabatic"
    elif max(row["label_potential_spread"] for row in rows) > tolerance:
        name = "sinkhorn-knopp"
    else:
        name = "gibbs"
    return {
        "class": name,
        "description": CLASSES[name],
        "temperature_range": [min(temperatures), max(temperatures)],
        "relative_temperature_range": [min(relative), max(relative)],
        "largest_gge_residual": max(row["gge_residual"] for row in rows),
    }
