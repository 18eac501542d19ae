r"""TherML's frontier on scikit-learn's digits: a neural encoder–decoder–classifier (paper 003).

Each preset is a point :math:`(\rho, \delta, \gamma, \sigma)` of
:math:`J = \rho R + \delta D + \gamma C + \sigma S` (eq. 17, :math:`\rho = 1`), for the worlds of
:class:`~thermossl.models.therml_digits.DigitsWorlds`: a :math:`\delta` sweep (the
rate–distortion trade, no labels), a :math:`\gamma` sweep (labels enter) and a :math:`\sigma` sweep
(the encoder's output layer :math:`\theta` becomes a law, sampled at temperature :math:`\sigma`).

* :math:`\sigma = 0`: Adam minimizes the derived :math:`J/N` (:func:`fit_point`).
* :math:`\sigma > 0`: after the same fit as a warm start, :math:`C` chains of :math:`\theta` run
  the library's SGLD or SGHMC kernel on :math:`U = J(\theta) - \sigma \log q(\theta)`,
  :math:`q(\theta) = N(0, s^2 I)` (eq. 19: temperature :math:`\sigma`, prior not tempered), while
  Adam moves the point parameters (world Q and the encoder's trunk) on the chain-averaged
  :math:`J/N` (:func:`fit_chains`). World Q then frozen, thermodynamic integration gives
  :math:`\log\mathcal{Z}` and :math:`S = \mathrm{KL}(p^* \| q)`, its last rung's draws being the
  posterior (:func:`integrate_entropy`; :mod:`thermossl.therml_digits_chains`).

:func:`evaluate_digits` measures :math:`R, D, C` per example on the training set and on the
held-out digits, and :func:`run_digits_frontier` runs a list of presets into a resumable folder.
Because :math:`J` sums over the :math:`N` training examples, :math:`\sigma = 1` is the Bayesian
posterior of :math:`\theta`.

.. warning:: :math:`S` and :math:`\log\mathcal{Z}` carry, besides the Monte Carlo error they
    report, the kernel's :math:`O(h)` bias (gauge it by halving ``step_fraction``) and the ladder's
    quadrature error. The law of :math:`\theta` is multimodal: chains started from independent
    prior draws settle in different modes, so R-hat of :math:`\theta` is far above 1 while that of
    :math:`J` stays near 1; the error bars count the chains' modes as draws. SGHMC runs hotter than
    :math:`\sigma` with minibatch gradients (its ``kinetic_temperature`` in ``posterior.nc`` shows
    by how much); SGLD is the default.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from thermossl._validation import check_positive, check_positive_integer
from thermossl.models.therml_digits import (
    DIGITS_SITES,
    ChainFunctionals,
    DigitsData,
    DigitsWorlds,
    digits_data,
)
from thermossl.objectives.therml import Functionals, Multipliers, objective
from thermossl.objectives.thermodynamic_integration import ThermodynamicIntegration
from thermossl.objectives.traced import TracedBound
from thermossl.runs import (
    environment,
    read_json,
    setting_differences,
    write_atomically,
    write_csv,
    write_figure,
    write_json,
)
from thermossl.therml_digits_chains import CHAIN_KERNELS, ThetaChains, integrate_chains

__all__ = [
    "DIGITS_PRESETS",
    "DigitsConfig",
    "DigitsTraining",
    "evaluate_digits",
    "fit_chains",
    "fit_point",
    "frontier_figure",
    "integrate_entropy",
    "markdown_digits_frontier",
    "run_digits_frontier",
    "train_digits",
]

#: The frontier's presets: a distortion sweep, a classification sweep, a temperature sweep.
DIGITS_PRESETS: dict[str, Multipliers] = {
    **{f"delta_{delta:g}": Multipliers(1, delta, 0, 0) for delta in (0.1, 0.3, 1, 3)},
    **{f"gamma_{gamma:g}": Multipliers(1, 1, gamma, 0) for gamma in (1, 10, 100)},
    **{f"sigma_{sigma:g}": Multipliers(1, 1, 10, sigma) for sigma in (1, 10, 100)},
}

_HISTORY_COLUMNS = ("step", "phase", "J", "R", "D", "C")


@dataclass(frozen=True)
class DigitsConfig:
    r"""Settings of a digits frontier run.

    :ivar int steps: Adam steps on :math:`J/N` (for :math:`\sigma > 0`, the warm start).
    :ivar int chain_steps: :math:`\sigma > 0`: steps of the chains with Adam on world Q.
    :ivar float learning_rate: Adam's step size.
    :ivar int batch_size: :math:`B`, for Adam and for the chains' gradients.
    :ivar int latent_dim: :math:`L`.
    :ivar int hidden: width of the encoder's trunk and of the decoder's hidden layer.
    :ivar int num_components: components of the mixture :math:`q(z)`.
    :ivar int num_chains: :math:`C` chains of :math:`\theta`.
    :ivar str kernel: ``"sgld"`` or ``"sghmc"`` (see the warning above).
    :ivar float step_fraction: :math:`c`, the step as a fraction of the stiffest whitened mode's
        time scale (:mod:`~thermossl.therml_digits_chains`).
    :ivar float momentum_decay: SGHMC's :math:`\alpha = \varepsilon C`.
    :ivar float prior_scale: :math:`s` of :math:`q(\theta) = N(0, s^2 I)`.
    :ivar int num_rungs: :math:`K` of the ladder :math:`\beta_k = \beta^* (k/K)^a`.
    :ivar float exponent: :math:`a`.
    :ivar int num_warmup: discarded steps per rung.
    :ivar int num_draws: kept draws per chain and rung, each with :math:`J` on all examples.
    :ivar int thin: steps between kept draws.
    :ivar int evaluation_draws: :math:`\sigma = 0`: latent-noise replicates averaged by the
        evaluation (for :math:`\sigma > 0` every posterior draw is one).
    :ivar int seed: initialization, minibatches and every noise.
    :ivar float test_fraction: share of the digits held out.
    """

    steps: int = 4000
    chain_steps: int = 1000
    learning_rate: float = 1e-2
    batch_size: int = 128
    latent_dim: int = 6
    hidden: int = 48
    num_components: int = 10
    num_chains: int = 16
    kernel: str = "sgld"
    step_fraction: float = 0.05
    momentum_decay: float = 0.3
    prior_scale: float = 0.5
    num_rungs: int = 16
    exponent: float = 4.0
    num_warmup: int = 300
    num_draws: int = 20
    thin: int = 10
    evaluation_draws: int = 8
    seed: int = 0
    test_fraction: float = 0.25

    def __post_init__(self):
        for name in (
            "steps",
            "chain_steps",
            "batch_size",
            "latent_dim",
            "hidden",
            "num_components",
            "num_rungs",
            "num_draws",
            "thin",
            "evaluation_draws",
        ):
            check_positive_integer(name, getattr(self, name))
        if isinstance(self.num_chains, bool) or not isinstance(self.num_chains, int):
            raise ValueError(f"num_chains must be an integer >= 2, got {self.num_chains!r}")
        if self.num_chains < 2:
            raise ValueError(f"num_chains must be an integer >= 2, got {self.num_chains!r}")
        if not isinstance(self.num_warmup, int) or self.num_warmup < 0:
            raise ValueError(f"num_warmup must be an integer >= 0, got {self.num_warmup!r}")
        for name in ("learning_rate", "prior_scale"):
            check_positive(name, getattr(self, name))
        if self.kernel not in CHAIN_KERNELS:
            raise ValueError(f"kernel must be one of {CHAIN_KERNELS}, got {self.kernel!r}")
        if not 0 < self.step_fraction < 2:
            raise ValueError(f"step_fraction must lie in (0, 2), got {self.step_fraction!r}")
        if not 0 < self.momentum_decay < 1:
            raise ValueError(f"momentum_decay must lie in (0, 1), got {self.momentum_decay!r}")
        if not self.exponent > 1:
            raise ValueError(f"exponent must be > 1, got {self.exponent!r}")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must lie in (0, 1), got {self.test_fraction!r}")

    def data(self) -> DigitsData:
        """The training and held-out digits of this run."""
        return digits_data(self.seed, self.test_fraction)

    def worlds(self) -> DigitsWorlds:
        """Freshly initialized programs of this run's size."""
        return DigitsWorlds(self.latent_dim, self.hidden, self.num_components, seed=self.seed)

    def chains(
        self, worlds: DigitsWorlds, multipliers: Multipliers, data: DigitsData
    ) -> ThetaChains:
        """The :class:`~thermossl.therml_digits_chains.ThetaChains` of ``worlds`` on the training set."""
        return ThetaChains(
            worlds,
            multipliers,
            data.train_pixels,
            data.train_labels,
            prior_scale=self.prior_scale,
            kernel=self.kernel,
            batch_size=self.batch_size,
            step_fraction=self.step_fraction,
            momentum_decay=self.momentum_decay,
        )


