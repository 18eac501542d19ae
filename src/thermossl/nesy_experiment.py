r"""The neuro-symbolic addition experiment on scikit-learn's digits (paper 001, §6.4, Table 6).

Each training example is a triplet of digit images whose (unseen) labels satisfy
:math:`a + b = c \le 9`. Three objectives train the same classifier
:math:`p(y \mid x; \Theta)`:

==============  ==========================================================================
``nesy``        :math:`w_{NESY}\,\mathcal{L}_{NESY}` alone, the exact constraint loss of
                :func:`~thermossl.objectives.nesy.nesy_loss`; predicted to collapse onto the
                all-zeros reading (:math:`0 + 0 = 0`), which satisfies every triplet
``gedi``        GEDI's bound on the triplets' images, no constraint ("purely neural")
``gedi_nesy``   both (the full solution)
==============  ==========================================================================

The classifier is :func:`~thermossl.methods.build_method`'s ``gedi`` on digits
(:meth:`~thermossl.methods.MethodSettings.for_data`), so the three modes differ only in their
loss. Read-outs on the held-out test digits: **accuracy** of the arg max read as the digit
(meaningful only when the constraint has named the clusters; chance is 0.1) and **NMI** (which
ignores the naming).

Settings (paper 001, Table 9 and Appendix O; deviations named): GEDI's weights
:math:`w_{GEN} = 1, w_{INV} = 0, w_{PRIOR} = 400` (Table 9's addition column; Appendix O.1
replaces :math:`\mathcal{L}_{INV}` by :math:`\mathcal{L}_{NESY}`) in both GEDI modes, and
:math:`w_{NESY} = 25` (Table 9's MNIST column) with the constraint. Measured with 100 triplets,
Table 9's MNIST-column weights (invariance 50, prior 25) collapse *GEDI only* onto one class on
seeds 0, 1 and 2 (NMI 0.00) and *GEDI + NeSy* onto all zeros on seed 0, while the addition
column's give *GEDI + NeSy* accuracy 0.39 and NMI 0.43 on seed 0; augmentation
:math:`N(0, 0.2^2)`; batch 60 triplets; 500 epochs for 100 triplets, 100 for 1,000 (the paper's
schedule); Adam with learning rate ``learning_rate`` (the paper's 1e-4 with a ResNet on MNIST;
here a small MLP); L2 regularization 1e-4 as weight decay. The uniformity term is GEDI's
:math:`\mathcal{L}_{PRIOR}` (the paper's NeSy runs maximize the entropy of the batch's mean
prediction instead; both are optimal exactly at the uniform mean). Digits has 1,347 training
images, fewer than 1,000 triplets' 3,000, so triplets draw images with replacement (the paper
draws MNIST images without replacement).
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from thermossl._validation import check_positive, check_positive_integer
from thermossl.evaluation import evaluating
from thermossl.methods import Method, MethodSettings, build_method
from thermossl.models import GEDIWeights
from thermossl.models.datasets import Dataset, load_dataset
from thermossl.objectives.nesy import make_addition_triplets, nesy_loss
from thermossl.runs import write_csv, write_json

__all__ = [
    "NESY_MODES",
    "NesyConfig",
    "evaluate_classifier",
    "markdown_nesy",
    "nesy_step_loss",
    "run_nesy",
    "run_nesy_study",
    "summarize_nesy",
]

#: GEDI's weights per mode (paper 001, Table 9's addition column: generative 1, invariance 0,
#: prior 400; L_INV is replaced by L_NESY, Appendix O.1). Both modes use the same weights, so
#: *GEDI only* is *GEDI + NeSy* without the constraint.
MODE_WEIGHTS = {
    "gedi": GEDIWeights(1.0, 0.0, 400.0),
    "gedi_nesy": GEDIWeights(1.0, 0.0, 400.0),
}

#: The experiment's three objectives (paper 001, Table 6's columns).
NESY_MODES = ("nesy", "gedi", "gedi_nesy")


@dataclass
class NesyConfig:
    """One run of the addition experiment.

    ``epochs`` ``None`` takes the paper's schedule: 500 epochs up to 100 triplets, 100 up to 1,000,
    25 beyond (Table 9's footnote).

    Example::

        >>> config = NesyConfig(mode="gedi_nesy", triplets=1000)
        >>> config.schedule_epochs, config.iterations  # 100 epochs of 17 batches of 60
        (100, 1700)
    """

    mode: str
    triplets: int
    seed: int = 0
    epochs: int | None = None
    batch_size: int = 60
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    augmentation_noise: float = 0.2
    nesy_weight: float = 25.0
    weights: GEDIWeights | None = None

    def validate(self) -> None:
        """Raise a ``ValueError`` naming the first bad setting."""
        if self.mode not in NESY_MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose one of {', '.join(NESY_MODES)}")
        check_positive_integer("triplets", self.triplets)
        check_positive_integer("batch_size", self.batch_size)
        if self.epochs is not None:
            check_positive_integer("epochs", self.epochs)
        for name in ("learning_rate", "augmentation_noise", "nesy_weight"):
            check_positive(name, getattr(self, name))
        if self.weights is not None:
            GEDIWeights(*self.weights).checked()
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")

    @property
    def gedi_weights(self) -> GEDIWeights | None:
        """GEDI's weights: ``weights`` when given, else the mode's :data:`MODE_WEIGHTS`."""
        return self.weights or MODE_WEIGHTS.get(self.mode)

    @property
    def schedule_epochs(self) -> int:
        if self.epochs is not None:
            return self.epochs
        return 500 if self.triplets <= 100 else 100 if self.triplets <= 1000 else 25

    @property
    def iterations(self) -> int:
        """Adam steps: epochs times batches per epoch."""
        return self.schedule_epochs * math.ceil(self.triplets / self.batch_size)


def nesy_step_loss(
    method: Method,
    config: NesyConfig,
    images: torch.Tensor,
    augmented: torch.Tensor,
    samples: torch.Tensor | None,
) -> tuple[torch.Tensor, dict[str, float]]:
    r"""The loss of one batch of ``n`` triplets and its parts.

    .. math::

        \ell = [\text{GEDI}]\; \bigl(-\mathcal{L}_{GEDI}/3n\bigr)
             + [\text{NeSy}]\; w_{NESY}\, \tfrac1n \textstyle\sum_i -\log P(\mathrm{c} \mid
             \mathbf{x}_i),

    the GEDI part per image over the batch's :math:`3n` images (each triplet's three images are
    three examples of the digit distribution), the NeSy part per triplet.

    :param torch.Tensor images: ``[n, 3, d]`` the triplets' images.
    :param torch.Tensor augmented: ``[n, 3, d]`` their augmented views.
    :param samples: model samples for the generative term (``None`` without it).
    """
    n = images.shape[0]
    flat = images.reshape(3 * n, -1)
    loss = images.new_zeros(())
    terms: dict[str, float] = {}
    if config.mode in ("gedi", "gedi_nesy"):
        gedi, gedi_terms = method.loss(flat, augmented.reshape(3 * n, -1), samples)
        loss = loss + gedi
        terms.update(gedi_terms)
    if config.mode in ("nesy", "gedi_nesy"):
        logits = method.logits(flat).reshape(n, 3, -1)
        constraint = nesy_loss(logits[:, 0], logits[:, 1], logits[:, 2])
        loss = loss + config.nesy_weight * constraint
        terms["nesy"] = float(constraint.detach())
    return loss, terms


def evaluate_classifier(method: Method, inputs: torch.Tensor, labels: torch.Tensor) -> dict:
    """Accuracy of the arg max read as the label, NMI, and the share of the most predicted class."""
    from sklearn.metrics import normalized_mutual_info_score

    with evaluating(method):
        predicted = method.logits(inputs).argmax(-1)
    counts = torch.bincount(predicted, minlength=int(labels.max()) + 1)
    return {
        "accuracy": float((predicted == labels).float().mean()),
        "nmi": float(normalized_mutual_info_score(labels.numpy(), predicted.numpy())),
        "largest_class_share": float(counts.max()) / len(predicted),
        "predicted_zero_share": float((predicted == 0).float().mean()),
    }


def run_nesy(
    config: NesyConfig, data: Dataset | None = None, *, progress: bool = True
) -> dict[str, Any]:
    """Train one run of the addition experiment and return its test metrics."""
    config.validate()
    data = data or load_dataset("digits", config.seed)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    triplets = make_addition_triplets(data.train_labels, config.triplets, generator)
    # ReLU and no energy penalty, as in the measured Table 6 reproduction (the README); the
    # study's saved rows are keyed by NesyConfig, which does not hold the networks' settings.
    settings = MethodSettings.for_data(
        "digits", num_clusters=data.num_classes, activation="relu", energy_penalty=0.0
    )
    method = build_method("gedi", data.train_inputs.shape[1], settings)
    uses_gedi = config.mode != "nesy"
    if uses_gedi:
        method.program.weights = GEDIWeights(*config.gedi_weights).checked()
    images = data.train_inputs[triplets]  # [triplets, 3, d]
    buffer = (
        method.sampler.init(data.train_inputs, generator=generator)
        if uses_gedi and config.gedi_weights.generative > 0
        else None
    )
    optimizer = torch.optim.Adam(
        method.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    history: list[dict[str, float]] = []
    for iteration in tqdm(
        range(config.iterations),
        desc=f"{config.mode}, {config.triplets} triplets",
        disable=not progress,
    ):
        index = torch.randint(
            len(images), (min(config.batch_size, len(images)),), generator=generator
        )
        batch = images[index]
        augmented = batch + config.augmentation_noise * torch.randn(
            batch.shape, generator=generator
        )
        samples = None
        if buffer is not None:
            buffer, samples, _ = method.sampler.sample(
                buffer, method.energy, 3 * len(batch), generator=generator
            )
        loss, terms = nesy_step_loss(method, config, batch, augmented, samples)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss became {float(loss)} at iteration {iteration + 1}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (iteration + 1) % 100 == 0:
            history.append({"iteration": iteration + 1, "loss": float(loss.detach()), **terms})
    metrics = evaluate_classifier(method, data.test_inputs, data.test_labels)
    return {**asdict(config), "iterations": config.iterations, **metrics, "history": history}


def summarize_nesy(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (triplets, mode): median, mean and sd (ddof 1) of accuracy and NMI over seeds."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["triplets"], row["mode"]), []).append(row)
    summary = []
    for (triplets, mode), members in sorted(
        groups.items(), key=lambda item: (item[0][0], NESY_MODES.index(item[0][1]))
    ):
        entry: dict[str, Any] = {"triplets": triplets, "mode": mode, "seeds": len(members)}
        for key in ("accuracy", "nmi"):
            values = [member[key] for member in members]
            entry[f"{key}_median"] = statistics.median(values)
            entry[f"{key}_mean"] = statistics.fmean(values)
            entry[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else float("nan")
        summary.append(entry)
    return summary


def markdown_nesy(summary: list[dict[str, Any]]) -> str:
    """Table 6's layout: median ± sd of accuracy and NMI per number of triplets and mode."""
    header = "| triplets | " + " | ".join(f"{m} acc. | {m} NMI" for m in NESY_MODES) + " |"
    lines = [header, "|---" * (1 + 2 * len(NESY_MODES)) + "|"]
    for triplets in sorted({entry["triplets"] for entry in summary}):
        cells = [str(triplets)]
        for mode in NESY_MODES:
            found = [e for e in summary if e["triplets"] == triplets and e["mode"] == mode]
            for key in ("accuracy", "nmi"):
                cells.append(
                    f"{found[0][f'{key}_median']:.2f} ± {found[0][f'{key}_sd']:.2f}"
                    if found
                    else "–"
                )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: The columns of a study's ``runs.csv``: the run's settings, then its metrics.
