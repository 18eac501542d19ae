r"""Table 2 of the LDM paper on scikit-learn's digits: twelve pair goals, linear-probe accuracy.

Each configuration is a :class:`~thermossl.models.ldm_pairs.PairLDM`: a latent space (plane or
sphere), an entropy estimator (KDE, kNN, LogDet) and the goal with or without the mutual-information
term. They are trained on two augmentations of every training digit
(:func:`~thermossl.models.ldm_data.augmented_digit_pairs`, fresh augmentations every pass), and scored
by a linear probe (:func:`~thermossl.downstream.linear_probe_accuracy`) on the encoder's
representation of the clean images, trained on the training split and tested on the held-out one.

The encoder follows the SimCLR layout, scaled to 8×8 digits: a trunk (64 → 256 → 64, ReLU) whose
output is the representation, and a projector (64 → 64 → 16, ReLU) whose output is the latent the
goal is computed on.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from thermossl._validation import check_positive, check_positive_integer
from thermossl.downstream import linear_probe_accuracy
from thermossl.models.ldm_data import augmented_digit_pairs
from thermossl.models.ldm_pairs import PairLDM
from thermossl.runs import environment, read_json, setting_differences, write_json

__all__ = [
    "PAIR_CONFIGURATIONS",
    "PairStudyConfig",
    "baseline_accuracies",
    "markdown_pair_table",
    "pair_configuration",
    "run_pair_study",
    "train_pair_model",
]

#: The twelve configurations of Table 2: (space, entropy estimator, with MI).
PAIR_CONFIGURATIONS: tuple[tuple[str, str, bool], ...] = tuple(
    itertools.product(("plane", "sphere"), ("kde", "knn", "logdet"), (False, True))
)


def pair_configuration(name: str) -> tuple[str, str, bool]:
    """``"plane-knn-mi"`` → ``("plane", "knn", True)``; ``"sphere-kde"`` → ``("sphere", "kde", False)``."""
    parts = name.split("-")
    configuration = (parts[0], parts[1] if len(parts) > 1 else "", parts[2:] == ["mi"])
    if configuration not in PAIR_CONFIGURATIONS or len(parts) > 3:
        known = ", ".join(_name(*c) for c in PAIR_CONFIGURATIONS)
        raise ValueError(f"unknown pair configuration {name!r}; known: {known}")
    return configuration


def _name(space: str, entropy: str, mutual_information: bool) -> str:
    return f"{space}-{entropy}" + ("-mi" if mutual_information else "")


@dataclass(frozen=True)
class PairStudyConfig:
    """Settings shared by every configuration of the pair study.

    :ivar int steps: Adam steps per run.
    :ivar int batch_size: pairs per step (the entropy is estimated on the batch).
    :ivar float learning_rate: Adam's step size.
    :ivar float concentration: :math:`\\beta` of the conditional (the paper's 5).
    :ivar int latent_dim: the projector's output size.
    :ivar dict bandwidths: KDE bandwidth per space. On the sphere :math:`h = \\beta^{-1/2}`, the
        kernel concentration equal to the conditional's (SimCLR's single temperature).
    :ivar int knn_k: the kNN estimator's :math:`k` (the paper's 3).
    :ivar float knn_clip_quantile: distances above this quantile are clipped (the paper: 0.9).
    """

    steps: int = 2000
    batch_size: int = 256
    learning_rate: float = 1e-3
    concentration: float = 5.0
    latent_dim: int = 16
    bandwidths: dict = field(default_factory=lambda: {"plane": 1.0, "sphere": 5.0**-0.5})
    knn_k: int = 3
    knn_clip_quantile: float = 0.9

    def __post_init__(self):
        check_positive_integer("steps", self.steps)
        check_positive_integer("batch_size", self.batch_size)
        check_positive("learning_rate", self.learning_rate)
        check_positive("concentration", self.concentration)
        check_positive_integer("latent_dim", self.latent_dim)
        check_positive_integer("knn_k", self.knn_k)

    def entropy_options(self, space: str, entropy: str) -> dict:
        if entropy == "kde":
            return {"bandwidth": self.bandwidths[space]}
        if entropy == "knn":
            return {"k": self.knn_k, "clip_quantile": self.knn_clip_quantile}
        return {"ridge": 1e-4}


class _Encoder(nn.Module):
    """Trunk (the representation) and projector (the latent)."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 64))
        self.projector = nn.Sequential(
            nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, latent_dim)
        )

    def forward(self, x):
        return self.projector(self.trunk(x))


