r"""Figures of iso-classification runs on the equilibrium surface (paper 002, Figs. 2 and 4b).

:func:`iso_sweep_figure` overlays several runs of ``thermossl iso`` (one per initial
:math:`(\lambda, \gamma)`), as the paper's Fig. 2 does for MNIST: the rate-distortion paths, the
multipliers, the classification loss relative to its start on the training and test sets, and
the free energy :math:`F = R + \lambda D + \gamma C + S` along each process (Fig. 4b;
:math:`S` is the weight prior's term, zero without one).
"""

from __future__ import annotations

import csv
from pathlib import Path

__all__ = ["iso_figure", "iso_sweep_figure", "read_path"]


def read_path(run: Path) -> list[dict[str, float]]:
    """The rows of ``run/path.csv`` as floats (empty cells dropped).

    :raises FileNotFoundError: when the run has no ``path.csv`` (unfinished or not a run folder).
    """
    path = Path(run) / "path.csv"
    if not path.exists():
        raise FileNotFoundError(f"{run} has no path.csv: not a finished `thermossl iso` run")
    with path.open() as handle:
        return [
            {key: float(value) for key, value in row.items() if value != ""}
            for row in csv.DictReader(handle)
        ]


def iso_figure(rows: list[dict[str, float]], equilibrations: list[dict[str, float]]):
    """One run: the (R, D) path, the multipliers, C / C₀ per step (train, test) and the free
    energy J on the whole training set during the first, middle and last equilibrations
    (Fig. 4a)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    axes[0].plot([r["R"] for r in rows], [r["D"] for r in rows], marker="o", markersize=3)
    axes[0].set(xlabel="rate R (nats)", ylabel="distortion D (nats)", title="rate-distortion path")
    axes[1].plot([r["lambda"] for r in rows], [r["gamma"] for r in rows], marker="o", markersize=3)
    axes[1].set(xlabel="λ", ylabel="γ", title="multipliers")
    steps = [r["step"] for r in rows]
    axes[2].plot(steps, [r["C"] / rows[0]["C"] for r in rows], marker="o", markersize=3,
                 label="train")  # fmt: skip
    if "test_C" in rows[0]:
        axes[2].plot(steps, [r["test_C"] / rows[0]["test_C"] for r in rows], linestyle="--",
                     label="test")  # fmt: skip
    axes[2].axhspan(0.97, 1.03, color="grey", alpha=0.2, label="±3 %")
    axes[2].set(xlabel="process step", ylabel="C / C at the start", title="iso-classification")
    axes[2].legend(fontsize=8)
    recorded = sorted({int(e["step"]) for e in equilibrations})
    for step in dict.fromkeys([recorded[0], recorded[len(recorded) // 2], recorded[-1]]
                              if recorded else []):  # fmt: skip
        trace = [e["J"] for e in equilibrations if int(e["step"]) == step]
        axes[3].plot([value / trace[0] for value in trace], marker="o", markersize=2,
                     label=f"after step {step}")  # fmt: skip
    axes[3].set(xlabel="record (every 1/12 of the equilibration)", ylabel="J / J at its start",
                title="free energy during equilibration (Fig. 4a)")  # fmt: skip
    if recorded:
        axes[3].legend(fontsize=8)
    figure.tight_layout()
    return figure


def iso_sweep_figure(runs: list[Path]):
    """Four panels over the runs: (R, D) paths, (λ, γ) paths, C / C₀ per step on the training set
    (solid, with the ±3 % band) and the test set (dashed), and F along each process.

    Example::

        >>> iso_sweep_figure([])
        Traceback (most recent call last):
        ...
        ValueError: iso_sweep_figure needs at least one run folder
    """
    if not runs:
        raise ValueError("iso_sweep_figure needs at least one run folder")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    for run in runs:
        rows = read_path(run)
        first = rows[0]
        label = f"λ₀={first['lambda']:g}, γ₀={first['gamma']:g}"
        steps = [r["step"] for r in rows]
        (line,) = axes[0].plot(
            [r["R"] for r in rows], [r["D"] for r in rows], marker="o", markersize=2, label=label
        )
        colour = line.get_color()
        axes[1].plot(
            [r["lambda"] for r in rows], [r["gamma"] for r in rows], marker="o", markersize=2,
            color=colour,
        )  # fmt: skip
        axes[2].plot(steps, [r["C"] / first["C"] for r in rows], color=colour)
        if "test_C" in first:
            axes[2].plot(
                steps, [r["test_C"] / first["test_C"] for r in rows], color=colour, linestyle="--"
            )
        axes[3].plot(
            steps,
            [r["R"] + r["lambda"] * r["D"] + r["gamma"] * r["C"] + r.get("S", 0.0) for r in rows],
            color=colour,
        )
    axes[0].set(xlabel="rate R (nats)", ylabel="distortion D (nats)", title="rate-distortion")
    axes[0].legend(fontsize=8)
    axes[1].set(xlabel="λ", ylabel="γ", title="multipliers")
    axes[2].axhspan(0.97, 1.03, color="grey", alpha=0.2)
    axes[2].set(
        xlabel="process step",
        ylabel="C / C at the start",
        title="classification loss (train solid, test dashed)",
    )
    axes[3].set(xlabel="process step", ylabel="F = R + λD + γC + S", title="free energy (Fig. 4b)")
    figure.tight_layout()
    return figure
