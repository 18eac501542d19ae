r"""The transfer run: source surface, target from scratch, the process, fine-tuning (paper 002,
§5.2, Fig. 5).

:func:`run_transfer` drives :func:`~thermossl.surface_transfer.transfer_step` from :math:`t = 0`
to 1 with its two baselines, checkpointing after every phase and step so that an interrupted run
resumes bit for bit, and writes the files the experiment is read from: ``path.csv``,
``finetune.csv``, ``metrics.json`` and ``transfer.png``
(:mod:`thermossl.surface_transfer_figures`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from thermossl._validation import check_positive_integer
from thermossl.models.digit_tasks import Mixture
from thermossl.models.therml_digits import DigitsWorlds, digits_data
from thermossl.runs import (
    environment,
    setting_differences,
    write_atomically,
    write_csv,
    write_figure,
    write_json,
)
from thermossl.surface_transfer import (
    FUNCTIONALS,
    TransferConfig,
    TransferState,
    equilibrate_on_mixture,
    row_values,
    transfer_step,
    transfer_worlds,
)
from thermossl.surface_transfer_figures import transfer_figure, transfer_metrics
from thermossl.surface_transfer_rates import chord_slope

__all__ = ["run_transfer"]


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def run_transfer(
    config: TransferConfig,
    out: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict[str, Any] | None:
    r"""Run the geodesic iso-classification transfer and its two baselines into ``out``.

    Phases, each checkpointed:

    1. the source surface: ``initial_steps`` Adam steps at :math:`(\lambda_0, \gamma_0)` on the
       source (step 0 of ``path.csv``; its :math:`R_0, D_0, C_0` anchor the path);
    2. the target from scratch, trained like the source (the *scratch* baseline; with
       ``slope="chord"`` its :math:`(R, D)` fixes :math:`k`,
       :func:`~thermossl.surface_transfer_rates.chord_slope`);
    3. ``config.steps`` transfer steps (:func:`~thermossl.surface_transfer.transfer_step`);
    4. fine-tuning: the source model trained on the target alone at :math:`(\lambda_0,
       \gamma_0)` for as many gradient steps as the transfer took in all (branches and
       corrections included), in one chunk per transfer step, each chunk with the same
       rise-and-anneal schedule as an equilibration, the target accuracy logged after each.

    Writes ``path.csv`` and ``corrections.csv`` (each correction's multipliers and functionals)
    after every step, then ``finetune.csv``, ``metrics.json`` and
    ``transfer.png``; returns the metrics
    (:func:`~thermossl.surface_transfer_figures.transfer_metrics`).

    :param bool resume: continue the run in ``out`` from its checkpoint (same settings required).
    :param bool progress: show progress bars (the overall one and those of the long trainings).
    :param int stop_after: stop after this many transfer steps in all, leaving a resumable
        checkpoint (returns ``None``): a time-boxed run.
    :raises FileExistsError: ``out`` holds a run and ``resume`` is false.
    """
    config.validate()
    if stop_after is not None:
        check_positive_integer("stop_after", stop_after)
    out = Path(out)
    checkpoint = out / "checkpoint.pt"
    settings = config.to_dict()
    mixture = Mixture(digits_data(), config.source, config.target, config.shared_outputs)
    lambda0, gamma0 = config.lambda_, config.gamma

    def fresh_worlds() -> DigitsWorlds:
        return transfer_worlds(config, mixture.num_outputs)

    def baseline_values(worlds: DigitsWorlds) -> dict[str, float]:
        values = row_values(worlds, mixture, 1.0, config, lambda0, gamma0)
        values.pop("accuracy")  # the same as target_accuracy at t = 1
        return values

    worlds = fresh_worlds()
    state = TransferState(worlds, lambda0, gamma0)
    saved: dict[str, Any] = {"rows": [], "corrections": [], "finetune_rows": [], "scratch": None}
    if resume:
        if not checkpoint.exists():
            raise FileNotFoundError(f"no checkpoint to resume in {out}")
        saved = torch.load(checkpoint, weights_only=False)
        if saved["config"] != settings:
            raise ValueError(
                f"{out} holds a run with other settings "
                f"({setting_differences(saved['config'], settings)}); resume with the same "
                "settings or choose another --out"
            )
        worlds.load_state_dict(saved["worlds"])
        state.lambda_, state.gamma, state.step = saved["lambda_"], saved["gamma"], saved["step"]
        state.slope, state.start = saved["slope"], saved["start"]
    elif checkpoint.exists():
        raise FileExistsError(
            f"{out} already holds a run; pass resume=True (--resume) or another out"
        )
    write_json(out / "config.json", {**settings, "environment": environment()})
    rows: list[dict[str, Any]] = saved["rows"]
    corrections: list[dict[str, Any]] = saved["corrections"]
    finetune_rows: list[dict[str, Any]] = saved["finetune_rows"]

    def save(finetune_worlds: DigitsWorlds | None = None) -> None:
        saved.update(
            config=settings,
            worlds=worlds.state_dict(),
            lambda_=state.lambda_,
            gamma=state.gamma,
            step=state.step,
            slope=state.slope,
            start=state.start,
            rows=rows,
            corrections=corrections,
            finetune_rows=finetune_rows,
        )
        if finetune_worlds is not None:
            saved["finetune_worlds"] = finetune_worlds.state_dict()
        write_atomically(checkpoint, lambda path: torch.save(saved, path), suffix=".pt")

    def train_from_start(model: DigitsWorlds, t: float) -> None:
        """The §5.1 training: ``initial_steps`` Adam steps, step decay from ``learning_rate``."""
        equilibrate_on_mixture(model, mixture, config, lambda0, gamma0, t, config.seed,
                     steps=config.initial_steps, peak_learning_rate=config.learning_rate,
                     schedule="step_decay", progress=progress)  # fmt: skip

    total = 2 + 2 * config.steps
    done = bool(rows) + state.step + max(len(finetune_rows) - 1, 0) + (saved["scratch"] is not None)
    bar = tqdm(total=total, initial=done, desc="transfer", disable=not progress)
    try:
        if not rows:  # the source surface at (lambda_0, gamma_0)
            bar.set_description("source surface")
            train_from_start(worlds, 0.0)
            rows.append(
                {"step": 0, "t": 0.0, "lambda": lambda0, "gamma": gamma0}
                | row_values(worlds, mixture, 0.0, config, lambda0, gamma0)
            )
            state.start = {key: rows[0][key] for key in FUNCTIONALS}
            saved["source_worlds"] = copy.deepcopy(worlds.state_dict())
            save()
            bar.update(1)

        if saved["scratch"] is None:  # the target from scratch: a baseline and the chord's end
            bar.set_description("scratch")
            scratch_worlds = fresh_worlds()
            train_from_start(scratch_worlds, 1.0)
            saved["scratch"] = baseline_values(scratch_worlds)
            if config.slope == "chord":
                state.slope = chord_slope(state.start, saved["scratch"])
            save()
            bar.update(1)

        bar.set_description("transfer")
        while state.step < config.steps:
            if stop_after is not None and state.step >= stop_after:
                return None
            row = transfer_step(state, mixture, config)
            for number, record in enumerate(row.pop("correction_path"), start=1):
                corrections.append(
                    {"step": row["step"], "t": row["t"], "correction": number} | record
                )
            rows.append(row)
            save()
            write_csv(out / "path.csv", rows, _columns(rows))
            if corrections:
                write_csv(out / "corrections.csv", corrections, _columns(corrections))
            bar.update(1)
            bar.set_postfix(t=f"{row['t']:.2f}", C=f"{row['C']:.4f}", lam=f"{row['lambda']:.3f}",
                            gam=f"{row['gamma']:.3f}", acc=f"{row['target_accuracy']:.3f}")  # fmt: skip
        write_csv(out / "path.csv", rows, _columns(rows))

        # fine-tuning: the source model on the target alone, as many gradient steps as the transfer
        bar.set_description("fine-tune")
        finetune_worlds = fresh_worlds()
        finetune_worlds.load_state_dict(saved.get("finetune_worlds", saved["source_worlds"]))
        if not finetune_rows:
            finetune_rows.append(
                {"chunk": 0, "gradient_steps": 0, "t": 0.0} | baseline_values(finetune_worlds)
            )
        while len(finetune_rows) <= config.steps:
            chunk = len(finetune_rows)
            steps = rows[chunk]["gradient_steps"]
            equilibrate_on_mixture(finetune_worlds, mixture, config, lambda0, gamma0, 1.0,
                         config.seed + 1000 * chunk + 500, steps=steps)  # fmt: skip
            finetune_rows.append(
                {
                    "chunk": chunk,
                    "gradient_steps": finetune_rows[-1]["gradient_steps"] + steps,
                    "t": rows[chunk]["t"],
                }
                | baseline_values(finetune_worlds)
            )
            save(finetune_worlds)
            bar.update(1)
            bar.set_postfix(acc=f"{finetune_rows[-1]['target_accuracy']:.3f}")
    finally:
        bar.close()

    write_csv(out / "finetune.csv", finetune_rows, _columns(finetune_rows))
    metrics = transfer_metrics(rows, finetune_rows, saved["scratch"], settings)
    write_json(out / "metrics.json", metrics)
    write_figure(out / "transfer.png", transfer_figure(rows, finetune_rows, saved["scratch"]))
    return metrics