# Training ----------------------------------------------------------------------------------------


def fit_point(
    worlds: DigitsWorlds,
    multipliers: Multipliers,
    data: DigitsData,
    config: DigitsConfig,
    generator: torch.Generator,
    optimizer: torch.optim.Optimizer,
    progress: bool = True,
) -> list[dict]:
    r"""Minimize the derived :math:`J/N = \rho R + \delta D + \gamma C` with ``optimizer``.

    Each step draws a minibatch and the encoder's latent noise from ``generator`` and replays the
    recorded derivation (:class:`~thermossl.objectives.TracedBound`); :math:`\sigma` is ignored
    (a point estimate has no :math:`S`).

    :returns: history rows ``{"step", "phase": "point", "J", "R", "D", "C"}`` every 50 steps
        (minibatch estimates, per example).
    """
    energy = multipliers._replace(sigma=0.0)
    derivation = TracedBound(worlds)
    size = data.train_pixels.shape[0]
    history = []
    for step in tqdm(range(1, config.steps + 1), disable=not progress, desc="fit", leave=False):
        indices = torch.randperm(size, generator=generator)[: config.batch_size]
        noise = torch.randn(config.batch_size, config.latent_dim, generator=generator)
        bound = derivation(data.train_pixels, data.train_labels, indices, noise)
        values = Functionals.from_bound(bound, size, DIGITS_SITES)
        loss = objective(values, energy, DIGITS_SITES)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == config.steps:
            history.append(_history_row(step, "point", loss, values))
    return history


