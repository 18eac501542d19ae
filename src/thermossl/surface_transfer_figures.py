r"""The numbers and the figure of a geodesic iso-classification transfer (paper 002, §5.2, Fig. 5).

:func:`transfer_metrics` reduces the rows that :func:`~thermossl.surface_transfer_run.run_transfer`
logs (``path.csv``: one row per value of :math:`t`; ``finetune.csv``: one per fine-tuning chunk)
to what the experiment exists for: how well :math:`C` was kept along :math:`t`, where
:math:`R, D` went, and the final target accuracy of transfer, fine-tuning and training from
scratch. :func:`transfer_figure` draws Fig. 5's two panels and two more.
"""

from __future__ import annotations

from typing import Any

__all__ = ["relative_changes_of_C", "transfer_figure", "transfer_metrics"]

_ENDPOINT_KEYS = (
    "t",
    "lambda",
    "gamma",
    "R",
    "D",
    "C",
    "S",
    "J",
    "test_C",
    "accuracy",
    "target_accuracy",
    "source_accuracy",
)


def relative_changes_of_C(rows: list[dict[str, Any]]) -> list[float]:
    r""":math:`(C(t) - C(0))/C(0)` for every row, :math:`C` read on the training mixture at
    :math:`t`; an iso-classification process keeps these at zero (paper 002, eq. 26).

    Example::

        >>> [round(change, 6) for change in relative_changes_of_C([{"C": 0.2}, {"C": 0.21}, {"C": 0.15}])]
        [0.0, 0.05, -0.25]
    """
    first = rows[0]["C"]
    if not first > 0:
        raise ValueError(f"the starting C must be > 0 to measure relative changes, got {first!r}")
    return [(row["C"] - first) / first for row in rows]


def transfer_metrics(
    rows: list[dict[str, Any]],
    finetune_rows: list[dict[str, Any]],
    scratch: dict[str, float],
    settings: dict[str, Any],
) -> dict[str, Any]:
    r"""The run's ``metrics.json``: the largest and the final relative change of :math:`C` along
    :math:`t` (and of the test mixture's :math:`C`), the start and end of the path (:math:`t,
    \lambda, \gamma, R, D, C, S, J`, accuracies), the relative changes of :math:`R` and :math:`D`,
    the slope :math:`k`, how many steps were clipped or damped, the corrections per step with
    :math:`C` before them and the distance from the line after them, and the final target and source
    accuracy and target :math:`C` of transfer, fine-tuning and scratch."""
    first, last = rows[0], rows[-1]
    changes = relative_changes_of_C(rows)
    largest = max(range(len(changes)), key=lambda index: abs(changes[index]))
    test_changes = [(row["test_C"] - first["test_C"]) / first["test_C"] for row in rows]
    finetune = finetune_rows[-1]
    return {
        "largest_relative_change_of_C": abs(changes[largest]),
        "step_of_largest_change_of_C": rows[largest]["step"],
        "final_relative_change_of_C": changes[-1],
        "relative_changes_of_C": changes,
        "largest_relative_change_of_test_C": max(abs(change) for change in test_changes),
        "relative_change_of_R": (last["R"] - first["R"]) / first["R"],
        "relative_change_of_D": (last["D"] - first["D"]) / first["D"],
        "start": {key: first[key] for key in _ENDPOINT_KEYS if key in first},
        "end": {key: last[key] for key in _ENDPOINT_KEYS if key in last},
        "slope": last.get("slope"),
        "clipped_steps": sum(
            row.get("lambda_clipped", 0) + row.get("gamma_clipped", 0) > 0 for row in rows
        ),
        "damped_steps": sum(row.get("rate_scale", 1.0) < 1.0 for row in rows),
        "corrections": [row.get("corrections", 0) for row in rows[1:]],
        "relative_changes_of_C_predicted": [
            (row["C_predicted"] - first["C"]) / first["C"]
            for row in rows[1:]
            if "C_predicted" in row
        ],
        "line_residuals": [row["line_residual"] for row in rows[1:] if "line_residual" in row],
        "transfer_gradient_steps": finetune["gradient_steps"],
        "final_target_accuracy": {
            "transfer": last["target_accuracy"],
            "finetune": finetune["target_accuracy"],
            "scratch": scratch["target_accuracy"],
        },
        "final_source_accuracy": {
            "transfer": last["source_accuracy"],
            "finetune": finetune["source_accuracy"],
            "scratch": scratch["source_accuracy"],
        },
        "final_target_C": {
            "transfer": last["C"],
            "finetune": finetune["C"],
            "scratch": scratch["C"],
        },
        "config": settings,
    }


