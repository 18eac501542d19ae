r"""Training to the equilibrium surface and the practical iso-classification process (paper 002).

The model is :class:`~thermossl.models.therml_digits.DigitsWorlds` (encoder, marginal, decoder,
classifier; every parameter a point estimate). Three pieces:

* :func:`equilibrate`: Adam steps on :math:`J = R + \lambda D + \gamma C` (+ the weight prior's
  :math:`S`, :func:`weight_entropy`) whose learning rate
  follows :func:`~thermossl.inference.quasi_static.rise_and_anneal` (§5.1); with ``peak`` constant
  it is plain training.
* :func:`classification_derivatives`: :math:`\partial C/\partial\lambda` and
  :math:`\partial C/\partial\gamma` by central finite differences, each side re-equilibrated from
  the current parameters (Remark 7).
* :func:`run_iso_classification`: Remark 7's process, :math:`\dot\lambda = -\alpha\,\partial
  C/\partial\gamma`, :math:`\dot\gamma = \alpha\,\partial C/\partial\lambda` (eq. 31), each change of
  :math:`(\lambda, \gamma)` followed by an equilibration, logging :math:`R, D, C` per step;
  :func:`path_metrics` reads eq. 29, the concavity of :math:`F` and Fig. 4a off the path.

**Common random numbers.** Every equilibration draws the encoder's noise from a generator seeded
by the process step only, so the finite-difference branches see the same noise and their
difference measures the multipliers, not the draws. The functionals are read with a fixed set of
noise draws (``evaluation_draws`` per example) on the whole training set.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from thermossl._validation import (
    check_positive,
    check_positive_integer,
    check_probability_vector,
)
from thermossl.inference.quasi_static import conserving_rates, rise_and_anneal
from thermossl.models.therml_digits import ChainFunctionals, DigitsData, DigitsWorlds, digits_data
from thermossl.runs import environment, write_atomically, write_csv, write_figure, write_json

#: Learning-rate schedules of :func:`equilibrate`.
SCHEDULES = ("rise_and_anneal", "step_decay", "constant")

__all__ = [
    "SCHEDULES",
    "SurfaceConfig",
    "SurfaceSettings",
    "SurfaceState",
    "classification_derivatives",
    "equilibrate",
    "evaluate_functionals",
    "iso_classification_step",
    "path_metrics",
    "run_iso_classification",
    "weight_entropy",
]


@dataclass
class SurfaceSettings:
    r"""What every process on the equilibrium surface is trained with (paper 002, §5.1, scaled to
    digits); :class:`SurfaceConfig` and :class:`~thermossl.surface_transfer.TransferConfig`
    extend it.

    ``initial_steps`` Adam steps at ``learning_rate`` reach the surface at :math:`(\lambda_0,
    \gamma_0)` = ``(lambda_, gamma)``; each change of the multipliers is followed by
    ``equilibration_steps`` steps whose learning rate rises to ``peak_learning_rate`` and anneals
    to zero; ``steps`` process steps. ``difference`` is the finite-difference step :math:`h`
    relative to each multiplier. ``weight_decay`` :math:`\epsilon` adds the weight prior's
    :math:`S = \epsilon\|\theta\|^2/2` to :math:`J` (:func:`weight_entropy`: without it the
    digits model has no surface to reach).

    The defaults are the README's runs: with them, one more equilibration at fixed multipliers
    moves :math:`C` by about 1 % and :math:`J` by less than 0.2 %.
    """

    lambda_: float = 0.5
    gamma: float = 5.0
    steps: int = 20
    initial_steps: int = 25_000
    learning_rate: float = 1e-2
    equilibration_steps: int = 1000
    peak_learning_rate: float = 1.5e-2
    weight_decay: float = 1e-2
    difference: float = 0.05
    batch_size: int = 256
    latent_dim: int = 6
    hidden: int = 48
    evaluation_draws: int = 4
    seed: int = 0

    def validate(self) -> None:
        """Raise :class:`ValueError` naming the first bad setting: positive multipliers and
        learning rates, a finite ``weight_decay`` >= 0, ``difference`` in (0, 1), positive
        integer counts and a non-negative integer ``seed``.

        Example::

            >>> SurfaceSettings(hidden=0).validate()
            Traceback (most recent call last):
            ...
            ValueError: hidden must be a positive integer, got 0
        """
        for name in ("lambda_", "gamma", "learning_rate", "peak_learning_rate"):
            check_positive(name, getattr(self, name))
        decay = self.weight_decay
        if isinstance(decay, bool) or not (
            isinstance(decay, (int, float)) and 0 <= decay < math.inf
        ):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {decay!r}")
        if not (isinstance(self.difference, (int, float)) and 0 < self.difference < 1):
            raise ValueError(f"difference must lie in (0, 1), got {self.difference!r}")
        for name in (
            "steps",
            "initial_steps",
            "equilibration_steps",
            "batch_size",
            "latent_dim",
            "hidden",
            "evaluation_draws",
        ):
            check_positive_integer(name, getattr(self, name))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class SurfaceConfig(SurfaceSettings):
    r"""Settings of an iso-classification run (Remark 7): :class:`SurfaceSettings`, and
    ``alpha``, the process's time scale (eq. 31); ``beta`` switches the conserved quantity from
    :math:`C` to Remark 8's :math:`C + R/\beta`."""

    alpha: float = 3.0
    beta: float | None = None

    def validate(self) -> None:
        """Raise :class:`ValueError` naming the first bad setting."""
        super().validate()
        check_positive("alpha", self.alpha)
        if self.beta is not None:
            check_positive("beta", self.beta)