def fit_chains(
    worlds: DigitsWorlds,
    multipliers: Multipliers,
    data: DigitsData,
    config: DigitsConfig,
    generator: torch.Generator,
    optimizer: torch.optim.Optimizer,
    progress: bool = True,
) -> tuple[Tensor, list[dict]]:
    r"""Run :math:`C` chains of :math:`\theta` at :math:`\sigma` while ``optimizer`` moves world Q.

    The chains start at the module's own :math:`\theta` and move in the whitened coordinates of
    the Kronecker-factored curvature there; at each step the kernel's gradient pass also gives the
    point parameters the gradient of the chain-averaged :math:`J/N`
    (:meth:`~thermossl.therml_digits_chains.ThetaChains.potential`), and ``optimizer`` steps.

    :returns: the chains' last :math:`\theta` ``[C, P]`` and history rows (phase ``"chains"``,
        chain averages of minibatch estimates) every 50 steps.
    :raises RuntimeError: when a chain diverges (lower ``step_fraction``).
    """
    chains = config.chains(worlds, multipliers, data)
    beta = 1.0 / multipliers.sigma
    start = worlds.head_vector()
    metric = chains.kronecker_curvature(start, generator)
    curvature = chains.largest_curvature(start, beta, metric, generator)
    point = [
        value for name, value in worlds.named_parameters() if not name.startswith("encoder_head.")
    ]
    kernel = chains.kernel(beta, metric, curvature, point)
    state = kernel.init(metric.to_whitened(start.expand(config.num_chains, -1), beta))
    stream = chains.stream(generator)
    history = []
    for step in tqdm(
        range(1, config.chain_steps + 1), disable=not progress, desc="chains", leave=False
    ):
        optimizer.zero_grad()
        batch = chains.batch(config.num_chains, generator, stream)
        state, _ = kernel.step(state, batch, generator=generator)
        if not bool(torch.isfinite(state.position).all()):
            raise RuntimeError(f"a chain of theta diverged at step {step}; lower step_fraction")
        optimizer.step()
        if step % 50 == 0 or step == config.chain_steps:
            with torch.no_grad():
                values = chains.values(metric.to_theta(state.position, beta), batch)
                values = Functionals(*(None if v is None else v.mean() for v in values))
            energy = objective(values, chains.energy, DIGITS_SITES)
            history.append(_history_row(config.steps + step, "chains", energy, values))
    return metric.to_theta(state.position, beta).detach(), history


