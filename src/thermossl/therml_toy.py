r"""The toy experiment of TherML's Appendix B: every captioned objective, trained and measured.

Each preset is a point :math:`(\rho, \delta, \gamma, \sigma)` of
:math:`J = \rho R + \delta D + \gamma C + \sigma S` named in the captions of Figures 4–8 (paper
003). :func:`train_toy` minimizes the derived :math:`J` (read off the (world Q, world P) programs
of :class:`~thermossl.models.therml.ToyWorlds`) with Adam on the 50 training examples;
:func:`evaluate_toy` measures :math:`R, D, C, S` on the training set and on the exact distribution;
:func:`run_toy_frontier` does both for a list of presets and writes a resumable run folder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from thermossl._validation import check_positive, check_positive_integer
from thermossl.models.therml import HandCraftedToy, ToyData, ToyWorlds, toy_data
from thermossl.objectives.therml import Functionals, Multipliers, functionals, objective
from thermossl.objectives.traced import TracedBound
from thermossl.runs import (
    environment,
    read_json,
    setting_differences,
    write_atomically,
    write_csv,
    write_json,
)
from thermossl.therml_gibbs import GibbsConfig, sample_toy_gibbs

__all__ = [
    "DEFAULT_GIBBS",
    "HAND_CRAFTED",
    "TOY_PRESETS",
    "ToyConfig",
    "ToyPreset",
    "evaluate_toy",
    "markdown_frontier",
    "markdown_gibbs",
    "run_toy_frontier",
    "train_toy",
]


class ToyPreset(NamedTuple):
    """A captioned objective of Appendix B: its title, figure panel and multipliers."""

    title: str
    figure: str
    multipliers: Multipliers


#: The objectives of Figures 4–8, with the captions' multipliers.
TOY_PRESETS: dict[str, ToyPreset] = {
    "deterministic_classifier": ToyPreset(
        "Deterministic supervised classifier", "4a", Multipliers(rho=0, delta=0, gamma=1, sigma=0)
    ),
    "entropy_regularized_classifier": ToyPreset(
        "Entropy-regularized deterministic classifier", "4b", Multipliers(0, 0, 1, 0.1)
    ),
    "entropy_regularized_ib": ToyPreset("Entropy-regularized IB", "4c", Multipliers(0, 0, 1, 0.01)),
    "bayesian_neural_network": ToyPreset(
        "Bayesian neural network classifier", "4d", Multipliers(0, 0, 1, 1)
    ),
    "vib": ToyPreset("VIB", "5a", Multipliers(0.5, 0, 1, 0)),
    "entropy_regularized_vib": ToyPreset(
        "Entropy-regularized VIB", "5b", Multipliers(0.9, 0, 1, 0.1)
    ),
    "autoencoder": ToyPreset("Deterministic autoencoder", "6a", Multipliers(0, 1, 0, 0)),
    "entropy_regularized_autoencoder": ToyPreset(
        "Entropy-regularized deterministic autoencoder", "6b", Multipliers(0, 1, 0, 0.01)
    ),
    "vae": ToyPreset("VAE", "7a", Multipliers(1, 1, 0, 0)),
    "beta_vae": ToyPreset("beta-VAE", "7b", Multipliers(0.5, 1, 0, 0)),
    "entropy_regularized_beta_vae": ToyPreset(
        "Entropy-regularized beta-VAE", "7c", Multipliers(0.9, 1, 0, 0.5)
    ),
    "semi_supervised_vae": ToyPreset("Semi-supervised VAE", "7d", Multipliers(1, 1, 0.5, 0)),
    "full_objective": ToyPreset("Full objective", "8", Multipliers(0.9, 1, 1000, 0.5)),
}

#: The Gibbs-law settings of a frontier run (:class:`~thermossl.therml_gibbs.GibbsConfig`'s defaults).
DEFAULT_GIBBS = GibbsConfig()

#: The optimal hand-crafted model of Figure 3 (evaluated, not trained).
HAND_CRAFTED = "hand_crafted"


@dataclass(frozen=True)
class ToyConfig:
    """Settings of a toy run (the paper's where it gives them).

    :ivar int steps: gradient steps (the paper: 10,000).
    :ivar float learning_rate: Adam's step size.
    :ivar int num_examples: :math:`N` of the finite training set (the paper: 50).
    :ivar int data_seed: which 50 examples.
    :ivar int seed: the initialization and the training noise.
    :ivar bool infinite_data: train on the exact distribution instead of the 50 examples.
    :ivar int evaluation_draws: common parameter draws of the evaluation.
    """

    steps: int = 10_000
    learning_rate: float = 1e-2
    num_examples: int = 50
    data_seed: int = 0
    seed: int = 0
    infinite_data: bool = False
    evaluation_draws: int = 256

    def __post_init__(self):
        for name in ("steps", "num_examples", "evaluation_draws"):
            check_positive_integer(name, getattr(self, name))
        check_positive("learning_rate", self.learning_rate)

    def training_data(self) -> ToyData:
        """The 50 examples, or the exact law when ``infinite_data``."""
        return toy_data() if self.infinite_data else toy_data(self.num_examples, self.data_seed)


def train_toy(
    multipliers: Multipliers, config: ToyConfig = ToyConfig(), progress: bool = True
) -> tuple[ToyWorlds, list[dict[str, float]]]:
    r"""Minimize the derived :math:`J / N` for ``multipliers`` with Adam; return the model and history.

    Each step draws one fresh set of encoder weights :math:`\theta` (reparameterized, from an
    explicit generator) and replays the recorded derivation
    (:class:`~thermossl.objectives.TracedBound`).

    :returns: the trained :class:`~thermossl.models.therml.ToyWorlds` and rows
        ``{"step", "J", "R", "D", "C", "S"}`` every 50 steps (single-draw estimates).
    """
    multipliers = multipliers.checked()
    worlds = ToyWorlds(seed=config.seed)
    derivation = TracedBound(worlds)
    optimizer = torch.optim.Adam(worlds.parameters(), lr=config.learning_rate)
    generator = torch.Generator().manual_seed(config.seed + 1)
    cells = config.training_data().cells()
    num_latents = worlds.encoder_bias.shape[0]
    history = []
    for step in tqdm(range(1, config.steps + 1), disable=not progress, desc="toy", leave=False):
        noise = torch.randn(1, num_latents, generator=generator)
        values = Functionals.from_bound(
            derivation(*cells, config.num_examples, noise), config.num_examples
        )
        loss = objective(values, multipliers)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == config.steps:
            history.append({"step": step, "J": float(loss.detach()), **values.as_floats()})
    return worlds, history


def evaluate_toy(
    worlds: ToyWorlds | HandCraftedToy, config: ToyConfig = ToyConfig()
) -> dict[str, dict[str, float | None]]:
    """:math:`R, D, C, S` per example on the training set and on the exact distribution.

    The encoder is averaged over ``config.evaluation_draws`` common parameter draws, so the two
    sets are measured with the same parameters.
    """
    noise = None
    if isinstance(worlds, ToyWorlds):
        generator = torch.Generator().manual_seed(config.seed + 2)
        noise = torch.randn(
            config.evaluation_draws, worlds.encoder_bias.shape[0], generator=generator
        )
    results = {}
    for label, data in (("train", config.training_data()), ("exact", toy_data())):
        arguments = (*data.cells(), config.num_examples)
        arguments = arguments if noise is None else (*arguments, noise)
        with torch.no_grad():
            values = functionals(
                worlds.model, worlds.guide, *arguments, num_examples=config.num_examples
            )
        results[label] = values.as_floats()
        if isinstance(worlds, HandCraftedToy):
            results[label]["S"] = 0.0  # hand-crafted from the process: nothing learned from data
    return results


def run_toy_frontier(
    presets: list[str],
    out: Path,
    config: ToyConfig = ToyConfig(),
    progress: bool = True,
    gibbs: GibbsConfig | None = DEFAULT_GIBBS,
) -> dict[str, dict]:
    r"""Train and evaluate ``presets`` (names of :data:`TOY_PRESETS` or :data:`HAND_CRAFTED`).

    Writes ``OUT/config.json``, ``OUT/metrics.json`` (``{PRESET: {"train": {R, C, D, S}, "exact":
    {...}}}`` in nats per example) after every preset, ``OUT/frontier.csv`` and ``frontier.md``,
    and per preset ``OUT/PRESET/{history.csv, model.pt, figure.png}``. Presets already in
    ``metrics.json`` are kept, so an interrupted run resumes.

    With ``gibbs`` settings, each preset with :math:`\sigma > 0` is also measured under its
    sampled Gibbs law :math:`p^*` (:func:`~thermossl.therml_gibbs.sample_toy_gibbs`, world Q as
    trained): ``metrics[PRESET]["gibbs"]`` holds :math:`R, D, C, S` on both sets, :math:`J^*`
    and the fitted :math:`J` beside it, and ``OUT/PRESET/posterior.nc`` the chains (ArviZ
    NetCDF). A finished run gains these without retraining.

    :raises ValueError: on an unknown preset name, or a folder trained or sampled with other
        settings.
    """
    from thermossl.therml_figures import toy_figure

    unknown = [name for name in presets if name not in TOY_PRESETS and name != HAND_CRAFTED]
    if unknown:
        choices = ", ".join([HAND_CRAFTED, *TOY_PRESETS])
        raise ValueError(f"unknown preset(s) {unknown}; choose from {choices} or 'all'")
    out = Path(out)
    metrics_path = out / "metrics.json"
    metrics = read_json(metrics_path)
    previous = read_json(out / "config.json")
    settings = asdict(config)
    if metrics and any(previous.get(key) != value for key, value in settings.items()):
        raise ValueError(
            f"{out} holds presets trained with other settings ({setting_differences(previous, settings)}); "
            "choose another --out or remove it"
        )
    sampling = None if gibbs is None else asdict(gibbs)
    sampled = any("gibbs" in splits for splits in metrics.values())
    if sampled and sampling is not None and previous.get("gibbs") != sampling:
        changed = setting_differences(previous.get("gibbs") or {}, sampling)
        raise ValueError(
            f"{out} holds Gibbs laws sampled with other settings ({changed}); "
            "choose another --out or remove it"
        )
    recorded = sampling if sampling is not None else previous.get("gibbs")
    write_json(
        out / "config.json", {**settings, "gibbs": recorded, "presets": presets, **environment()}
    )
    for name in tqdm(presets, disable=not progress, desc="presets"):
        worlds = None
        if name not in metrics:
            if name == HAND_CRAFTED:
                worlds, history = HandCraftedToy(), []
            else:
                worlds, history = train_toy(TOY_PRESETS[name].multipliers, config, progress)
                write_csv(out / name / "history.csv", history, ["step", "J", "R", "D", "C", "S"])
                torch.save(worlds.state_dict(), out / name / "model.pt")
            metrics[name] = evaluate_toy(worlds, config)
            toy_figure(
                worlds, config.training_data(), out / name / "figure.png", title=_title(name)
            )
            write_json(metrics_path, metrics)
        if gibbs is None or name == HAND_CRAFTED or "gibbs" in metrics[name]:
            continue
        multipliers = TOY_PRESETS[name].multipliers
        if multipliers.sigma == 0:
            continue
        if worlds is None:
            worlds = ToyWorlds(seed=config.seed)
            worlds.load_state_dict(torch.load(out / name / "model.pt"))
        metrics[name]["gibbs"] = _sample_gibbs(
            name, worlds, metrics[name], config, gibbs, out, progress
        )
        write_json(metrics_path, metrics)
    rows = [
        _row(name, split, values)
        for name, splits in metrics.items()
        for split, values in _splits(splits)
    ]
    write_csv(out / "frontier.csv", rows, ["preset", "set", "R", "D", "C", "S"])
    (out / "frontier.md").write_text(markdown_frontier(metrics) + "\n")
    if any("gibbs" in splits for splits in metrics.values()):
        (out / "gibbs.md").write_text(markdown_gibbs(metrics) + "\n")
    return metrics


def _sample_gibbs(
    name: str,
    worlds: ToyWorlds,
    fitted: dict,
    config: ToyConfig,
    gibbs: GibbsConfig,
    out: Path,
    progress: bool,
) -> dict:
    """Sample the preset's Gibbs law, write its chains, and return its metrics entry."""
    multipliers = TOY_PRESETS[name].multipliers
    result = sample_toy_gibbs(
        worlds,
        multipliers,
        config.training_data(),
        toy_data(),
        config.num_examples,
        gibbs,
        progress,
    )
    posterior = result.integration.posterior
    posterior.posterior.attrs.update(
        preset=name, sigma=multipliers.sigma, num_examples=config.num_examples
    )
    write_atomically(out / name / "posterior.nc", posterior.to_netcdf, ".nc")
    train = fitted["train"]
    fitted_objective = sum(
        weight * train[symbol]
        for weight, symbol in zip(multipliers[:4], ("R", "D", "C", "S"), strict=True)
        if weight
    )
    return {
        **result.functionals,
        **result.free_energy,
        "J_fitted": fitted_objective,
        "stiffness": result.stiffness,
    }


def _splits(splits: dict) -> list[tuple[str, dict]]:
    """A preset's (set, functionals) pairs: the fitted law's, then the Gibbs law's."""
    pairs = [(label, splits[label]) for label in ("train", "exact")]
    if "gibbs" in splits:
        pairs += [(f"{label}_gibbs", splits["gibbs"][label]) for label in ("train", "exact")]
    return pairs


def markdown_frontier(metrics: dict[str, dict]) -> str:
    """The functionals per preset as a Markdown table: training set, then exact distribution."""
    lines = [
        "| objective | ρ, δ, γ, σ | R train / exact | D train / exact | C train / exact | S |",
        "|---|---|---|---|---|---|",
    ]
    for name, splits in metrics.items():
        multipliers = (
            "—"
            if name == HAND_CRAFTED
            else ", ".join(f"{value:g}" for value in TOY_PRESETS[name].multipliers[:4])
        )
        cells = [
            f"{splits['train'][key]:.3f} / {splits['exact'][key]:.3f}" for key in ("R", "D", "C")
        ]
        lines.append(
            f"| {_title(name)} | {multipliers} | {' | '.join(cells)} | {splits['train']['S']:.3f} |"
        )
    return "\n".join(lines)


def markdown_gibbs(metrics: dict[str, dict]) -> str:
    r"""The :math:`\sigma > 0` presets under the fitted log-normal law and the sampled Gibbs law.

    :math:`J^* = -\sigma \log\mathcal{Z} / N` must not exceed the fitted :math:`J` (the Gibbs
    variational principle); the margin is the fitted family's excess free energy.
    """
    lines = [
        "| objective | σ | S fitted / sampled | J fitted | J* = −σ log Z | "
        "R train / exact | D train / exact | C train / exact | R-hat |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, splits in metrics.items():
        if "gibbs" not in splits:
            continue
        gibbs = splits["gibbs"]
        cells = [
            f"{gibbs['train'][key]:.3f} / {gibbs['exact'][key]:.3f}" for key in ("R", "D", "C")
        ]
        lines.append(
            f"| {_title(name)} | {TOY_PRESETS[name].multipliers.sigma:g} "
            f"| {splits['train']['S']:.4f} / {gibbs['train']['S']:.4f} ± {gibbs['S_error']:.4f} "
            f"| {gibbs['J_fitted']:.4f} | {gibbs['J_star']:.4f} ± {gibbs['J_star_error']:.4f} "
            f"| {' | '.join(cells)} | {gibbs['rhat_max']:.3f} |"
        )
    return "\n".join(lines)


def _title(name: str) -> str:
    if name == HAND_CRAFTED:
        return "Hand-crafted optimal model (Fig. 3)"
    preset = TOY_PRESETS[name]
    return f"{preset.title} (Fig. {preset.figure})"


def _row(name: str, split: str, values: dict) -> dict:
    return {"preset": name, "set": split, **{key: values[key] for key in ("R", "D", "C", "S")}}