def train_pair_model(
    space: str,
    entropy: str,
    mutual_information: bool,
    config: PairStudyConfig = PairStudyConfig(),
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Train one configuration and probe it; returns accuracy, the final goal and timings."""
    with torch.random.fork_rng():  # the initialization is seeded; the caller's stream is kept
        torch.manual_seed(seed)
        encoder = _Encoder(config.latent_dim)
        program = PairLDM(
            encoder,
            space=space,
            entropy=entropy,
            mutual_information=mutual_information,
            concentration=config.concentration,
            entropy_options=config.entropy_options(space, entropy),
        )
        optimizer = torch.optim.Adam(program.parameters(), lr=config.learning_rate)
        rng = np.random.default_rng(seed)
        pairs, order, cursor = None, np.empty(0, dtype=np.int64), 0
        history = []
        name = _name(space, entropy, mutual_information)
        start = time.perf_counter()
        for step in tqdm(range(config.steps), disable=not progress, desc=name):
            if cursor + config.batch_size > order.size:
                pairs = augmented_digit_pairs(seed=1000 * seed + step, split="train")
                order, cursor = rng.permutation(pairs.labels.shape[0]), 0
            index = torch.from_numpy(order[cursor : cursor + config.batch_size])
            cursor += config.batch_size
            bound = program.bound(pairs.x1[index], pairs.x2[index])
            loss = -bound.total / index.numel()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{name} diverged at step {step} (loss {float(loss)})")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history.append(-float(loss.detach()))
        seconds = time.perf_counter() - start
        train, test = augmented_digit_pairs(split="train"), augmented_digit_pairs(split="test")
        accuracy, latent_accuracy = _probe(encoder, train, test)
    return {
        "accuracy": accuracy,
        "latent_accuracy": latent_accuracy,
        "final_goal": float(np.mean(history[-50:])),
        "seconds": seconds,
    }


def baseline_accuracies(config: PairStudyConfig = PairStudyConfig(), seeds: int = 3) -> dict:
    """The probe on the raw pixels and on the untrained encoder's representation (per seed): the
    floor a learned representation has to beat."""
    train, test = augmented_digit_pairs(split="train"), augmented_digit_pairs(split="test")
    untrained, untrained_latent = [], []
    for seed in range(seeds):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            encoder = _Encoder(config.latent_dim)
        accuracy, latent_accuracy = _probe(encoder, train, test)
        untrained.append(accuracy)
        untrained_latent.append(latent_accuracy)
    pixels = linear_probe_accuracy(train.clean, train.labels, test.clean, test.labels)
    return {"pixels": pixels, "untrained": untrained, "untrained_latent": untrained_latent}


def _probe(encoder: _Encoder, train, test) -> tuple[float, float]:
    """Linear-probe accuracy on the representation (trunk) and on the latent (projector)."""
    with torch.no_grad():
        representations = [encoder.trunk(split.clean) for split in (train, test)]
        latents = [encoder.projector(h) for h in representations]
    return tuple(
        linear_probe_accuracy(features[0], train.labels, features[1], test.labels)
        for features in (representations, latents)
    )


def run_pair_study(
    names: list[str] | None,
    seeds: int,
    out: Path,
    config: PairStudyConfig = PairStudyConfig(),
    progress: bool = True,
) -> dict:
    """Train every configuration for ``seeds`` seeds; each finished run is kept in
    ``OUT/NAME/seed-S.json``, so an interrupted study resumes. Returns and writes
    ``OUT/metrics.json`` as ``{"configurations": {NAME: {"accuracy": [...], "mean": m, "sd": s}},
    "baselines": {"pixels": a, "untrained": [...]}}``."""
    check_positive_integer("seeds", seeds)
    names = [_name(*c) for c in PAIR_CONFIGURATIONS] if names is None else names
    configurations = {name: pair_configuration(name) for name in names}
    out = Path(out)
    settings = {"config": asdict(config), "seeds": seeds}
    config_path = out / "config.json"
    if config_path.exists():
        previous = read_json(config_path).get("settings", {})
        if previous.get("config") != settings["config"]:
            differences = setting_differences(previous.get("config", {}), settings["config"])
            raise ValueError(
                f"{out} holds a study with other settings ({differences}); use another --out"
            )
    write_json(config_path, {"settings": settings, "environment": environment()})
    metrics = {}
    for name, (space, entropy, mutual_information) in configurations.items():
        runs = []
        for seed in range(seeds):
            path = out / name / f"seed-{seed}.json"
            if path.exists():
                runs.append(read_json(path))
                continue
            result = train_pair_model(space, entropy, mutual_information, config, seed, progress)
            write_json(path, result)
            runs.append(result)
        accuracies = [run["accuracy"] for run in runs]
        latent_accuracies = [run["latent_accuracy"] for run in runs]
        metrics[name] = {
            "accuracy": accuracies,
            "mean": float(np.mean(accuracies)),
            "sd": _sd(accuracies),
            "latent_accuracy": latent_accuracies,
            "latent_mean": float(np.mean(latent_accuracies)),
            "latent_sd": _sd(latent_accuracies),
            "seconds": float(np.mean([run["seconds"] for run in runs])),
        }
    baselines = baseline_accuracies(config, seeds)
    write_json(out / "metrics.json", {"configurations": metrics, "baselines": baselines})
    (out / "table.md").write_text(markdown_pair_table(metrics, baselines) + "\n")
    return {"configurations": metrics, "baselines": baselines}


def _sd(values) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def _mean_sd(values) -> str:
    values = 100 * np.asarray(values, dtype=float)
    return f"{values.mean():.1f}" + (f" ± {values.std(ddof=1):.1f}" if values.size > 1 else "")


def markdown_pair_table(metrics: dict, baselines: dict | None = None) -> str:
    """Table 2's layout: space, entropy estimator, MI, linear-probe accuracy (mean ± sd), then
    the baselines' rows when given."""
    lines = [
        "| space | entropy | MI | probe on representation (%) | probe on latent (%) | seeds |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in metrics.items():
        space, entropy, mutual_information = pair_configuration(name)
        lines.append(
            f"| {space} | {entropy} | {'yes' if mutual_information else 'no'} | "
            f"{_mean_sd(row['accuracy'])} | {_mean_sd(row['latent_accuracy'])} | "
            f"{len(row['accuracy'])} |"
        )
    if baselines is not None:
        lines.append(
            f"| untrained encoder | — | — | {_mean_sd(baselines['untrained'])} | "
            f"{_mean_sd(baselines['untrained_latent'])} | {len(baselines['untrained'])} |"
        )
        lines.append(f"| raw pixels | — | — | {100 * baselines['pixels']:.1f} | — | — |")
    return "\n".join(lines)
