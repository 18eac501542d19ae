"""The work behind ``thermossl train``: train, evaluate, write metrics and figures."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from thermossl.evaluation import evaluate, evaluate_downstream, plot_clusters_and_density
from thermossl.objectives.failure_modes import FailureModeReport
from thermossl.runs import environment, write_json
from thermossl.training import TrainingConfig, final_loss, train

__all__ = ["run_training"]


def run_training(
    config: TrainingConfig, out: Path, *, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train ``config`` in ``out``, then write ``metrics.json`` and the figure; return the metrics
    with a printable ``report``.

    With ``config.restarts > 1`` each initialization trains in ``out/restart-R`` (each resumable)
    and the one with the lowest :func:`~thermossl.training.final_loss` (the highest derived bound
    on the training data) is evaluated; ``metrics["restarts"]`` lists every restart's final loss
    and test NMI, so the selection can be checked against labels it never saw.
    """
    config.validate()
    restarts = None
    if config.restarts > 1:
        candidates = []  # (final loss, run, its test metrics) per restart
        for index in range(config.restarts):
            folder = Path(out) / f"restart-{index}"
            again = resume and (folder / "checkpoint.pt").exists()
            single = replace(config, restarts=1, restart=index)
            candidate, data = train(single, folder, resume=again, progress=progress)
            scores = evaluate(candidate.method, data, config.augmentation_noise, seed=config.seed)
            candidates.append((final_loss(candidate.history), candidate, scores))
        restarts = [
            {"restart": index, "final_loss": loss, "nmi": scores["nmi"]}
            for index, (loss, _, scores) in enumerate(candidates)
        ]
        selected = min(range(len(candidates)), key=lambda index: candidates[index][0])
        _, run, metrics = candidates[selected]
        metrics.update(restarts=restarts, selected_restart=selected)
        seconds = sum(candidate.seconds for _, candidate, _ in candidates)
        write_json(Path(out) / "config.json", {**config.to_dict(), "environment": environment()})
    else:
        run, data = train(config, out, resume=resume, progress=progress)
        metrics = evaluate(run.method, data, config.augmentation_noise, seed=config.seed)
        seconds = run.seconds
    metrics.update(evaluate_downstream(run.method, data, out, buffer=run.buffer, seed=config.seed))
    final = run.history[-1] if run.history else {}
    metrics.update(
        {
            "method": config.method,
            "data": config.data,
            "seed": config.seed,
            "iterations": run.iteration,
            "seconds": seconds,
            "final_terms": final,
        }
    )
    write_json(Path(out) / "metrics.json", metrics)
    figure = None
    if data.input_shape == (2,):
        figure = plot_clusters_and_density(run.method, data, Path(out) / "clusters_density.png")
    lines = [
        f"{config.method} on {config.data} (seed {config.seed}), {run.iteration} iterations "
        f"in {seconds:.0f} s",
        "final bound terms per pair: "
        + ", ".join(f"{k} {v:.4g}" for k, v in final.items() if k != "iteration"),
        f"test NMI: {metrics['nmi']:.3f}   linear probe accuracy: {metrics['linear_probe']:.3f}",
    ]
    if restarts is not None:
        lines.append(
            "restarts (final loss, test NMI): "
            + ", ".join(
                f"{'*' if r['restart'] == selected else ''}{r['restart']}: "
                f"{r['final_loss']:.4g}, {r['nmi']:.3f}"
                for r in restarts
            )
            + "   (* selected by the bound)"
        )
    if "ood_auroc" in metrics:
        lines.append(
            "OOD AUROC (-||grad log p||): "
            + ", ".join(f"{kind} {value:.3f}" for kind, value in metrics["ood_auroc"].items())
        )
    if "failure_modes" in metrics:
        lines.append(FailureModeReport(**metrics["failure_modes"]).summary())
    lines.append(f"run folder: {out}" + (f" (figure {figure.name})" if figure else ""))
    metrics["report"] = "\n".join(lines)
    return metrics