def transfer_figure(
    rows: list[dict[str, Any]], finetune_rows: list[dict[str, Any]], scratch: dict[str, float]
):
    """Fig. 5's panels and two more: the (R, D) path; target accuracy along :math:`t` (transfer,
    fine-tuning at the same share of gradient steps, scratch); :math:`C` along :math:`t` (log
    scale) with a ±3 % band; the multipliers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    times = [row["t"] for row in rows]
    axes[0].plot([r["R"] for r in rows], [r["D"] for r in rows], marker="o", markersize=3)
    axes[0].annotate("t = 0", (rows[0]["R"], rows[0]["D"]), fontsize=8)
    axes[0].annotate("t = 1", (rows[-1]["R"], rows[-1]["D"]), fontsize=8)
    slope = rows[-1].get("slope")
    if slope is not None and len(rows) > 1:  # the straight path of slope k through the start
        rates = [r["R"] for r in rows] + [scratch["R"]]
        ends = [min(rates), max(rates)]
        line = [rows[0]["D"] + slope * (rate - rows[0]["R"]) for rate in ends]
        axes[0].plot(
            ends, line, color="grey", linestyle="--", linewidth=1, label=f"k = {slope:.3g}"
        )
        axes[0].scatter([scratch["R"]], [scratch["D"]], color="C2", zorder=3, label="scratch")
        axes[0].legend(fontsize=7)
        distortions = [r["D"] for r in rows] + [scratch["D"]]
        margin = 0.1 * (max(distortions) - min(distortions)) + 1e-9
        axes[0].set_ylim(min(distortions) - margin, max(distortions) + margin)
    axes[0].set(xlabel="rate R", ylabel="distortion D", title="rate-distortion path (Fig. 5a)")
    transfer_style = {"color": "C1", "marker": "o", "markersize": 3}
    axes[1].plot(times, [r["target_accuracy"] for r in rows], **transfer_style,
                 label="transfer, target test")  # fmt: skip
    axes[1].plot(times, [r["accuracy"] for r in rows], color="C1", linestyle=":",
                 label="transfer, mixture test at t")  # fmt: skip
    axes[1].plot([r["t"] for r in finetune_rows], [r["target_accuracy"] for r in finetune_rows],
                 color="C0", marker="s", markersize=3, label="fine-tune, target test")  # fmt: skip
    axes[1].scatter([1.0], [scratch["target_accuracy"]], color="C2", zorder=3, label="scratch")
    axes[1].set(xlabel="t (fine-tune: share of the same gradient steps)", ylabel="accuracy",
                title="validation accuracy (Fig. 5b)")  # fmt: skip
    axes[1].legend(fontsize=7)
    axes[2].plot(times, [r["C"] for r in rows], **transfer_style, label="training mixture")
    axes[2].plot(times, [r["test_C"] for r in rows], color="C1", linestyle=":",
                 label="test mixture")  # fmt: skip
    c0 = rows[0]["C"]
    axes[2].axhspan(0.97 * c0, 1.03 * c0, color="grey", alpha=0.3, label="C(0) ± 3 %")
    axes[2].set(xlabel="t", ylabel="C on the mixture at t", yscale="log",
                title="classification loss")  # fmt: skip
    axes[2].legend(fontsize=8)
    axes[3].plot(times, [r["lambda"] for r in rows], marker="o", markersize=3, label="λ")
    axes[3].plot(times, [r["gamma"] for r in rows], marker="s", markersize=3, label="γ")
    axes[3].set(xlabel="t", ylabel="multiplier", yscale="log", title="multipliers")
    axes[3].legend(fontsize=8)
    figure.tight_layout()
    return figure