def integrate_entropy(
    worlds: DigitsWorlds,
    multipliers: Multipliers,
    data: DigitsData,
    config: DigitsConfig,
    typical: Tensor,
    generator: torch.Generator,
    progress: bool = True,
) -> ThermodynamicIntegration:
    r""":math:`S` and :math:`\log\mathcal{Z}` at :math:`\sigma` for world Q frozen, and the posterior.

    The chains start from prior draws and climb the ladder
    (:func:`~thermossl.therml_digits_chains.integrate_chains`) in the whitened coordinates of the
    curvature at ``typical`` (a :math:`\theta` of the fitted law, ``[P]``).
    """
    frozen = copy.deepcopy(worlds).requires_grad_(False).train(False)
    chains = config.chains(frozen, multipliers, data)
    sigma = multipliers.sigma
    metric = chains.kronecker_curvature(typical, generator)
    curvature = chains.largest_curvature(typical, 1.0 / sigma, metric, generator)
    prior_draws = config.prior_scale * torch.randn(
        config.num_chains, frozen.head_size, generator=generator
    )
    return integrate_chains(
        chains,
        sigma,
        prior_draws,
        metric=metric,
        curvature=curvature,
        num_rungs=config.num_rungs,
        exponent=config.exponent,
        num_warmup=config.num_warmup,
        num_draws=config.num_draws,
        thin=config.thin,
        generator=generator,
        progress=progress,
    )


class DigitsTraining(NamedTuple):
    r"""A trained preset.

    :ivar DigitsWorlds worlds: world Q and the encoder (for :math:`\sigma > 0` its output layer is
        the warm start's; the law of :math:`\theta` is ``integration.posterior``).
    :ivar list history: rows ``{"step", "phase", "J", "R", "D", "C"}`` per example, :math:`J`
        without :math:`\sigma S`.
    :ivar integration: the thermodynamic integration for :math:`\sigma > 0`, else ``None``.
    """

    worlds: DigitsWorlds
    history: list[dict]
    integration: ThermodynamicIntegration | None


def train_digits(
    multipliers: Multipliers,
    config: DigitsConfig = DigitsConfig(),
    data: DigitsData | None = None,
    progress: bool = True,
) -> DigitsTraining:
    r"""Train one preset: :func:`fit_point`, then for :math:`\sigma > 0` :func:`fit_chains` and
    :func:`integrate_entropy`.

    :raises ValueError: on negative multipliers, or :math:`\rho = \delta = \gamma = 0`.
    """
    multipliers = multipliers.checked()
    if not any(multipliers[:3]):
        raise ValueError("rho, delta and gamma are all zero: there is nothing to fit")
    data = config.data() if data is None else data
    worlds = config.worlds()
    generator = torch.Generator().manual_seed(config.seed + 1)
    optimizer = torch.optim.Adam(worlds.parameters(), lr=config.learning_rate)
    history = fit_point(worlds, multipliers, data, config, generator, optimizer, progress)
    if multipliers.sigma == 0:
        return DigitsTraining(worlds, history, None)
    final, chain_history = fit_chains(
        worlds, multipliers, data, config, generator, optimizer, progress
    )
    integration = integrate_entropy(
        worlds, multipliers, data, config, final[0], generator, progress
    )
    return DigitsTraining(worlds, history + chain_history, integration)