@dataclass
class SurfaceState:
    """Where a process stands: the model, the multipliers and the process step."""

    worlds: DigitsWorlds
    lambda_: float
    gamma: float
    step: int = 0


_CHAINS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _chains(worlds: DigitsWorlds) -> ChainFunctionals:
    """The model's :class:`ChainFunctionals`, kept with it: the derivation is recorded once per
    input shape, not at every equilibration (a recording costs ~0.1 s)."""
    if worlds not in _CHAINS:
        _CHAINS[worlds] = ChainFunctionals(worlds)
    return _CHAINS[worlds]


def _head(worlds: DigitsWorlds) -> Tensor:
    return torch.cat([worlds.encoder_head.weight.flatten(), worlds.encoder_head.bias])


def _objective(
    chains: ChainFunctionals, data: DigitsData, indices: Tensor, noise: Tensor, lambda_, gamma
):
    values = chains(
        _head(chains.worlds)[None], data.train_pixels, data.train_labels, indices, noise[None]
    )
    return values.rate[0] + lambda_ * values.distortion[0] + gamma * values.classification[0]


def equilibrate(
    worlds: DigitsWorlds,
    data: DigitsData,
    lambda_: float,
    gamma: float,
    steps: int,
    peak_learning_rate: float,
    *,
    seed: int,
    batch_size: int = 256,
    schedule: str = "rise_and_anneal",
    record_every: int | None = None,
    sampling_weights: Tensor | None = None,
    weight_decay: float = 0.0,
    progress: bool = False,
) -> list[float]:
    r"""Adam on :math:`J(\lambda, \gamma)` for ``steps`` minibatch steps; returns :math:`J` per step.

    ``schedule="rise_and_anneal"`` sets step :math:`t`'s rate to :func:`rise_and_anneal`
    :math:`(t, T)`; ``"step_decay"`` divides ``peak_learning_rate`` by 10 at 5/12 and 10/12 of the
    steps (the drops at epochs 50 and 100 of 120 in §5.1); ``"constant"`` keeps it. Minibatches
    and the encoder's noise come from a generator seeded with ``seed`` (common random numbers
    across calls). With ``record_every``, the returned values are instead :math:`J` on the whole
    training set (fixed noise draws, :func:`evaluate_functionals`) before the first step and every
    ``record_every`` steps: the free energy during equilibration (Fig. 4a).

    ``sampling_weights`` (``[N]``, non-negative, summing to one) draws the minibatches from that
    distribution over the training examples instead of uniformly: the data mixture
    :math:`p(x, t)` of Lemma 9 (eq. 23). The recorded :math:`J` is then the weighted one.
    ``progress`` shows a progress bar (long trainings).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    chains = _chains(worlds)
    optimizer = torch.optim.Adam(
        worlds.parameters(), lr=peak_learning_rate, weight_decay=weight_decay
    )
    generator = torch.Generator().manual_seed(seed)
    size = data.train_pixels.shape[0]
    history = []

    if sampling_weights is not None:
        sampling_weights = _check_weights(sampling_weights, size)

    def full_objective() -> float:
        values = evaluate_functionals(
            worlds, data.train_pixels, data.train_labels, weights=sampling_weights
        )
        prior = weight_entropy(worlds, weight_decay)
        return values["R"] + lambda_ * values["D"] + gamma * values["C"] + prior

    if record_every is not None:
        check_positive_integer("record_every", record_every)
        history.append(full_objective())
    for step in tqdm(range(steps), desc="equilibration", disable=not progress, leave=False):
        if schedule == "rise_and_anneal":
            rate = rise_and_anneal(step + 1, steps + 1, peak_learning_rate)
        elif schedule == "step_decay":  # / 10 at 50 and 100 of 120 epochs, as in §5.1
            rate = peak_learning_rate * 0.1 ** (
                (step >= 5 * steps // 12) + (step >= 10 * steps // 12)
            )
        else:
            rate = peak_learning_rate
        for group in optimizer.param_groups:
            group["lr"] = rate
        if sampling_weights is None:
            indices = torch.randint(size, (min(batch_size, size),), generator=generator)
        else:
            indices = torch.multinomial(
                sampling_weights, batch_size, replacement=True, generator=generator
            )
        noise = torch.randn(indices.shape[0], worlds.latent_dim, generator=generator)
        loss = _objective(chains, data, indices, noise.to(data.train_pixels.dtype), lambda_, gamma)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if record_every is None:
            history.append(float(loss.detach()))
        elif (step + 1) % record_every == 0 or step + 1 == steps:
            history.append(full_objective())
    return history


def weight_entropy(worlds: DigitsWorlds, weight_decay: float) -> float:
    r""":math:`S = \tfrac{\epsilon}{2}\|\theta\|^2`, the weight term that ``weight_decay``
    :math:`\epsilon` adds to :math:`J`.

    Read as TherML's :math:`S` (paper 003, eq. 5) at a point estimate under the prior
    :math:`\theta \sim N(0, \epsilon^{-1} I)`: :math:`-\log p(\theta)` up to a constant. Paper 002
    drops it (Remark 2, :math:`\sigma = 0`, a flat prior); on 1,347 digits the flat-prior
    :math:`J` keeps falling by memorization for as long as one trains, so no finite
    equilibration reaches its surface, while with :math:`\epsilon > 0` it does. The surface's
    calculus is unchanged (:math:`S` does not depend on :math:`\lambda, \gamma`:
    :math:`F_\lambda = D`, :math:`F_\gamma = C`, :math:`F` concave); the first law gains
    :math:`dS`: :math:`dR + dS = -\lambda\,dD - \gamma\,dC`.
    """
    return 0.5 * weight_decay * sum(float(p.detach().square().sum()) for p in worlds.parameters())


def _check_weights(weights: Tensor, size: int) -> Tensor:
    weights = torch.as_tensor(weights, dtype=torch.float64)
    check_probability_vector("weights", weights, size)
    return weights


@torch.no_grad()
def evaluate_functionals(
    worlds: DigitsWorlds,
    pixels: Tensor,
    labels: Tensor,
    draws: int = 4,
    seed: int = 12345,
    weights: Tensor | None = None,
) -> dict[str, float]:
    r""":math:`R, D, C` per example on ``(pixels, labels)``, averaged over ``draws`` fixed noise
    draws per example, and the accuracy of the classifier at the encoder's mean.

    With ``weights`` (``[N]``, summing to one) the averages are weighted, :math:`\sum_i w_i f_i`:
    the expectations under a data mixture. Examples of equal weight are evaluated together, so a
    mixture of a few uniform subsets costs one call per subset.
    """
    if weights is not None:
        weights = _check_weights(weights, pixels.shape[0])
        totals = dict.fromkeys(("R", "D", "C", "accuracy"), 0.0)
        for level in torch.unique(weights[weights > 0]):
            members = torch.nonzero(weights == level).flatten()
            part = evaluate_functionals(worlds, pixels[members], labels[members], draws, seed)
            for key in totals:
                totals[key] += float(level) * members.numel() * part[key]
        return totals
    chains = _chains(worlds)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(draws, pixels.shape[0], worlds.latent_dim, generator=generator)
    head = _head(worlds).expand(draws, -1)
    indices = torch.arange(pixels.shape[0])
    values = chains(head, pixels, labels, indices, noise.to(pixels.dtype))
    loc, _ = worlds.encoder(pixels)
    accuracy = (worlds.classifier_logits(loc).argmax(-1) == labels).double().mean()
    return {
        "R": float(values.rate.mean()),
        "D": float(values.distortion.mean()),
        "C": float(values.classification.mean()),
        "accuracy": float(accuracy),
    }


def classification_derivatives(
    state: SurfaceState, data: DigitsData, config: SurfaceConfig
) -> dict[str, float]:
    r"""Central differences of the re-equilibrated :math:`C` (and :math:`D, R`) in :math:`\lambda`
    and :math:`\gamma` (Remark 7): each side starts from ``state.worlds`` and equilibrates for
    ``config.equilibration_steps`` with the same noise (seeded by the step)."""
    results: dict[str, float] = {}
    worlds = state.worlds
    start = copy.deepcopy(worlds.state_dict())
    for name in ("lambda_", "gamma"):
        h = config.difference * getattr(state, name)
        sides = []
        for sign in (1, -1):
            multipliers = {"lambda_": state.lambda_, "gamma": state.gamma}
            multipliers[name] += sign * h
            equilibrate(
                worlds,
                data,
                multipliers["lambda_"],
                multipliers["gamma"],
                config.equilibration_steps,
                config.peak_learning_rate,
                seed=config.seed + 1000 * (state.step + 1),
                batch_size=config.batch_size,
                weight_decay=config.weight_decay,
            )
            sides.append(
                evaluate_functionals(
                    worlds, data.train_pixels, data.train_labels, config.evaluation_draws
                )
            )
            worlds.load_state_dict(start)  # each side starts from the same parameters
        for functional in ("R", "D", "C"):
            key = f"d{functional}/d{'lambda' if name == 'lambda_' else 'gamma'}"
            results[key] = (sides[0][functional] - sides[1][functional]) / (2 * h)
    return results


def iso_classification_step(
    state: SurfaceState, data: DigitsData, config: SurfaceConfig
) -> dict[str, float]:
    r"""One step of Remark 7's process: finite differences, new multipliers (eq. 31), equilibration.
    Returns the row logged for the step.

    With ``config.beta`` the conserved quantity is Remark 8's :math:`G = C + R/\beta` instead of
    :math:`C`: the same rates (eq. 22) with :math:`G`'s derivatives, an example of a process a
    user declares by naming what it keeps."""
    derivatives = classification_derivatives(state, data, config)
    inverse_beta = 0.0 if config.beta is None else 1.0 / config.beta
    lambda_dot, gamma_dot = conserving_rates(
        derivatives["dC/dlambda"] + inverse_beta * derivatives["dR/dlambda"],
        derivatives["dC/dgamma"] + inverse_beta * derivatives["dR/dgamma"],
        config.alpha,
    )
    state.lambda_ = max(state.lambda_ + lambda_dot, 1e-6)
    state.gamma = max(state.gamma + gamma_dot, 1e-6)
    state.step += 1
    free_energy = equilibrate(
        state.worlds,
        data,
        state.lambda_,
        state.gamma,
        config.equilibration_steps,
        config.peak_learning_rate,
        seed=config.seed + 1000 * state.step + 1,
        batch_size=config.batch_size,
        weight_decay=config.weight_decay,
        record_every=max(1, config.equilibration_steps // 12),
    )
    return {
        "step": state.step,
        "lambda": state.lambda_,
        "gamma": state.gamma,
        **_surface_values(state.worlds, data, config),
        **derivatives,
        "free_energy_trace": free_energy,
    }


def _surface_values(worlds: DigitsWorlds, data: DigitsData, config: SurfaceConfig):
    """The functionals on the training set and the test set's C and accuracy."""
    train = evaluate_functionals(
        worlds, data.train_pixels, data.train_labels, config.evaluation_draws
    )
    test = evaluate_functionals(worlds, data.test_pixels, data.test_labels, config.evaluation_draws)
    return {
        **train,
        "S": weight_entropy(worlds, config.weight_decay),
        "test_C": test["C"],
        "test_accuracy": test["accuracy"],
    }


