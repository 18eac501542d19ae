"""Several methods times several seeds on one data set: the table behind ``thermossl compare``.

Every (method, seed) pair is one run of :func:`thermossl.training_cli.run_training` in its own
folder ``OUT/METHOD-SEED``. A run whose folder holds ``metrics.json`` and the same settings in
``config.json`` is read, not repeated; an unfinished one continues from its checkpoint; a folder
with other settings is retrained. So an interrupted study resumes where it stopped. Runs go to
``jobs`` worker processes with one PyTorch thread each (a run is small and sequential: two runs
on two cores beat one run on two); with ``jobs = 1`` they run in this process, as it is set up.

The summary gives, per method, the mean and the sample standard deviation (``ddof = 1``) over the
seeds of the test NMI and of the linear-probe accuracy, and how many seeds showed each failure
mode.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from thermossl.runs import write_atomically
from thermossl.training import TrainingConfig

__all__ = ["MethodSummary", "run_study", "summarize", "write_tables"]

#: The failure-mode flags counted in the summary, with their column names.
FAILURE_FLAGS = {
    "representation_collapse": "repr. collapse",
    "cluster_collapse": "cluster collapse",
    "label_inconsistency": "label incons.",
}


@dataclass(frozen=True)
class MethodSummary:
    """One method's row of the table."""

    method: str
    seeds: int
    nmi_mean: float
    nmi_sd: float
    probe_mean: float
    probe_sd: float
    failures: dict[str, int]

    def cells(self) -> list[str]:
        flags = [
            f"{self.failures[flag]}/{self.seeds}" if flag in self.failures else "–"
            for flag in FAILURE_FLAGS
        ]
        probe = (
            "–" if math.isnan(self.probe_mean) else f"{self.probe_mean:.3f} ± {self.probe_sd:.3f}"
        )
        return [self.method, f"{self.nmi_mean:.2f} ± {self.nmi_sd:.2f}", probe, *flags]


def _single_threaded_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _run_one(config: TrainingConfig, folder: Path) -> dict[str, Any]:
    from thermossl.training_cli import run_training

    resume = (folder / "checkpoint.pt").exists() and _same_settings(config, folder)
    metrics = run_training(config, folder, resume=resume, progress=False)
    metrics.pop("report", None)
    return metrics


def _same_settings(config: TrainingConfig, folder: Path) -> bool:
    """Whether ``folder`` holds a run (finished or not) of exactly ``config``."""
    saved = folder / "config.json"
    if not saved.exists():
        return False
    settings = json.loads(saved.read_text())
    settings.pop("environment", None)
    try:  # settings saved before a field was added compare with its default
        saved_config = TrainingConfig.from_dict(settings)
    except TypeError:
        return False
    return json.loads(json.dumps(saved_config.to_dict())) == json.loads(
        json.dumps(config.to_dict())
    )


def _finished(config: TrainingConfig, folder: Path) -> bool:
    return (folder / "metrics.json").exists() and _same_settings(config, folder)


def run_study(
    base: TrainingConfig,
    methods: list[str],
    seeds: list[int],
    out: Path,
    *,
    jobs: int = 1,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train every method with every seed (settings otherwise from ``base``); one row per run.

    :raises ValueError: for an unknown method (before anything is trained), no methods or seeds,
        or ``jobs < 1``.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if not methods or not seeds:
        raise ValueError("a study needs at least one method and one seed")
    configs = [replace(base, method=m, seed=s) for m in methods for s in seeds]
    for config in configs:
        config.validate()
    out = Path(out)
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    pending = []
    for config in configs:
        folder = out / f"{config.method}-{config.seed}"
        if _finished(config, folder):
            rows[config.method, config.seed] = json.loads((folder / "metrics.json").read_text())
        else:
            pending.append((config, folder))
    bar = tqdm(
        total=len(configs), initial=len(rows), desc=f"study on {base.data}", disable=not progress
    )
    try:
        if jobs == 1:
            for config, folder in pending:
                rows[config.method, config.seed] = _run_one(config, folder)
                bar.update(1)
        else:
            with ProcessPoolExecutor(
                jobs, mp_context=get_context("spawn"), initializer=_single_threaded_worker
            ) as pool:
                futures = {pool.submit(_run_one, c, f): c for c, f in pending}
                for future in as_completed(futures):
                    config = futures[future]
                    rows[config.method, config.seed] = future.result()
                    bar.update(1)
    finally:
        bar.close()
    return [rows[c.method, c.seed] for c in configs]


def _mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``nan`` for one value)."""
    sd = statistics.stdev(values) if len(values) > 1 else math.nan
    return statistics.fmean(values), sd


def summarize(rows: list[dict[str, Any]]) -> list[MethodSummary]:
    """Mean and sample standard deviation of the NMI per method, in the order of ``rows``."""
    by_method: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row)
    summaries = []
    for method, runs in by_method.items():
        nmis = [run["nmi"] for run in runs]
        failures = {}
        if all("failure_modes" in run for run in runs):
            failures = {
                flag: sum(bool(run["failure_modes"][flag]) for run in runs)
                for flag in FAILURE_FLAGS
            }
        probes = [run["linear_probe"] for run in runs if "linear_probe" in run]
        probe_mean, probe_sd = _mean_sd(probes) if len(probes) == len(runs) else (math.nan,) * 2
        summaries.append(
            MethodSummary(method, len(runs), *_mean_sd(nmis), probe_mean, probe_sd, failures)
        )
    return summaries


def markdown_table(summaries: list[MethodSummary], data: str) -> str:
    """The summary as a Markdown table."""
    header = ["method", f"NMI on {data} (mean ± sd)", "linear probe", *FAILURE_FLAGS.values()]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(summary.cells()) + " |" for summary in summaries]
    return "\n".join(lines) + "\n"


def write_tables(
    rows: list[dict[str, Any]], summaries: list[MethodSummary], out: Path, data: str
) -> tuple[Path, Path, Path]:
    """``runs.csv`` (one line per run), ``summary.csv`` and ``summary.md`` in ``out``."""
    out = Path(out)
    run_columns = ["method", "seed", "nmi", "linear_probe", "seconds", *FAILURE_FLAGS]

    def write_runs(temporary: str) -> None:
        with open(temporary, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(run_columns)
            for row in rows:
                flags = row.get("failure_modes", {})
                writer.writerow(
                    [row["method"], row["seed"], row["nmi"], row.get("linear_probe", "")]
                    + [round(row["seconds"], 1)]
                    + [flags.get(flag, "") for flag in FAILURE_FLAGS]
                )

    def write_summary(temporary: str) -> None:
        with open(temporary, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                ["method", "seeds", "nmi_mean", "nmi_sd", "probe_mean", "probe_sd", *FAILURE_FLAGS]
            )
            for s in summaries:
                writer.writerow(
                    [s.method, s.seeds, s.nmi_mean, s.nmi_sd, s.probe_mean, s.probe_sd]
                    + [s.failures.get(flag, "") for flag in FAILURE_FLAGS]
                )

    runs_csv = write_atomically(out / "runs.csv", write_runs, suffix=".csv")
    summary_csv = write_atomically(out / "summary.csv", write_summary, suffix=".csv")
    markdown = markdown_table(summaries, data)
    summary_md = write_atomically(
        out / "summary.md", lambda t: Path(t).write_text(markdown), suffix=".md"
    )
    return runs_csv, summary_csv, summary_md