# Evaluation --------------------------------------------------------------------------------------


def evaluate_digits(
    training: DigitsTraining, config: DigitsConfig = DigitsConfig(), data: DigitsData | None = None
) -> dict:
    r""":math:`R, D, C, S` per example in nats, on the training set and on the held-out digits.

    ``"train"`` averages over the :math:`N` training examples; ``"exact"`` over the held-out
    ones, a Monte Carlo estimate of the population value (the digits have no closed-form law;
    the toy's ``"exact"`` is the exact distribution). Both average over the law of
    :math:`\theta`: the posterior draws for :math:`\sigma > 0` (one latent draw each), the point
    :math:`\theta` with ``evaluation_draws`` latent draws for :math:`\sigma = 0`. :math:`S` comes
    from the thermodynamic integration for :math:`\sigma > 0` (the same on both sets: it is a
    property of the law of :math:`\theta`), and is ``None`` for :math:`\sigma = 0`: a point
    estimate is a delta law, with no finite KL to the continuous prior.

    :returns: ``{"train": {R, D, C, S}, "exact": {...}, "accuracy": {"train", "exact"}}``, and
        for :math:`\sigma > 0` ``"thermodynamics"``: ``S_error``, ``log_partition`` (a sum) and
        its error, ``free_energy`` :math:`= -\sigma\log\mathcal{Z}/N` and its error, and
        ``mean_objective`` :math:`\langle \rho R + \delta D + \gamma C\rangle_{p^*}` per example.
        ``accuracy`` classifies by :math:`\arg\max_y \langle q(y \mid z)\rangle` over the
        draws of :math:`z` and :math:`\theta`.
    """
    data = config.data() if data is None else data
    worlds = copy.deepcopy(training.worlds).requires_grad_(False).train(False)
    integration = training.integration
    if integration is None:
        draws = worlds.head_vector().expand(config.evaluation_draws, -1)
    else:
        theta = torch.as_tensor(integration.posterior.posterior["theta"].values)
        draws = theta.reshape(-1, theta.shape[-1]).to(worlds.head_vector().dtype)
    generator = torch.Generator().manual_seed(config.seed + 2)
    sets = {
        "train": (data.train_pixels, data.train_labels),
        "exact": (data.test_pixels, data.test_labels),
    }
    size = data.train_pixels.shape[0]
    entropy = None if integration is None else float(integration.entropy) / size
    results: dict = {}
    accuracy = {}
    for label, (pixels, labels) in sets.items():
        values = _average_functionals(worlds, draws, pixels, labels, config.num_chains, generator)
        results[label] = {**values, "S": entropy}
        accuracy[label] = _accuracy(worlds, draws, pixels, labels, generator)
    results["accuracy"] = accuracy
    if integration is not None:
        sigma = float(integration.posterior.attrs["temperature"])
        results["thermodynamics"] = {
            "S_error": float(integration.entropy_error) / size,
            "log_partition": float(integration.log_partition),
            "log_partition_error": float(integration.log_partition_error),
            "free_energy": -sigma * float(integration.log_partition) / size,
            "free_energy_error": sigma * float(integration.log_partition_error) / size,
            "mean_objective": float(integration.mean_objective[-1]) / size,
        }
    return results