STUDY_COLUMNS = (
    "mode",
    "triplets",
    "seed",
    "settings",
    "iterations",
    "accuracy",
    "nmi",
    "largest_class_share",
    "predicted_zero_share",
)


def _settings_key(config: NesyConfig) -> str:
    """Every setting of ``config`` but mode, triplets and seed (GEDI's weights as used), as
    canonical JSON."""
    settings = {k: v for k, v in asdict(config).items() if k not in ("mode", "triplets", "seed")}
    settings["weights"] = config.gedi_weights
    return json.dumps(settings, sort_keys=True)


def _read_runs(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    integers, texts = ("triplets", "seed", "iterations"), ("mode", "settings")
    with open(path, newline="") as handle:
        return [
            {
                key: row[key]
                if key in texts
                else int(row[key])
                if key in integers
                else float(row[key])
                for key in STUDY_COLUMNS
            }
            for row in csv.DictReader(handle)
        ]


def run_nesy_study(
    modes: Iterable[str],
    triplet_counts: Iterable[int],
    seeds: Iterable[int],
    out: Path,
    *,
    progress: bool = True,
    **overrides: Any,
) -> list[dict[str, Any]]:
    """Every mode × triplet count × seed (``overrides`` go to :class:`NesyConfig`).

    Each finished run is appended to ``out/runs.csv`` with its settings; a run whose settings are
    already there is not trained again, so an interrupted study resumes. Writes
    ``summary.json`` and ``summary.md`` (:func:`markdown_nesy`) and returns the study's rows.
    """
    modes, triplet_counts, seeds = list(modes), list(triplet_counts), list(seeds)
    if not (modes and triplet_counts and seeds):
        raise ValueError("the study needs at least one mode, one triplet count and one seed")
    configs = [
        NesyConfig(mode=mode, triplets=triplets, seed=seed, **overrides)
        for triplets in triplet_counts
        for mode in modes
        for seed in seeds
    ]
    for config in configs:
        config.validate()
    out = Path(out)
    path = out / "runs.csv"
    rows = _read_runs(path)
    found = {(r["mode"], r["triplets"], r["seed"], r["settings"]): r for r in rows}
    data_by_seed: dict[int, Dataset] = {}
    wanted = []
    for config in configs:
        key = (config.mode, config.triplets, config.seed, _settings_key(config))
        if key not in found:
            data = data_by_seed.setdefault(config.seed, load_dataset("digits", config.seed))
            result = run_nesy(config, data, progress=progress)
            found[key] = {**result, "settings": key[-1]}
            rows.append({column: found[key][column] for column in STUDY_COLUMNS})
            write_csv(path, rows, STUDY_COLUMNS)
        wanted.append(found[key])
    summary = summarize_nesy(wanted)
    write_json(out / "summary.json", summary)
    (out / "summary.md").write_text(markdown_nesy(summary) + "\n")
    return wanted
