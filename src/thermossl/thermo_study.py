r"""``thermossl thermo`` and ``thermossl demon``: train with the cycle recorder and report.

:func:`run_thermo` trains a method on a fixed system of :math:`N` training points (the paper's
single minibatch, §II), re-augmenting the second view every cycle, and writes

* ``cycles.csv``: one row per cycle (:class:`~thermossl.thermo_cycles.CycleRecorder`'s columns);
* ``thermo_cycles.png``: :math:`U`, the heats, the works and :math:`W_{irr}` over training;
* ``metrics.json``: the measured class and temperature range (:func:`~thermossl.thermo_cycles.classify`),
  the totals, the share of cycles with :math:`W_{irr} \le 0`, the test NMI;
* ``checkpoint.pt`` (every ``checkpoint_every`` cycles and on Ctrl-C), from which ``resume``
  continues the same record.

:func:`run_demon_study` measures the demon (eq. 15–17): for each learning rate :math:`\gamma`, plain
SGD from the same initialization, the share of cycles with :math:`W_{irr} \le 0`; eq. 17 predicts
it tends to one as :math:`\gamma \to 0` when the step is the gradient of the demon's potential.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from thermossl._validation import (
    check_positive,
    check_positive_integer,
    check_probability_vector,
)
from thermossl.inference.gibbs_ensembles import LinearConstraint
from thermossl.methods import MethodSettings
from thermossl.models.datasets import DATASETS, load_dataset
from thermossl.runs import environment, write_csv, write_figure, write_json
from thermossl.thermo_cycles import (
    CycleRecorder,
    classify,
    cycle_rule,
    demon_alignment,
    heat_systems,
    preserved_buffers,
    system_energies,
)
from thermossl.training import (
    TrainingConfig,
    augment,
    load_checkpoint,
    optimization_step,
    save_checkpoint,
    start,
)

__all__ = [
    "THERMO_METHODS",
    "ThermoConfig",
    "confidence_constraints",
    "demon_figure",
    "run_demon_study",
    "run_thermo",
    "system_indices",
    "thermo_figure",
]

#: Methods whose training is a heating–swap–work cycle.
THERMO_METHODS = ("swav", "sela", "deepcluster", "gedi", "byol")
OPTIMIZERS = ("adam", "sgd")


@dataclass
class ThermoConfig:
    """Settings of a recorded run.

    ``system_size`` training points form the system (all of them when larger than the set);
    ``fresh_batches`` draws a new minibatch of that size each cycle instead, and the heating then
    starts from the network's Gibbs ensemble. ``optimizer``: ``"adam"`` or ``"sgd"`` (the demon of
    eq. 16 is SGD). GEDI on the two-dimensional sets uses the quadrature normalizer.
    ``label_prior``: a declared label marginal of the heating (and GEDI's prior), paper 000 §V.
    ``class_proportions``: draw the system with these shares of the true classes (an imbalanced
    system; the labels choose the points and are never shown to the method).
    ``labelled_per_class``: that many system points of each class are pinned to their class's
    label with mass ``label_confidence`` times their row (a GGE of §V with one constraint per
    labelled point, SwAV and SeLa only).
    """

    method: str
    data: str
    seed: int = 0
    cycles: int = 2000
    system_size: int = 256
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    augmentation_noise: float = 0.03
    fresh_batches: bool = False
    checkpoint_every: int = 500
    label_prior: tuple[float, ...] | None = None
    class_proportions: tuple[float, ...] | None = None
    labelled_per_class: int = 0
    label_confidence: float = 0.9
    settings: MethodSettings | None = None

    def validate(self) -> None:
        if self.method not in THERMO_METHODS:
            raise ValueError(
                f"unknown method {self.method!r}; choose one of {', '.join(THERMO_METHODS)}"
            )
        if self.data not in DATASETS:
            raise ValueError(f"unknown dataset {self.data!r}; choose one of {', '.join(DATASETS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        for name in ("cycles", "system_size", "checkpoint_every"):
            check_positive_integer(name, getattr(self, name))
        check_positive("learning_rate", self.learning_rate)
        check_positive("augmentation_noise", self.augmentation_noise)
        for name in ("label_prior", "class_proportions"):
            value = getattr(self, name)
            if value is not None:
                check_probability_vector(name, torch.as_tensor(value, dtype=torch.float64))
        if not (isinstance(self.labelled_per_class, int) and self.labelled_per_class >= 0):
            raise ValueError(
                f"labelled_per_class must be an integer >= 0, got {self.labelled_per_class!r}"
            )
        if not 0 < self.label_confidence < 1:
            raise ValueError(f"label_confidence must lie in (0, 1), got {self.label_confidence!r}")
        if self.labelled_per_class and (self.fresh_batches or self.method not in ("swav", "sela")):
            raise ValueError("labelled_per_class needs swav or sela on a fixed system")
        if self.class_proportions is not None and self.fresh_batches:
            raise ValueError("class_proportions chooses a fixed system; drop fresh_batches")

    def method_settings(self) -> MethodSettings:
        if self.settings is not None:
            return self.settings
        overrides: dict[str, Any] = {"label_prior": self.label_prior}
        if self.data != "digits":
            overrides["normalizer"] = "quadrature"
        return MethodSettings.for_data(self.data, **overrides)

    def training_config(self, system_size: int) -> TrainingConfig:
        return TrainingConfig(
            method=self.method,
            data=self.data,
            seed=self.seed,
            iterations=self.cycles,
            batch_size=system_size,
            learning_rate=self.learning_rate,
            augmentation_noise=self.augmentation_noise,
            checkpoint_every=self.checkpoint_every,
            settings=self.method_settings(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "settings": dataclasses.asdict(self.method_settings())}


@dataclass
class _Recording:
    run: Any
    data: Any
    training: TrainingConfig
    recorder: CycleRecorder
    system: torch.Tensor
    system_labels: torch.Tensor
    rows: list[dict[str, float]] = field(default_factory=list)


def system_indices(labels: torch.Tensor, size: int, proportions=None) -> torch.Tensor:
    """The training points forming the system: the first ``size`` ones, or with
    ``proportions`` the first ``round(p_c * size)`` of each class ``c``."""
    if proportions is None:
        return torch.arange(min(size, labels.shape[0]))
    num_classes = int(labels.max()) + 1
    if len(proportions) != num_classes:
        raise ValueError(
            f"class_proportions needs one share per class ({num_classes}), got {len(proportions)}"
        )
    chosen = []
    for label, share in enumerate(proportions):
        members = torch.nonzero(labels == label).flatten()
        count = round(share * size)
        if count > members.numel():
            raise ValueError(
                f"class {label} has {members.numel()} training points; {count} were asked for"
            )
        chosen.append(members[:count])
    return torch.cat(chosen).sort().values


def confidence_constraints(
    labels: torch.Tensor, num_classes: int, per_class: int, confidence: float
) -> tuple[LinearConstraint, ...]:
    r"""Pin the first ``per_class`` points of each class to their label:
    :math:`q_{i, y_i} = \kappa / N` for each such point :math:`i` (a per-sample confidence
    constraint of a new GGE class, paper 000 §V).

    Example::

        >>> constraints = confidence_constraints(torch.tensor([0, 1, 1, 0]), 2, 1, 0.9)
        >>> [(c.features.nonzero()[0].tolist(), c.target) for c in constraints]
        [([0, 0], 0.225), ([1, 1], 0.225)]
    """
    num_points = labels.shape[0]
    constraints = []
    for label in range(num_classes):
        members = torch.nonzero(labels == label).flatten()[:per_class]
        if members.numel() < per_class:
            raise ValueError(f"class {label} has fewer than {per_class} points in the system")
        for point in members.tolist():
            features = torch.zeros(num_points, num_classes, dtype=torch.float64)
            features[point, label] = 1.0
            constraints.append(LinearConstraint(features, confidence / num_points))
    return tuple(constraints)


def _prepare(config: ThermoConfig) -> _Recording:
    config.validate()
    data = load_dataset(config.data, config.seed)
    index = system_indices(data.train_labels, config.system_size, config.class_proportions)
    system_size = index.numel()
    training = config.training_config(system_size)
    training.validate()
    run = start(training, data)
    if config.optimizer == "sgd":
        run.optimizer = torch.optim.SGD(run.method.parameters(), lr=config.learning_rate)
    method = run.method
    if config.labelled_per_class:
        method.program.code_constraints = confidence_constraints(
            data.train_labels[index],
            data.num_classes,
            config.labelled_per_class,
            config.label_confidence,
        )
    recorder = CycleRecorder(functools.partial(system_energies, method), cycle_rule(method), method)
    system, labels = data.train_inputs[index], data.train_labels[index]
    return _Recording(run, data, training, recorder, system, labels)


def _cycle(recording: _Recording, config: ThermoConfig) -> dict[str, float]:
    run, training = recording.run, recording.training
    inputs = recording.data.train_inputs
    if config.fresh_batches:
        index = torch.randint(inputs.shape[0], (training.batch_size,), generator=run.generator)
        x1 = inputs[index]
    else:
        x1 = recording.system
    x2 = augment(x1, training, run.generator)
    row = recording.recorder.cycle(
        x1,
        x2,
        lambda: optimization_step(run, training, x1, x2),
        same_points=not config.fresh_batches,
    )
    run.iteration += 1
    return row


def _record(
    recording: _Recording,
    config: ThermoConfig,
    *,
    progress: bool,
    checkpoint: Path | None = None,
    description: str = "",
) -> list[dict[str, float]]:
    run = recording.run
    bar = tqdm(total=config.cycles, initial=run.iteration, desc=description, disable=not progress)
    started = time.perf_counter() - run.seconds

    def persist() -> None:
        if checkpoint is None:
            return
        run.seconds = time.perf_counter() - started
        run.extra = {"recorder": recording.recorder.state(), "rows": recording.rows}
        save_checkpoint(run, checkpoint)

    try:
        while run.iteration < config.cycles:
            row = _cycle(recording, config)
            recording.rows.append(row)
            bar.update(1)
            if run.iteration % 50 == 0:
                bar.set_postfix(loss=f"{row['loss']:.4g}", W_irr=f"{row['irreversible_work']:.2e}")
            if run.iteration % config.checkpoint_every == 0:
                persist()
    except KeyboardInterrupt:
        persist()
        raise
    finally:
        bar.close()
    persist()
    return recording.rows


def _summary(rows: list[dict[str, float]], demon_beta: float) -> dict[str, Any]:
    irreversible = [row["irreversible_work"] for row in rows]
    totals = {
        key: sum(row[key] for row in rows)
        for key in ("augmentation_work", "heating_heat", "swap_heat", "work", "irreversible_work")
    }
    return {
        "cycles": len(rows),
        "totals": totals,
        "share_irreversible_work_nonpositive": (
            None if demon_beta == 0 else sum(w <= 0 for w in irreversible) / len(rows)
        ),
        "share_work_nonpositive": sum(row["work"] <= 0 for row in rows) / len(rows),
        "largest_first_law_residual": max(row["first_law_residual"] for row in rows),
        "final_loss": statistics.fmean(row["loss"] for row in rows[-max(1, len(rows) // 10) :]),
    }


def run_thermo(
    config: ThermoConfig, out: Path, *, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train ``config.method`` with the recorder; write the run folder; return the metrics.

    :raises KeyboardInterrupt: after saving a checkpoint, when interrupted.
    """
    from sklearn.metrics import normalized_mutual_info_score

    from thermossl.evaluation import cluster_assignments

    out = Path(out)
    recording = _prepare(config)
    checkpoint = out / "checkpoint.pt"
    if resume:
        if not checkpoint.exists():
            raise FileNotFoundError(f"no checkpoint to resume in {out}")
        load_checkpoint(recording.run, checkpoint)
        recording.recorder.load_state(recording.run.extra["recorder"])
        recording.rows = list(recording.run.extra["rows"])
    write_json(out / "config.json", {**config.to_dict(), "environment": environment()})
    description = f"{config.method} on {config.data} (thermodynamic cycles)"
    rows = _record(
        recording, config, progress=progress, checkpoint=checkpoint, description=description
    )
    write_csv(out / "cycles.csv", rows, list(rows[0]))
    rule = recording.recorder.rule
    data = recording.data
    assignments = cluster_assignments(recording.run.method, data, config.seed)
    nmi = normalized_mutual_info_score(data.test_labels.numpy(), assignments)
    system = data._replace(test_inputs=recording.system, test_labels=recording.system_labels)
    system_assignments = cluster_assignments(recording.run.method, system, config.seed)
    system_nmi = normalized_mutual_info_score(system.test_labels.numpy(), system_assignments)
    codes = _final_codes(recording)
    metrics = {
        "method": config.method,
        "data": config.data,
        "rule": {**rule._asdict(), "constraints": len(rule.constraints)},
        **classify(rows),
        **_summary(rows, rule.demon_beta),
        "test_nmi": float(nmi),
        "system_nmi": float(system_nmi),
        "code_nmi": float(normalized_mutual_info_score(system.test_labels.numpy(), codes)),
        "code_shares": [float((codes == k).mean()) for k in range(data.num_classes)],
        "system_cluster_shares": [
            float((torch.as_tensor(system_assignments) == k).float().mean())
            for k in range(data.num_classes)
        ],
        "seconds": recording.run.seconds,
    }
    write_json(out / "metrics.json", _finite(metrics))
    write_figure(
        out / "thermo_cycles.png", thermo_figure(rows, f"{config.method} on {config.data}")
    )
    return metrics


def run_demon_study(
    methods: list[str],
    data: str,
    learning_rates: list[float],
    out: Path,
    *,
    cycles: int = 300,
    seed: int = 0,
    system_size: int = 256,
    progress: bool = True,
) -> list[dict[str, Any]]:
    r"""The share of SGD cycles with :math:`W_{irr} \le 0`, per method and learning rate; writes
    ``demon.csv`` and ``demon.png`` in ``out``. Every rate starts from the seed's initialization;
    a rate whose loss diverges is reported over the cycles before, with ``diverged`` set. The
    ``alignment_*`` columns split the first-order :math:`W_{irr}/\gamma` at the end of each run
    into the derived bound's terms (:func:`~thermossl.thermo_cycles.demon_alignment`)."""
    if not learning_rates:
        raise ValueError("learning_rates must hold at least one rate")
    for rate in learning_rates:
        check_positive("learning rate", rate)
    results = []
    for method in methods:
        for rate in sorted(learning_rates):
            config = ThermoConfig(
                method=method,
                data=data,
                seed=seed,
                cycles=cycles,
                system_size=system_size,
                learning_rate=rate,
                optimizer="sgd",
            )
            recording = _prepare(config)
            diverged = False
            try:
                _record(recording, config, progress=progress, description=f"{method} γ={rate:g}")
            except FloatingPointError:  # the loss became NaN or infinite: keep the cycles before
                diverged = True
            alignments = {} if diverged else _alignments(recording, seed)
            rows = recording.rows
            if not rows:
                continue
            irreversible = [row["irreversible_work"] for row in rows]
            results.append(
                {
                    "method": method,
                    "learning_rate": rate,
                    "cycles": len(rows),
                    "diverged": diverged,
                    "share_nonpositive": sum(w <= 0 for w in irreversible) / len(rows),
                    "median_irreversible_work": statistics.median(irreversible),
                    "total_irreversible_work": sum(irreversible),
                    "final_loss": statistics.fmean(row["loss"] for row in rows[-30:]),
                    **alignments,
                }
            )
    out = Path(out)
    write_csv(out / "demon.csv", results, list(dict.fromkeys(k for row in results for k in row)))
    write_figure(out / "demon.png", demon_figure(results, data))
    return results


def _final_codes(recording: _Recording):
    """The self-labels the trained method's heating gives the clean system: the argmax of each
    point's row of the equilibrium ensemble (system 1, views ``(x, x)``)."""

    method, x = recording.run.method, recording.system
    with preserved_buffers(method), torch.no_grad():
        energies = system_energies(method, x, x).double()
    return heat_systems(recording.recorder.rule, energies)[0].argmax(-1).numpy()


def _alignments(recording: _Recording, seed: int, count: int = 5) -> dict[str, float]:
    r"""Mean :func:`~thermossl.thermo_cycles.demon_alignment` of the method (as trained) over
    ``count`` augmentations of the system: each derived term's share of :math:`W_{irr}/\gamma`
    as :math:`\gamma \to 0`, and the share of draws where the sum is negative (eq. 17 holds)."""
    method, run = recording.run.method, recording.run
    if method.program is None:
        return {}
    generator = torch.Generator().manual_seed(seed + 7)
    draws = []
    for _ in range(count):
        x1 = recording.system
        x2 = augment(x1, recording.training, generator)
        samples = None
        if method.needs_samples:
            _, samples, _ = method.sampler.sample(
                run.buffer, method.energy, x1.shape[0], generator=generator
            )
        draws.append(demon_alignment(method, x1, x2, samples))
    means = {f"alignment_{name}": statistics.fmean(d[name] for d in draws) for name in draws[0]}
    means["alignment_share_negative"] = sum(d["total"] < 0 for d in draws) / count
    return means


def _finite(value: Any) -> Any:
    """JSON has no infinities: write them (and NaN) as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _rolling_mean(values: list[float], share: float = 0.1) -> list[float]:
    """The mean of each value with those of the last ``share`` of the cycles before it (a window
    that widens in proportion to the cycle, even on a log axis)."""
    sums = [0.0]
    for value in values:
        sums.append(sums[-1] + value)
    out = []
    for index in range(len(values)):
        first = int((1 - share) * index)
        out.append((sums[index + 1] - sums[first]) / (index + 1 - first))
    return out


def _linear_threshold(rows: list[dict[str, float]], keys: list[str]) -> float:
    """A symlog threshold near the small end of the values' magnitudes (their 5th percentile)."""
    magnitudes = sorted(abs(row[key]) for row in rows for key in keys if row[key] != 0)
    return magnitudes[len(magnitudes) // 20] if magnitudes else 1.0


def thermo_figure(rows: list[dict[str, float]], title: str):
    """Four panels over the cycles (log scale; values on a symmetric log scale): U, the heats, the
    works, and W_irr, each raw (faint) and as a moving average."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cycles = [row["cycle"] for row in rows]
    figure, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    panels = [
        ("internal energy U after heating", ["internal_energy"]),
        ("heat given off", ["heating_heat", "swap_heat"]),
        ("work done on the system", ["work", "augmentation_work"]),
        ("irreversible work (demon, eq. 25)", ["irreversible_work"]),
    ]
    for axis, (name, keys) in zip(axes, panels, strict=True):
        for key in keys:
            values = [row[key] for row in rows]
            (line,) = axis.plot(cycles, values, alpha=0.25, linewidth=0.7)
            smooth = _rolling_mean(values)
            axis.plot(cycles, smooth, color=line.get_color(), label=key.replace("_", " "))
        axis.axhline(0.0, color="black", linewidth=0.5)
        axis.set_title(name, fontsize=10)
        axis.set_xscale("log")
        if keys != ["internal_energy"]:
            axis.set_yscale("symlog", linthresh=_linear_threshold(rows, keys))
        axis.set_xlabel("cycle")
        axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def demon_figure(results: list[dict[str, Any]], data: str):
    """Share of cycles with W_irr <= 0 against the SGD learning rate, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 4))
    for method in dict.fromkeys(row["method"] for row in results):
        rows = [row for row in results if row["method"] == method]
        axis.plot(
            [row["learning_rate"] for row in rows],
            [row["share_nonpositive"] for row in rows],
            marker="o",
            label=method,
        )
    axis.set_xscale("log")
    axis.axhline(1.0, color="black", linewidth=0.5)
    axis.set_xlabel("SGD learning rate γ")
    axis.set_ylabel("share of cycles with $W_{irr} \\leq 0$")
    axis.set_title(f"the learning demon (eq. 17) on {data}")
    axis.legend()
    figure.tight_layout()
    return figure