def _average_functionals(
    worlds: DigitsWorlds,
    draws: Tensor,
    pixels: Tensor,
    labels: Tensor,
    chunk: int,
    generator: torch.Generator,
) -> dict[str, float]:
    """:math:`R, D, C` per example averaged over the draws, ``chunk`` draws per vectorized call."""
    functionals = ChainFunctionals(worlds)
    everything = torch.arange(pixels.shape[0])
    totals = torch.zeros(3, dtype=torch.float64)
    with torch.no_grad():
        for theta in draws.split(chunk):
            noise = torch.randn(
                theta.shape[0], pixels.shape[0], worlds.latent_dim, generator=generator
            )
            values = functionals(theta, pixels, labels, everything, noise)
            totals += torch.stack([value.double().sum() for value in values[:3]])
    return dict(zip("RDC", (totals / draws.shape[0]).tolist(), strict=True))


def _accuracy(
    worlds: DigitsWorlds, draws: Tensor, pixels: Tensor, labels: Tensor, generator: torch.Generator
) -> float:
    r"""Share of examples whose :math:`\arg\max_y \langle q(y \mid z) \rangle` is their label."""
    probabilities = torch.zeros(pixels.shape[0], worlds.classifier.out_features)
    with torch.no_grad():
        for theta in draws:
            loc, scale = worlds.encoder(pixels, theta)
            z = loc + scale * torch.randn(loc.shape, generator=generator)
            probabilities += worlds.classifier_logits(z).softmax(-1)
    return float((probabilities.argmax(-1) == labels).double().mean())


def _history_row(step: int, phase: str, energy: Tensor, values: Functionals) -> dict:
    floats = values.as_floats()
    return {
        "step": step,
        "phase": phase,
        "J": float(energy.detach()),
        **{k: floats[k] for k in "RDC"},
    }


# The run folder ----------------------------------------------------------------------------------


def run_digits_frontier(
    presets: list[str],
    out: Path,
    config: DigitsConfig = DigitsConfig(),
    progress: bool = True,
) -> dict[str, dict]:
    """Train and evaluate ``presets`` (names of :data:`DIGITS_PRESETS`) into the folder ``out``.

    Writes ``OUT/config.json`` (the settings, what ``"exact"`` means, versions),
    ``OUT/metrics.json`` (``{PRESET: {"train": {R, D, C, S}, "exact": {...}, "accuracy": ...}}``
    in nats per example, see :func:`evaluate_digits`) after every preset, ``OUT/frontier.csv``,
    ``OUT/frontier.md``, ``OUT/frontier.png`` (the R–D plane coloured by C, and the R–C plane),
    and per preset ``OUT/PRESET/{history.csv, model.pt}`` and, for :math:`\\sigma > 0`,
    ``OUT/PRESET/posterior.nc`` (ArviZ NetCDF, the last rung of the ladder). Presets already in
    ``metrics.json`` are kept, so an interrupted run resumes.

    :raises ValueError: on an unknown preset name, or a folder trained with other settings.
    """
    unknown = [name for name in presets if name not in DIGITS_PRESETS]
    if unknown:
        raise ValueError(
            f"unknown preset(s) {unknown}; choose from {', '.join(DIGITS_PRESETS)} or 'all'"
        )
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
    data = config.data()
    write_json(
        out / "config.json",
        {
            **settings,
            "presets": presets,
            "units": "nats per example",
            "exact_estimate": (
                f"held-out {data.test_pixels.shape[0]} examples: a Monte Carlo estimate of the "
                "population value"
            ),
            **environment(),
        },
    )
    for name in tqdm(presets, disable=not progress, desc="presets"):
        if name in metrics:
            continue
        training = train_digits(DIGITS_PRESETS[name], config, data, progress)
        write_csv(out / name / "history.csv", training.history, _HISTORY_COLUMNS)
        state = training.worlds.state_dict()
        write_atomically(out / name / "model.pt", functools.partial(torch.save, state))
        if training.integration is not None:
            posterior = training.integration.posterior
            posterior.attrs.update(preset=name, num_examples=data.train_pixels.shape[0])
            write_atomically(out / name / "posterior.nc", posterior.to_netcdf, ".nc")
        metrics[name] = evaluate_digits(training, config, data)
        write_json(metrics_path, metrics)
    rows = [
        {
            "preset": name,
            "set": label,
            **{key: splits[label][key] for key in ("R", "D", "C", "S")},
            "accuracy": splits["accuracy"][label],
        }
        for name, splits in metrics.items()
        for label in ("train", "exact")
    ]
    write_csv(out / "frontier.csv", rows, ["preset", "set", "R", "D", "C", "S", "accuracy"])
    (out / "frontier.md").write_text(markdown_digits_frontier(metrics) + "\n")
    frontier_figure(metrics, out / "frontier.png")
    return metrics