def _checkpoint(out: Path, state: SurfaceState, rows: list, equilibrations: list) -> None:
    payload = {
        "worlds": state.worlds.state_dict(),
        "lambda_": state.lambda_,
        "gamma": state.gamma,
        "step": state.step,
        "rows": rows,
        "equilibrations": equilibrations,
    }
    write_atomically(out / "checkpoint.pt", lambda path: torch.save(payload, path), suffix=".pt")


def run_iso_classification(
    config: SurfaceConfig, out: Path, *, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    r"""Reach the surface at :math:`(\lambda_0, \gamma_0)` (``initial_steps`` of step-decayed Adam,
    then one equilibration, so the start is read after the same schedule as every step), then run
    ``config.steps`` steps of the iso-classification process; write ``path.csv`` (``step, lambda,
    gamma, R, D, C`` and more), ``equilibration.csv`` (:math:`J` during each equilibration,
    Fig. 4a), ``iso_path.png`` and ``metrics.json``. A checkpoint after every step makes the run resumable.
    """
    config.validate()
    out = Path(out)
    data = digits_data()
    checkpoint = out / "checkpoint.pt"
    worlds = DigitsWorlds(latent_dim=config.latent_dim, hidden=config.hidden, seed=config.seed)
    state = SurfaceState(worlds, config.lambda_, config.gamma)
    rows: list[dict[str, float]] = []
    equilibrations: list[dict[str, float]] = []
    write_json(out / "config.json", {**config.to_dict(), "environment": environment()})
    if resume:
        if not checkpoint.exists():
            raise FileNotFoundError(f"no checkpoint to resume in {out}")
        saved = torch.load(checkpoint, weights_only=False)
        worlds.load_state_dict(saved["worlds"])
        state.lambda_, state.gamma, state.step = saved["lambda_"], saved["gamma"], saved["step"]
        rows, equilibrations = saved["rows"], saved["equilibrations"]
    else:
        equilibrate(
            worlds,
            data,
            config.lambda_,
            config.gamma,
            config.initial_steps,
            config.learning_rate,
            seed=config.seed,
            batch_size=config.batch_size,
            schedule="step_decay",
            weight_decay=config.weight_decay,
            progress=progress,
        )
        # one equilibration at the start, so that every row is read after the same schedule
        equilibrate(
            worlds,
            data,
            config.lambda_,
            config.gamma,
            config.equilibration_steps,
            config.peak_learning_rate,
            seed=config.seed + 999,
            batch_size=config.batch_size,
            weight_decay=config.weight_decay,
        )
        start = _surface_values(worlds, data, config)
        rows.append({"step": 0, "lambda": state.lambda_, "gamma": state.gamma, **start})
        _checkpoint(out, state, rows, equilibrations)
    bar = tqdm(
        total=config.steps, initial=state.step, desc="iso-classification", disable=not progress
    )
    try:
        while state.step < config.steps:
            row = iso_classification_step(state, data, config)
            equilibrations.extend(
                {"step": state.step, "t": t, "J": value}
                for t, value in enumerate(row.pop("free_energy_trace"))
            )
            rows.append(row)
            _checkpoint(out, state, rows, equilibrations)
            bar.update(1)
            bar.set_postfix(
                C=f"{row['C']:.4f}", lam=f"{state.lambda_:.3f}", gam=f"{state.gamma:.3f}"
            )
    finally:
        bar.close()
    write_csv(out / "path.csv", rows, list(dict.fromkeys(k for row in rows for k in row)))
    write_csv(out / "equilibration.csv", equilibrations, ["step", "t", "J"])
    metrics = {
        **path_metrics(rows, equilibrations, beta=config.beta),
        "test": evaluate_functionals(
            worlds, data.test_pixels, data.test_labels, config.evaluation_draws
        ),
    }
    write_json(out / "metrics.json", metrics)
    from thermossl.equilibrium_figures import iso_figure

    write_figure(out / "iso_path.png", iso_figure(rows, equilibrations))
    return metrics


def path_metrics(
    rows: list[dict[str, float]],
    equilibrations: list[dict[str, float]],
    beta: float | None = None,
) -> dict[str, Any]:
    r"""What a process's path says about the surface (paper 002, §3 and §5.1).

    * the largest relative change of :math:`C` from its start (iso-classification), and of
      :math:`G = C + R/\beta` when ``beta`` names Remark 8's process;
    * eq. 29, :math:`\dot R = -\lambda \dot D` when :math:`\dot C = 0` (:math:`\dot R + \dot S`
      with a weight prior, :func:`weight_entropy`), summed along the path:
      :math:`\sum \Delta R` against :math:`\sum -\bar\lambda\,\Delta D` (midpoint
      :math:`\bar\lambda`) and :math:`\sum -\bar\gamma\,\Delta C`; off the surface the gap is
      the free energy lost to continued training. Exactly, with :math:`E_k` the change of
      :math:`J` across step :math:`k`'s equilibration (at the new multipliers),

      .. math::

          \Delta R + \Delta S - \sum(-\bar\lambda\Delta D - \bar\gamma\Delta C)
          = \sum_k E_k - \tfrac12 \sum_k (\Delta D\,\Delta\lambda + \Delta C\,\Delta\gamma),

      and on the surface :math:`E_k = \tfrac12(\Delta D\Delta\lambda + \Delta C\Delta\gamma)
      + O(\Delta^3)` (:math:`E_k \approx -\tfrac12\Delta\theta^\top A\,\Delta\theta`): the
      gap is the descent beyond the quasi-static one (``descent_in_equilibrations`` against
      ``quasi_static_descent``);
    * the finite-difference Hessian of :math:`F` at each step, :math:`[[D_\lambda, D_\gamma],
      [C_\lambda, C_\gamma]]` (Lemma 3: :math:`F` is concave, so its symmetric part is negative
      semidefinite), its largest eigenvalue and the Maxwell asymmetry :math:`|D_\gamma -
      C_\lambda|`;
    * the free energy during equilibration (Fig. 4a): the largest relative change of :math:`J`
      within one equilibration (the rise while the learning rate peaks included), and across it
      (its end against its start, right after the change of the multipliers).
    """
    first, last = rows[0], rows[-1]
    pairs = list(itertools.pairwise(rows))
    hessians = [
        torch.tensor(
            [[r["dD/dlambda"], r["dD/dgamma"]], [r["dC/dlambda"], r["dC/dgamma"]]],
            dtype=torch.float64,
        )
        for r in rows
        if "dD/dlambda" in r
    ]
    largest_eigenvalues = [float(torch.linalg.eigvalsh((h + h.T) / 2).max()) for h in hessians]
    traces: dict[int, list[float]] = {}
    for entry in equilibrations:
        traces.setdefault(int(entry["step"]), []).append(float(entry["J"]))
    flatness = [(max(t) - min(t)) / abs(t[0]) for t in traces.values() if t]
    settling = [abs(t[-1] - t[0]) / abs(t[0]) for t in traces.values() if t]
    return {
        "start": first,
        "end": last,
        "largest_relative_change_of_C": max(abs(r["C"] - first["C"]) / first["C"] for r in rows),
        "largest_relative_change_of_G": (
            None
            if beta is None
            else max(
                abs(r["C"] + r["R"] / beta - first["C"] - first["R"] / beta)
                / (first["C"] + first["R"] / beta)
                for r in rows
            )
        ),
        "relative_change_of_R": (last["R"] - first["R"]) / first["R"],
        "relative_change_of_D": (last["D"] - first["D"]) / first["D"],
        "change_of_R": last["R"] - first["R"],
        "change_of_S": last.get("S", 0.0) - first.get("S", 0.0),
        "sum_of_minus_lambda_dD": sum(
            -(a["lambda"] + b["lambda"]) / 2 * (b["D"] - a["D"]) for a, b in pairs
        ),
        "sum_of_minus_gamma_dC": sum(
            -(a["gamma"] + b["gamma"]) / 2 * (b["C"] - a["C"]) for a, b in pairs
        ),
        "descent_in_equilibrations": sum(
            trace[-1] - trace[0] for step, trace in traces.items() if step > 0 and trace
        ),
        "quasi_static_descent": sum(
            0.5
            * (
                (b["D"] - a["D"]) * (b["lambda"] - a["lambda"])
                + (b["C"] - a["C"]) * (b["gamma"] - a["gamma"])
            )
            for a, b in pairs
        ),
        "free_energy_hessian_largest_eigenvalues": largest_eigenvalues,
        "share_of_steps_with_concave_F": (
            sum(e <= 0 for e in largest_eigenvalues) / len(largest_eigenvalues)
            if largest_eigenvalues
            else None
        ),
        "maxwell_asymmetry": [
            abs(r["dD/dgamma"] - r["dC/dlambda"]) for r in rows if "dD/dgamma" in r
        ],
        "largest_relative_change_of_J_within_an_equilibration": max(flatness, default=None),
        "median_relative_change_of_J_within_an_equilibration": (
            sorted(flatness)[len(flatness) // 2] if flatness else None
        ),
        "largest_relative_change_of_J_across_an_equilibration": max(settling, default=None),
    }
