"""The work behind ``thermossl train``: train, evaluate, write metrics and figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from thermossl.evaluation import evaluate, evaluate_downstream, plot_clusters_and_density
from thermossl.objectives.failure_modes import FailureModeReport
from thermossl.runs import write_json
from thermossl.training import TrainingConfig, train

__all__ = ["run_training"]


def run_training(
    config: TrainingConfig, out: Path, *, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train ``config`` in ``out``, then write ``metrics.json`` and the figure; return the metrics
    with a printable ``report``."""
    run, data = train(config, out, resume=resume, progress=progress)
    metrics = evaluate(run.method, data, config.augmentation_noise, seed=config.seed)
    metrics.update(evaluate_downstream(run.method, data, out, buffer=run.buffer, seed=config.seed))
    final = run.history[-1] if run.history else {}
    metrics.update(
        {
            "method": config.method,
            "data": config.data,
            "seed": config.seed,
            "iterations": run.iteration,
            "seconds": run.seconds,
            "final_terms": final,
        }
    )
    write_json(Path(out) / "metrics.json", metrics)
    figure = None
    if data.input_shape == (2,):
        figure = plot_clusters_and_density(run.method, data, Path(out) / "clusters_density.png")
    lines = [
        f"{config.method} on {config.data} (seed {config.seed}), {run.iteration} iterations "
        f"in {run.seconds:.0f} s",
        "final bound terms per pair: "
        + ", ".join(f"{k} {v:.4g}" for k, v in final.items() if k != "iteration"),
        f"test NMI: {metrics['nmi']:.3f}   linear probe accuracy: {metrics['linear_probe']:.3f}",
    ]
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