def markdown_digits_frontier(metrics: dict[str, dict]) -> str:
    """The functionals per preset as a Markdown table: training set / held-out digits.

    Example::

        >>> values = {"R": 1.0, "D": 2.0, "C": 0.5, "S": None}
        >>> row = {"train": values, "exact": values, "accuracy": {"train": 0.9, "exact": 0.8}}
        >>> print(markdown_digits_frontier({"gamma_1": row}).splitlines()[-1])
        | gamma_1 | 1, 1, 1, 0 | 1.000 / 1.000 | 2.000 / 2.000 | 0.500 / 0.500 | — | 0.800 |
    """
    lines = [
        "| preset | ρ, δ, γ, σ | R train / held-out | D train / held-out | C train / held-out "
        "| S (± s.e.) | held-out accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, splits in metrics.items():
        multipliers = ", ".join(f"{value:g}" for value in DIGITS_PRESETS[name][:4])
        cells = [
            f"{splits['train'][key]:.3f} / {splits['exact'][key]:.3f}" for key in ("R", "D", "C")
        ]
        entropy = splits["train"]["S"]
        if entropy is None:
            entropy_cell = "—"
        else:
            entropy_cell = f"{entropy:.3f} ± {splits['thermodynamics']['S_error']:.3f}"
        lines.append(
            f"| {name} | {multipliers} | {' | '.join(cells)} | {entropy_cell} "
            f"| {splits['accuracy']['exact']:.3f} |"
        )
    return "\n".join(lines)


def frontier_figure(metrics: dict[str, dict], path: Path) -> Path:
    """The R–D plane coloured by C and the R–C plane coloured by D (PNG at ``path``).

    Training-set values filled, held-out values hollow, a grey line between the two (the
    generalization gap), each preset named at its training point.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 5), layout="constrained")
    for panel, (vertical, colour) in zip(axes, (("D", "C"), ("C", "D")), strict=True):
        values = {
            label: [
                [splits[label][key] for splits in metrics.values()]
                for key in "R" + vertical + colour
            ]
            for label in ("train", "exact")
        }
        shades = [shade for label in values for shade in values[label][2]]
        scale = matplotlib.colors.LogNorm if min(shades) > 0 else matplotlib.colors.Normalize
        norm = scale(min(shades), max(shades))
        (rate, height, shade), (held_rate, held_height, held_shade) = values.values()
        panel.plot([rate, held_rate], [height, held_height], color="0.8", lw=0.8, zorder=0)
        filled = panel.scatter(rate, height, c=shade, norm=norm, cmap="viridis")
        panel.scatter(
            held_rate, held_height, facecolors="none", edgecolors=filled.to_rgba(held_shade)
        )
        for preset, x, y in zip(metrics, rate, height, strict=True):
            panel.annotate(preset, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        label = {"D": "distortion D", "C": "classification error C"}[vertical]
        panel.set(xlabel="rate R (nats/example)", ylabel=f"{label} (nats/example)")
        panel.set_yscale("log")
        figure.colorbar(filled, ax=panel, label=f"{colour} (nats/example)")
    axes[0].set_title("R–D plane (filled: training set, hollow: held-out)")
    axes[1].set_title("R–C plane")
    try:
        return write_figure(path, figure)
    finally:
        plt.close(figure)
