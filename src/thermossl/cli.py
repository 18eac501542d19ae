"""The ``thermossl`` command line."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="thermossl: SSL losses derived from Pyro programs, and the thermodynamics of learning.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _main() -> None:
    """thermossl: SSL losses derived from Pyro programs, and the thermodynamics of learning."""


@app.command()
def bounds(
    batch_size: Annotated[int, typer.Option(min=2, help="Pairs in the fixed random batch.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed of the batch and the networks.")] = 0,
    mi_dim: Annotated[
        int, typer.Option(min=1, help="Dimension d of the correlated Gaussians.")
    ] = 2,
    mi_correlation: Annotated[float, typer.Option(help="Correlation rho in (-1, 1).")] = 0.8,
    mi_batch_size: Annotated[
        int, typer.Option(min=2, help="Batch size n of each MI estimate.")
    ] = 128,
    mi_replicates: Annotated[
        int, typer.Option(min=2, help="Independent batches per estimate.")
    ] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    out: Annotated[
        Path, typer.Option(help="Run folder for config.json, metrics.json and the figure.")
    ] = Path("runs/bounds"),
) -> None:
    """Derived bounds against the published losses, and the MI bounds against the Gaussian truth."""
    from thermossl.comparisons import family_comparisons, mutual_information_table
    from thermossl.runs import environment, write_json

    if not -1 < mi_correlation < 1:
        raise typer.BadParameter("must lie in (-1, 1)", param_hint="--mi-correlation")
    families = family_comparisons(num_pairs=batch_size, seed=seed)
    truth, rows = mutual_information_table(
        dim=mi_dim,
        correlation=mi_correlation,
        batch_size=mi_batch_size,
        replicates=mi_replicates,
        seed=seed,
    )
    report = {
        "families": [family.as_dict() for family in families],
        "mutual_information": {
            "truth": truth,
            "log_batch_size": math.log(mi_batch_size),
            "rows": [row.as_dict() for row in rows],
        },
    }
    settings = {
        "command": "bounds",
        "batch_size": batch_size,
        "seed": seed,
        "mi_dim": mi_dim,
        "mi_correlation": mi_correlation,
        "mi_batch_size": mi_batch_size,
        "mi_replicates": mi_replicates,
    }
    write_json(out / "config.json", {**settings, "environment": environment()})
    write_json(out / "metrics.json", report)
    _plot_mutual_information(out / "mi_bounds.png", truth, rows, mi_batch_size)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"Derived bounds vs published losses (one float64 batch of {batch_size} pairs)\n")
    for family in families:
        typer.echo(f"{family.family}  <->  {family.published_loss}   [bound = {family.affine_map}]")
        width = max(len(name) for name in family.terms)
        for name, value in family.terms.items():
            typer.echo(f"    term {name:<{width}}  {value: .10g}")
        typer.echo(f"    derived bound          {family.derived: .12g}")
        typer.echo(f"    published loss         {family.published: .12g}")
        typer.echo(f"    published, mapped      {family.published_mapped: .12g}")
        typer.echo(f"    difference             {family.difference: .3e}\n")
    typer.echo(
        f"Mutual-information bounds on correlated Gaussians: d={mi_dim}, rho={mi_correlation}, "
        f"n={mi_batch_size}, {mi_replicates} batches"
    )
    typer.echo(f"truth I = {truth:.4f} nats, log n = {math.log(mi_batch_size):.4f}\n")
    typer.echo(f"{'estimator':<9} {'critic':<42} {'mean':>8} {'± s.e.':>8} {'I - mean':>9}")
    for row in rows:
        typer.echo(
            f"{row.estimator:<9} {row.critic:<42} {row.mean:8.4f} {row.standard_error:8.4f} "
            f"{row.truth - row.mean:9.4f}"
        )
    typer.echo(f"\nRun folder: {out} (config.json, metrics.json, mi_bounds.png)")


@app.command()
def sample(
    model: Annotated[str, typer.Argument(help="The Pyro model, as FILE.py:FUNCTION.")],
    data: Annotated[
        Path, typer.Option(help=".npz file; its arrays are the model's keyword arguments.")
    ],
    kernel: Annotated[str, typer.Option(help="sgld, sghmc or psgld.")] = "sgld",
    temperature: Annotated[
        float, typer.Option(help="sigma > 0 (1 is the Bayesian posterior).")
    ] = 1.0,
    tempering: Annotated[
        str, typer.Option(help="likelihood (prior not tempered) or posterior.")
    ] = "likelihood",
    chains: Annotated[int, typer.Option(min=1, help="Chains advanced together.")] = 4,
    draws: Annotated[int, typer.Option(min=1, help="Draws kept per chain.")] = 1000,
    warmup: Annotated[int, typer.Option(min=0, help="Steps discarded first.")] = 500,
    batch_size: Annotated[
        int | None, typer.Option(help="Minibatch size (the model's own when unset).")
    ] = None,
    step_size: Annotated[float, typer.Option(help="epsilon > 0.")] = 1e-4,
    friction: Annotated[float, typer.Option(help="SGHMC's friction C.")] = 1.0,
    thin: Annotated[int, typer.Option(min=1, help="Keep every thin-th state.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the sampler's generator.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    float64: Annotated[bool, typer.Option("--float64", help="Sample in double precision.")] = False,
    out: Annotated[Path, typer.Option(help="Run folder.")] = Path("runs/sample"),
) -> None:
    """SG-MCMC on a Pyro model file: posterior.nc, summary.csv, config.json and trace plots."""
    import torch

    from thermossl.inference import Potential
    from thermossl.inference import sample as run_chains
    from thermossl.inference.sampling import resolve_device
    from thermossl.sampling_cli import load_data, load_model, model_arguments, run_sampling

    dtype = torch.float64 if float64 else torch.float32
    try:
        function = load_model(model)
        target = resolve_device(device)  # "auto": CUDA when available
        arrays = {name: value.to(target) for name, value in load_data(data, dtype).items()}
        arguments = model_arguments(function, arrays, batch_size)
        potential = Potential.from_pyro_model(function, **arguments)
        idata = run_chains(
            potential,
            kernel,
            step_size=step_size,
            temperature=temperature,
            tempering=tempering,
            num_chains=chains,
            num_draws=draws,
            num_warmup=warmup,
            batch_size=batch_size,
            friction=friction,
            thin=thin,
            seed=seed,
            device=device,
            dtype=dtype,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    settings = {
        "command": "sample",
        "model": model,
        "data": str(data),
        "kernel": kernel,
        "temperature": temperature,
        "tempering": tempering,
        "chains": chains,
        "draws": draws,
        "warmup": warmup,
        "batch_size": potential.batch_size if batch_size is None else batch_size,
        "data_size": potential.data_size,
        "step_size": step_size,
        "friction": friction,
        "thin": thin,
        "seed": seed,
        "device": device,
        "dtype": str(dtype),
    }
    run_sampling(out, settings, idata)
    typer.echo(f"{idata.posterior.sizes['draw']} draws x {chains} chains -> {out}")


def _plot_mutual_information(path: Path, truth: float, rows, batch_size: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from thermossl.runs import write_figure

    figure, axes = plt.subplots(figsize=(7, 3.2))
    labels = [f"{row.estimator}\n{row.critic}" for row in rows]
    positions = range(len(rows))
    axes.errorbar(
        [row.mean for row in rows],
        positions,
        xerr=[2 * row.standard_error for row in rows],
        fmt="o",
        capsize=3,
        label="mean ± 2 s.e.",
    )
    axes.axvline(truth, color="black", label=f"truth I = {truth:.3f}")
    low = min(truth, *(row.mean - 2 * row.standard_error for row in rows))
    high = max(truth, *(row.mean + 2 * row.standard_error for row in rows))
    margin = 0.1 * (high - low) + 1e-3
    if math.log(batch_size) < high + margin:  # InfoNCE's ceiling, when it is in sight
        axes.axvline(math.log(batch_size), color="grey", linestyle=":", label="log n")
    axes.set_xlim(low - margin, high + margin)
    axes.set_yticks(list(positions), labels, fontsize=6)
    axes.set_xlabel("nats")
    axes.legend(fontsize=7, loc="center left")
    figure.tight_layout()
    write_figure(path, figure)
    plt.close(figure)


# Options shared by `train` and `compare`.
AugmentationNoise = Annotated[
    float, typer.Option(help="sigma of the Gaussian augmentation N(0, sigma^2 I).")
]
GenerativeWarmup = Annotated[
    int, typer.Option(min=0, help="First iterations training L_GEN alone (GEDI family).")
]
Normalizer = Annotated[
    str, typer.Option(help="log-normalizer of L_GEN: langevin (paper) or quadrature (d <= 3).")
]
LearningRate = Annotated[float, typer.Option(help="Adam's learning rate.")]
QuadraturePoints = Annotated[
    int, typer.Option(min=2, help="Grid points per axis of the quadrature normalizer.")
]
Activation = Annotated[
    str | None,
    typer.Option(
        help="Hidden activation: relu or leaky_relu (default: leaky_relu for the GEDI family, "
        "relu for the others)."
    ),
]
EnergyPenalty = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        help="alpha of the energy-magnitude penalty with Langevin samples (default: 0.1 on "
        "digits, 0 elsewhere).",
    ),
]
Restarts = Annotated[
    int,
    typer.Option(min=1, help="Initializations per run; the one with the highest bound is kept."),
]


@app.command()
def train(
    method: Annotated[str, typer.Argument(help="gedi, gedi_no_gen, ..., swav, barlow (see docs).")],
    data: Annotated[str, typer.Option(help="moons, circles or digits.")] = "moons",
    seed: Annotated[int, typer.Option(help="Seed of the data, the networks and the run.")] = 0,
    iterations: Annotated[int, typer.Option(min=1, help="Adam steps.")] = 20_000,
    batch_size: Annotated[int, typer.Option(min=1, help="Pairs per step.")] = 400,
    temperature: Annotated[float, typer.Option(help="tau of the cluster softmax.")] = 1.0,
    augmentation_noise: AugmentationNoise = 0.03,
    generative_warmup: GenerativeWarmup = 0,
    normalizer: Normalizer = "langevin",
    learning_rate: LearningRate = 1e-3,
    restarts: Restarts = 1,
    quadrature_points: QuadraturePoints = 64,
    activation: Activation = None,
    energy_penalty: EnergyPenalty = None,
    out: Annotated[Path | None, typer.Option(help="Run folder (runs/METHOD-DATA-SEED).")] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue the run in this folder from its checkpoint.")
    ] = None,
) -> None:
    """Train an SSL method: metrics.json (test NMI, failure modes, bound terms), figures, checkpoint."""
    from thermossl.training import TrainingConfig
    from thermossl.training_cli import run_training

    if resume is not None:
        config_path = resume / "config.json"
        if not config_path.exists():
            raise typer.BadParameter(f"no config.json in {resume}", param_hint="--resume")
        saved = json.loads(config_path.read_text())
        saved.pop("environment", None)
        config = TrainingConfig.from_dict(saved)
        out = resume
    else:
        config = TrainingConfig(
            method=method,
            data=data,
            seed=seed,
            iterations=iterations,
            batch_size=batch_size,
            learning_rate=learning_rate,
            augmentation_noise=augmentation_noise,
            generative_warmup=generative_warmup,
            restarts=restarts,
            settings=_settings(
                data,
                temperature=temperature,
                normalizer=normalizer,
                quadrature_points=quadrature_points,
                activation=activation,
                energy_penalty=energy_penalty,
            ),
        )
        out = out or Path("runs") / f"{method}-{data}-{seed}"
    try:
        metrics = run_training(config, out, resume=resume is not None)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    except KeyboardInterrupt:
        typer.echo(
            f"\ninterrupted; checkpoint saved. Continue with: thermossl train {config.method} --resume {out}"
        )
        raise typer.Exit(130) from None
    typer.echo(metrics["report"])


def _settings(data: str, *, energy_penalty: float | None, **options):
    """The data set's :class:`~thermossl.methods.MethodSettings` with the CLI's options; an
    energy penalty left unset keeps the data set's preset."""
    from thermossl.methods import MethodSettings

    if energy_penalty is not None:
        options["energy_penalty"] = energy_penalty
    return MethodSettings.for_data(data, **options)


@app.command()
def demo(
    iterations: Annotated[
        int, typer.Option(min=1, help="Adam steps (Table 7: 20k; 15k keeps the demo under 3 min).")
    ] = 15_000,
    seed: Annotated[int, typer.Option(help="Seed of the data, the networks and the run.")] = 0,
    out: Annotated[Path, typer.Option(help="Run folder.")] = Path("runs/demo"),
) -> None:
    """GEDI on two moons: the derived bound's terms, the test NMI, the failure-mode report, the figure.

    Table 7's settings except three measured choices (see the README): log-normalizer by
    quadrature on a 32 x 32 grid, leaky ReLU, learning rate 3e-3; and 15k iterations instead of
    20k, which keeps it under 3 minutes on two CPU cores."""
    from thermossl.training_cli import run_training

    try:
        metrics = run_training(demo_config(iterations, seed), out)
    except KeyboardInterrupt:
        typer.echo(f"\ninterrupted; continue with: thermossl train gedi --resume {out}")
        raise typer.Exit(130) from None
    typer.echo(metrics["report"])


def demo_config(iterations: int = 15_000, seed: int = 0):
    """The run of ``thermossl demo``: GEDI on moons with the README's measured settings."""
    from thermossl.methods import MethodSettings
    from thermossl.training import TrainingConfig

    return TrainingConfig(
        method="gedi",
        data="moons",
        seed=seed,
        iterations=iterations,
        learning_rate=3e-3,
        settings=MethodSettings(normalizer="quadrature", quadrature_points=32),
    )


#: The methods of paper 001's Tables 2-3, in the order the tables show them.
STUDY_METHODS = ("jem", "barlow", "swav", "gedi_no_gen", "gedi_no_inv", "gedi_no_prior", "gedi")


@app.command()
def compare(
    data: Annotated[str, typer.Option(help="moons, circles or digits.")] = "moons",
    seeds: Annotated[int, typer.Option(min=1, help="Seeds 0..N-1 per method.")] = 5,
    methods: Annotated[str, typer.Option(help="Comma-separated methods.")] = ",".join(
        STUDY_METHODS
    ),
    iterations: Annotated[int, typer.Option(min=1, help="Adam steps per run.")] = 20_000,
    augmentation_noise: AugmentationNoise = 0.03,
    generative_warmup: GenerativeWarmup = 0,
    normalizer: Normalizer = "langevin",
    learning_rate: LearningRate = 1e-3,
    restarts: Restarts = 1,
    quadrature_points: QuadraturePoints = 64,
    activation: Activation = None,
    energy_penalty: EnergyPenalty = None,
    jobs: Annotated[int, typer.Option(min=1, help="Runs trained at once (one thread each).")] = 1,
    out: Annotated[Path | None, typer.Option(help="Study folder (runs/compare-DATA).")] = None,
) -> None:
    """Train several methods over several seeds; print and write the NMI table (CSV, Markdown).

    Finished runs (their metrics.json) are reused, so an interrupted study resumes."""
    from thermossl.seed_study import markdown_table, run_study, summarize, write_tables
    from thermossl.training import TrainingConfig

    names = [name.strip() for name in methods.split(",") if name.strip()]
    out = out or Path("runs") / f"compare-{data}"
    base = TrainingConfig(
        method=names[0] if names else "",
        data=data,
        iterations=iterations,
        learning_rate=learning_rate,
        augmentation_noise=augmentation_noise,
        generative_warmup=generative_warmup,
        restarts=restarts,
        settings=_settings(
            data,
            normalizer=normalizer,
            quadrature_points=quadrature_points,
            activation=activation,
            energy_penalty=energy_penalty,
        ),
    )
    try:
        rows = run_study(base, names, list(range(seeds)), out, jobs=jobs)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    except KeyboardInterrupt:
        typer.echo("\ninterrupted; finished runs are kept. Run the same command to resume.")
        raise typer.Exit(130) from None
    summaries = summarize(rows)
    paths = write_tables(rows, summaries, out, data)
    typer.echo(markdown_table(summaries, data))
    typer.echo("written: " + ", ".join(str(path) for path in paths))


@app.command()
def nesy(
    triplets: Annotated[str, typer.Option(help="Comma-separated triplet counts.")] = "100,1000",
    modes: Annotated[str, typer.Option(help="Comma-separated: nesy, gedi, gedi_nesy.")] = (
        "nesy,gedi,gedi_nesy"
    ),
    seeds: Annotated[int, typer.Option(min=1, help="Seeds 0..N-1 per setting.")] = 3,
    learning_rate: LearningRate = 1e-3,
    out: Annotated[Path, typer.Option(help="Study folder.")] = Path("runs/nesy"),
) -> None:
    """The digits addition experiment (paper 001, Table 6): accuracy and NMI per objective.

    Finished runs are kept in OUT/runs.csv, so an interrupted study resumes."""
    from thermossl.nesy_experiment import markdown_nesy, run_nesy_study, summarize_nesy

    def split(text: str) -> list[str]:
        return [item.strip() for item in text.split(",") if item.strip()]

    try:
        counts = [int(item) for item in split(triplets)]
        rows = run_nesy_study(split(modes), counts, range(seeds), out, learning_rate=learning_rate)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    except KeyboardInterrupt:
        typer.echo("\ninterrupted; finished runs are kept. Run the same command to resume.")
        raise typer.Exit(130) from None
    typer.echo(markdown_nesy(summarize_nesy(rows)))
    typer.echo(f"written: {out / 'runs.csv'}, {out / 'summary.md'}")


@app.command()
def frontier(
    data: Annotated[
        str, typer.Option(help="Data set: toy (TherML's Appendix B) or digits (a neural model).")
    ] = "toy",
    preset: Annotated[
        str,
        typer.Option(help="A preset, comma-separated presets, or 'all' (toy: with hand_crafted)."),
    ] = "all",
    steps: Annotated[
        int | None,
        typer.Option(min=1, help="Gradient steps per preset (toy: 10,000; digits: 4,000)."),
    ] = None,
    learning_rate: Annotated[
        float | None, typer.Option(min=0.0, help="Adam's step size (default 0.01).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the initialization and training noise.")] = 0,
    data_seed: Annotated[int, typer.Option(help="Toy: seed of the 50 training examples.")] = 0,
    infinite_data: Annotated[
        bool, typer.Option(help="Toy: train on the exact distribution instead of 50 examples.")
    ] = False,
    gibbs: Annotated[
        bool,
        typer.Option(
            help="Toy: also sample each sigma > 0 preset's Gibbs law p* (eq. 19) with world Q as "
            "trained: S and log Z by thermodynamic integration, chains as OUT/PRESET/posterior.nc."
        ),
    ] = True,
    kernel: Annotated[str, typer.Option(help="SG-MCMC kernel for sigma > 0: sgld, sghmc.")] = (
        "sgld"
    ),
    out: Annotated[Path | None, typer.Option(help="Run folder (runs/frontier-DATA).")] = None,
) -> None:
    """TherML's functionals R, D, C, S for each preset objective (paper 003).

    toy: the captioned objectives of Figures 3-8. digits: a (delta, gamma, sigma) sweep of a neural
    encoder-decoder-classifier, sigma > 0 sampled by SG-MCMC. Writes OUT/metrics.json,
    OUT/frontier.{csv,md}, figures, and for sigma > 0 the chains as ArviZ NetCDF. Finished presets
    are kept, so an interrupted run resumes."""
    if data not in ("toy", "digits"):
        raise typer.BadParameter(
            f"data must be 'toy' or 'digits', got {data!r}", param_hint="--data"
        )
    out = out if out is not None else Path(f"runs/frontier-{data}")
    names = (
        None if preset == "all" else [name.strip() for name in preset.split(",") if name.strip()]
    )
    options = {"seed": seed}
    if steps is not None:
        options["steps"] = steps
    if learning_rate is not None:
        options["learning_rate"] = learning_rate
    try:
        if data == "toy":
            text = _toy_frontier(names, out, options, data_seed, infinite_data, gibbs, kernel)
        else:
            text = _digits_frontier(names, out, {**options, "kernel": kernel})
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    except KeyboardInterrupt:
        typer.echo("\ninterrupted; finished presets are kept. Run the same command to resume.")
        raise typer.Exit(130) from None
    typer.echo(text)
    typer.echo(f"written: {out / 'metrics.json'}, {out / 'frontier.md'}")


def _toy_frontier(names, out, options, data_seed, infinite_data, gibbs, kernel) -> str:
    from thermossl.therml_gibbs import GibbsConfig
    from thermossl.therml_toy import (
        HAND_CRAFTED,
        TOY_PRESETS,
        ToyConfig,
        markdown_frontier,
        markdown_gibbs,
        run_toy_frontier,
    )

    names = [HAND_CRAFTED, *TOY_PRESETS] if names is None else names
    config = ToyConfig(**options, data_seed=data_seed, infinite_data=infinite_data)
    sampling = GibbsConfig(kernel=kernel) if gibbs else None
    metrics = run_toy_frontier(names, out, config, gibbs=sampling)
    text = markdown_frontier(metrics)
    if any("gibbs" in splits for splits in metrics.values()):
        text += "\n\nUnder the sampled Gibbs law p* (J* = -sigma log Z / N):\n\n"
        text += markdown_gibbs(metrics)
    return text


def _digits_frontier(names, out, options) -> str:
    from thermossl.therml_digits import (
        DIGITS_PRESETS,
        DigitsConfig,
        markdown_digits_frontier,
        run_digits_frontier,
    )

    names = list(DIGITS_PRESETS) if names is None else names
    metrics = run_digits_frontier(names, out, DigitsConfig(**options))
    return markdown_digits_frontier(metrics)


@app.command()
def laws(
    data: Annotated[str, typer.Option(help="Data set: toy (TherML's Appendix B).")] = "toy",
    delta: Annotated[float, typer.Option(help="δ of the point the surface is measured at.")] = 1.0,
    gamma: Annotated[float, typer.Option(help="γ of that point.")] = 1.0,
    sigma: Annotated[float, typer.Option(help="σ of that point.")] = 0.1,
    step: Annotated[
        float, typer.Option(help="Relative finite-difference step: m moves by h·m and h·m/2.")
    ] = 0.05,
    parameter_draws: Annotated[
        int, typer.Option(min=1, help="Fixed draws of the encoder weights (common noise).")
    ] = 32,
    frontier: Annotated[
        Path | None,
        typer.Option(help="A `thermossl frontier` folder whose models get eq. 11-12 checked."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Run folder (equilibria are kept there).")] = Path(
        "runs/laws-toy"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """TherML's laws on numbers (paper 003, §1.2, §3): eq. 11-12 on trained models; the envelope
    relations, Maxwell relations, concavity and first law of the equilibrium surface J*.

    Writes OUT/laws.{json,md}; solved equilibria are kept in OUT/equilibria, so an interrupted
    run resumes."""
    import json

    from thermossl.therml_laws import LawsConfig, markdown_laws, run_toy_laws

    if data != "toy":
        raise typer.BadParameter(f"data must be 'toy', got {data!r}", param_hint="--data")
    if frontier is not None and not (frontier / "metrics.json").exists():
        raise typer.BadParameter(f"{frontier} holds no frontier run", param_hint="--frontier")
    try:
        config = LawsConfig(
            delta=delta, gamma=gamma, sigma=sigma, step=step, parameter_draws=parameter_draws
        )
        report = run_toy_laws(out, config, frontier=frontier)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    except KeyboardInterrupt:
        typer.echo("\ninterrupted; solved equilibria are kept. Run the same command to resume.")
        raise typer.Exit(130) from None
    typer.echo(json.dumps(report, indent=2) if as_json else markdown_laws(report))
    if not as_json:
        typer.echo(f"written: {out / 'laws.json'}, {out / 'laws.md'}")


@app.command()
def ldm(
    data: Annotated[
        str, typer.Option(help="Data set: digits (pairs of augmentations), circle-video, wobbly.")
    ] = "digits",
    model: Annotated[
        str,
        typer.Option(help="Latent model: pair (digits), kalman, lstm or cpc (videos)."),
    ] = "pair",
    configuration: Annotated[
        str,
        typer.Option(
            help="pair: goals as SPACE-ENTROPY[-mi] (e.g. sphere-kde-mi), comma-separated, or 'all'."
        ),
    ] = "all",
    entropy: Annotated[
        str,
        typer.Option(
            help="kalman, lstm: the entropy estimator, knn or stopgrad; kalman also contrastive "
            "(InfoNCE over time with the Kalman predictive density as critic)."
        ),
    ] = "knn",
    noise_aware: Annotated[
        bool,
        typer.Option(
            help="kalman: per-frame pixel noise in [0.05, 0.5], read into the observation covariance."
        ),
    ] = False,
    alignment_every: Annotated[
        int,
        typer.Option(
            min=0,
            help="kalman: every N steps record the cosine of the kNN and stop-grad entropy "
            "gradients (OUT/gradient_alignment.png); 0 never.",
        ),
    ] = 0,
    predictor_steps: Annotated[
        int,
        typer.Option(
            min=0,
            help="videos: extra latent-model-only Adam steps on each batch before the joint step.",
        ),
    ] = 0,
    predictor_speedup: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="videos: learning-rate multiplier of the latent model against the encoder (the "
            "stop-grad estimator assumes a faster predictor).",
        ),
    ] = 1.0,
    rendering: Annotated[
        str,
        typer.Option(
            help="circle-video: plain, half_flip (non-injective) or random_mlp (frozen random "
            "network) frames."
        ),
    ] = "plain",
    jump_probability: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="circle-video: chance per step of a random jump."),
    ] = 0.0,
    learning_rate: Annotated[
        float, typer.Option(min=0.0, help="videos: Adam's step size for the encoder.")
    ] = 1e-3,
    normalize_latents: Annotated[
        str,
        typer.Option(
            help="videos: the encoder's last layer: none, standardize (each latent over the batch) "
            "or whiten (the batch's covariance to the identity)."
        ),
    ] = "none",
    latent_dim: Annotated[
        int, typer.Option(min=1, help="videos: latent dimension L (kalman: also the state's).")
    ] = 2,
    frames: Annotated[
        int | None,
        typer.Option(
            min=2,
            help="videos: frames per sequence (circle-video 40; wobbly 20, as its radius "
            "diffuses out of the image on longer sequences).",
        ),
    ] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Seeds per configuration.")] = 3,
    steps: Annotated[
        int | None, typer.Option(min=1, help="Adam steps per run (pair: 2,000; videos: 3,000).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder (runs/ldm-DATA-MODEL).")] = None,
) -> None:
    """Latent distribution matching (paper 004).

    digits/pair: the twelve pair goals of Table 2 (plane/sphere x KDE/kNN/LogDet x with/without MI),
    linear-probe accuracy over seeds; finished runs are kept in OUT/NAME/seed-S.json, so an
    interrupted study resumes. circle-video|wobbly / kalman|lstm|cpc: a predictive encoder trained
    on videos, the R^2 of a linear probe from its filtered states (kalman), latents (lstm: the
    affine map of Theorem 1) or contexts (cpc) to the true position on held-out sequences, for
    kalman the coverage of its 95 % intervals, and an injectivity check of the encoder before and
    after training. Writes OUT/metrics.json and a table."""
    videos = ("circle-video", "wobbly")
    sequence_models = ("kalman", "lstm", "cpc")
    if (data, model) != ("digits", "pair") and not (data in videos and model in sequence_models):
        raise typer.BadParameter(
            f"--data {data} --model {model} is not available; choose --data digits --model pair, "
            "or --data circle-video|wobbly --model kalman|lstm|cpc",
            param_hint="--data/--model",
        )
    out = out if out is not None else Path(f"runs/ldm-{data}-{model}")
    try:
        if model == "pair":
            text = _pair_study(configuration, seeds, steps, out)
        else:
            options = {
                "alignment_every": alignment_every,
                "predictor_speedup": predictor_speedup,
                "predictor_steps": predictor_steps,
                "latent_normalization": normalize_latents,
                "rendering": rendering,
                "jump_probability": jump_probability,
                "latent_dim": latent_dim,
                "state_dim": latent_dim,
                "learning_rate": learning_rate,
            }
            if frames is not None:
                options["num_frames"] = frames
            elif data == "wobbly":
                options["num_frames"] = 20
            if data == "wobbly":
                options["pixel_noise"] = 0.0  # the paper's observation_noise for this system
            text = _sequence_study(data, model, entropy, noise_aware, options, seeds, steps, out)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    except KeyboardInterrupt:
        typer.echo("\ninterrupted; finished runs are kept. Run the same command to resume.")
        raise typer.Exit(130) from None
    typer.echo(text)
    typer.echo(f"written: {out / 'metrics.json'}")


def _pair_study(configuration, seeds, steps, out) -> str:
    from thermossl.ldm_pairs_study import PairStudyConfig, markdown_pair_table, run_pair_study

    names = None if configuration == "all" else [n.strip() for n in configuration.split(",")]
    config = PairStudyConfig() if steps is None else PairStudyConfig(steps=steps)
    result = run_pair_study(names, seeds, out, config)
    return markdown_pair_table(result["configurations"], result["baselines"])


def _sequence_study(data, model, entropy, noise_aware, options, seeds, steps, out) -> str:
    from thermossl.ldm_sequences import SequenceConfig, markdown_sequence_table, run_sequence_study

    if entropy not in ("knn", "stopgrad", "contrastive"):
        raise ValueError(f"--entropy must be knn, stopgrad or contrastive, got {entropy!r}")
    if entropy == "contrastive" and model != "kalman":
        raise ValueError("--entropy contrastive applies to --model kalman only")
    if model == "cpc" and entropy != "knn":
        raise ValueError("--entropy applies to --model kalman|lstm only")
    if model != "kalman" and noise_aware:
        raise ValueError("--noise-aware applies to --model kalman only")
    if steps is not None:
        options = {**options, "steps": steps}
    config = SequenceConfig(
        data=data,
        model="cpc" if model == "cpc" else f"{model}-{entropy}",
        noise_levels=(0.05, 0.5) if noise_aware else None,
        **options,
    )
    return markdown_sequence_table(run_sequence_study(config, seeds, out))


@app.command()
def thermo(
    method: Annotated[str, typer.Option(help="swav, sela, deepcluster, gedi or byol.")] = "swav",
    data: Annotated[str, typer.Option(help="moons, circles or digits.")] = "moons",
    seed: Annotated[int, typer.Option(help="Seed of the data, the networks and the run.")] = 0,
    cycles: Annotated[int, typer.Option(help="Training steps, one cycle each.")] = 2000,
    system_size: Annotated[
        int, typer.Option(help="Points of the system (the fixed batch), N.")
    ] = 256,
    learning_rate: Annotated[float, typer.Option(help="The optimizer's learning rate.")] = 1e-3,
    optimizer: Annotated[str, typer.Option(help="adam, or sgd (the demon of eq. 16).")] = "adam",
    fresh_batches: Annotated[
        bool, typer.Option(help="A new random batch each cycle instead of a fixed system.")
    ] = False,
    label_prior: Annotated[
        str | None,
        typer.Option(help="Declared label marginal of the heating, e.g. 0.8,0.2 (paper 000, §V)."),
    ] = None,
    class_proportions: Annotated[
        str | None,
        typer.Option(help="Draw the system with these class shares, e.g. 0.8,0.2 (imbalanced)."),
    ] = None,
    labelled_per_class: Annotated[
        int,
        typer.Option(help="swav/sela: pin this many system points per class to their label (§V)."),
    ] = 0,
    label_confidence: Annotated[
        float, typer.Option(help="The pinned points' mass on their label, in (0, 1).")
    ] = 0.9,
    out: Annotated[Path | None, typer.Option(help="Run folder (runs/thermo-METHOD-DATA).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out.")] = False,
) -> None:
    """Train with the cycle recorder (paper 000): cycles.csv, thermo_cycles.png, metrics.json
    with the method's measured class and temperature range."""
    from thermossl.thermo_study import ThermoConfig, run_thermo

    def shares(text: str | None, name: str) -> tuple[float, ...] | None:
        if text is None:
            return None
        try:
            return tuple(float(part) for part in text.split(","))
        except ValueError:
            raise typer.BadParameter(
                f"expected numbers separated by commas, got {text!r}", param_hint=name
            ) from None

    config = ThermoConfig(
        method=method,
        data=data,
        seed=seed,
        cycles=cycles,
        system_size=system_size,
        learning_rate=learning_rate,
        optimizer=optimizer,
        fresh_batches=fresh_batches,
        label_prior=shares(label_prior, "--label-prior"),
        class_proportions=shares(class_proportions, "--class-proportions"),
        labelled_per_class=labelled_per_class,
        label_confidence=label_confidence,
    )
    out = out or Path("runs") / f"thermo-{method}-{data}"
    try:
        metrics = run_thermo(config, out, resume=resume)
    except (ValueError, FileNotFoundError) as error:
        raise typer.BadParameter(str(error)) from error
    except KeyboardInterrupt:
        typer.echo("\ninterrupted; checkpoint saved. Continue with the same options and --resume")
        raise typer.Exit(130) from None
    low, high = metrics["temperature_range"]
    typer.echo(
        f"{method} on {data}: {metrics['description']}; measured T = 1/beta in [{low:.4g}, "
        f"{high:.4g}]; W_irr <= 0 in "
        + (
            "n/a (beta = 0)"
            if metrics["share_irreversible_work_nonpositive"] is None
            else f"{metrics['share_irreversible_work_nonpositive']:.1%}"
        )
        + f" of {metrics['cycles']} cycles; NMI {metrics['system_nmi']:.3f} on the system, "
        f"{metrics['test_nmi']:.3f} on the test set; files in {out}"
    )


@app.command()
def demon(
    methods: Annotated[str, typer.Option(help="Comma-separated methods.")] = "swav,gedi",
    data: Annotated[str, typer.Option(help="moons, circles or digits.")] = "moons",
    learning_rates: Annotated[
        str, typer.Option(help="Comma-separated SGD learning rates.")
    ] = "0.001,0.01,0.1,1,10",
    cycles: Annotated[int, typer.Option(help="SGD steps per rate.")] = 300,
    system_size: Annotated[int, typer.Option(help="Points of the system, N.")] = 256,
    seed: Annotated[int, typer.Option(help="Seed of the data and the initialization.")] = 0,
    out: Annotated[Path, typer.Option(help="Folder for demon.csv and demon.png.")] = Path(
        "runs/demon"
    ),
) -> None:
    """The learning demon (paper 000, eq. 15-17): the share of SGD steps with W_irr <= 0 against
    the learning rate."""
    from thermossl.thermo_study import run_demon_study

    try:
        rates = [float(rate) for rate in learning_rates.split(",") if rate.strip()]
        results = run_demon_study(
            [name.strip() for name in methods.split(",") if name.strip()],
            data,
            rates,
            out,
            cycles=cycles,
            seed=seed,
            system_size=system_size,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    typer.echo("| method | γ | share W_irr ≤ 0 | median W_irr | final loss |")
    typer.echo("|---|---|---|---|---|")
    for row in results:
        typer.echo(
            f"| {row['method']} | {row['learning_rate']:g} | {row['share_nonpositive']:.3f}"
            + (f" (diverged at step {row['cycles'] + 1})" if row["diverged"] else "")
            + " | "
            f"{row['median_irreversible_work']:.3g} | {row['final_loss']:.4g} |"
        )


# options shared by the equilibrium-surface commands (iso, transfer)
LambdaOption = Annotated[
    float, typer.Option("--lambda", help="Initial λ, the distortion's multiplier (> 0).")
]
GammaOption = Annotated[
    float, typer.Option(help="Initial γ, the classification's multiplier (> 0).")
]
InitialStepsOption = Annotated[
    int, typer.Option(help="Adam steps to reach the surface (and, for transfer, for scratch).")
]
LearningRateOption = Annotated[
    float, typer.Option(help="Adam's rate to reach the surface (/10 at 5/12 and 10/12).")
]
EquilibrationStepsOption = Annotated[
    int, typer.Option(help="Rise-and-anneal steps of each equilibration (and branch).")
]
PeakLearningRateOption = Annotated[
    float, typer.Option(help="The equilibration's (and fine-tuning's) peak learning rate.")
]
WeightDecayOption = Annotated[
    float, typer.Option(help="ε of the weight prior S = ε‖θ‖²/2 (0: paper 002's flat prior).")
]
SeedOption = Annotated[int, typer.Option(help="Seed of the networks, batches and noise.")]
ResumeOption = Annotated[bool, typer.Option(help="Continue the run in --out.")]


@app.command()
def iso(
    data: Annotated[str, typer.Option(help="digits (scikit-learn's bundled set).")] = "digits",
    lambda_: LambdaOption = 0.5,
    gamma: GammaOption = 5.0,
    steps: Annotated[int, typer.Option(help="Steps of the iso-classification process.")] = 20,
    alpha: Annotated[float, typer.Option(help="α, the process's time scale (eq. 31).")] = 3.0,
    initial_steps: InitialStepsOption = 25_000,
    learning_rate: LearningRateOption = 1e-2,
    equilibration_steps: EquilibrationStepsOption = 1000,
    peak_learning_rate: PeakLearningRateOption = 1.5e-2,
    weight_decay: WeightDecayOption = 1e-2,
    beta: Annotated[
        float | None,
        typer.Option(help="Keep G = C + R/β instead of C (Remark 8's process)."),
    ] = None,
    seed: SeedOption = 0,
    out: Annotated[Path, typer.Option(help="Run folder.")] = Path("runs/iso"),
    resume: ResumeOption = False,
) -> None:
    """The iso-classification process on the equilibrium surface (paper 002, Remark 7):
    path.csv (step, lambda, gamma, R, D, C), equilibration.csv, iso_path.png, metrics.json."""
    from thermossl.equilibrium_surface import SurfaceConfig, run_iso_classification

    if data != "digits":
        raise typer.BadParameter(f"only digits is available, got {data!r}", param_hint="--data")
    config = SurfaceConfig(
        lambda_=lambda_,
        gamma=gamma,
        steps=steps,
        alpha=alpha,
        initial_steps=initial_steps,
        learning_rate=learning_rate,
        equilibration_steps=equilibration_steps,
        peak_learning_rate=peak_learning_rate,
        weight_decay=weight_decay,
        beta=beta,
        seed=seed,
    )
    try:
        metrics = run_iso_classification(config, out, resume=resume)
    except (ValueError, FileNotFoundError) as error:
        raise typer.BadParameter(str(error)) from error
    start, end = metrics["start"], metrics["end"]
    typer.echo(
        f"(λ, γ): ({start['lambda']:.3f}, {start['gamma']:.3f}) -> ({end['lambda']:.3f}, "
        f"{end['gamma']:.3f}); C {start['C']:.4f} -> {end['C']:.4f} (largest change "
        f"{metrics['largest_relative_change_of_C']:.1%}); R {start['R']:.2f} -> {end['R']:.2f}; "
        f"D {start['D']:.2f} -> {end['D']:.2f}; files in {out}"
    )


def _slope_setting(text: str) -> float | str:
    """``--slope``: ``chord``, ``least-change`` or a number."""
    from thermossl.surface_transfer import SLOPE_CHOICES

    if text in SLOPE_CHOICES:
        return text
    try:
        return float(text)
    except ValueError:
        raise typer.BadParameter(
            f"expected a number or one of {', '.join(SLOPE_CHOICES)}, got {text!r}",
            param_hint="--slope",
        ) from None


@app.command()
def transfer(
    source: Annotated[
        str, typer.Option(help="Source digit classes: a range '0-4' or a list '0,1,2'.")
    ] = "0-4",
    target: Annotated[
        str, typer.Option(help="Target digit classes: a range '5-9' or a list '5,6,7'.")
    ] = "5-9",
    shared_outputs: Annotated[
        bool,
        typer.Option(
            "--shared-outputs/--separate-outputs",
            help="Number each task's classes by rank so both share K classifier outputs (as "
            "paper 002 does for CIFAR-10); needs equal class counts.",
        ),
    ] = True,
    lambda_: LambdaOption = 0.5,
    gamma: GammaOption = 5.0,
    steps: Annotated[int, typer.Option(help="Steps of t from 0 to 1 (Δt = 1/steps).")] = 10,
    initial_steps: InitialStepsOption = 25_000,
    equilibration_steps: EquilibrationStepsOption = 1000,
    peak_learning_rate: PeakLearningRateOption = 1.5e-2,
    learning_rate: LearningRateOption = 1e-2,
    weight_decay: WeightDecayOption = 1e-2,
    difference: Annotated[
        float, typer.Option(help="Finite-difference step relative to λ and γ.")
    ] = 0.05,
    time_difference: Annotated[
        float | None,
        typer.Option(help="Finite-difference step in t, in (0, 0.5]; default: one step, 1/steps."),
    ] = None,
    slope: Annotated[
        str,
        typer.Option(
            help="k = dD/dR of the straight path (eq. 30): 'chord' (to the target trained from "
            "scratch at the starting λ, γ), 'least-change' (at t = 0) or a number."
        ),
    ] = "chord",
    corrections: Annotated[
        int,
        typer.Option(
            help="Newton corrections per step back onto the line and C0 (0: eq. 30 alone, as "
            "in the paper)."
        ),
    ] = 4,
    tolerance: Annotated[
        float, typer.Option(help="Correct until |C/C0 - 1| is at most this.")
    ] = 0.02,
    line_tolerance: Annotated[
        float,
        typer.Option(help="... and until the distance from the line is at most this times D0."),
    ] = 0.02,
    max_relative_change: Annotated[
        float,
        typer.Option(
            help="Damp a step whose λ or γ would change by more than this share (0: off; "
            "not in the paper)."
        ),
    ] = 0.0,
    latent_dim: Annotated[int, typer.Option(help="Dimension of the representation z.")] = 6,
    hidden: Annotated[int, typer.Option(help="Width of the encoder and decoder.")] = 48,
    batch_size: Annotated[int, typer.Option(help="Minibatch size.")] = 256,
    evaluation_draws: Annotated[
        int, typer.Option(help="Noise draws per example when reading R, D, C.")
    ] = 4,
    seed: SeedOption = 0,
    allow_overlap: Annotated[
        bool, typer.Option(help="Allow source and target to share classes.")
    ] = False,
    out: Annotated[Path, typer.Option(help="Run folder.")] = Path("runs/transfer"),
    resume: ResumeOption = False,
    stop_after: Annotated[
        int | None, typer.Option(help="Stop after this many transfer steps (resumable).")
    ] = None,
) -> None:
    """Geodesic iso-classification transfer from the source classes to the target ones (paper
    002, §4.3, Fig. 5), a predictor (eq. 30) and corrector per step, against fine-tuning and
    training from scratch, every training with the weight prior ε‖θ‖²/2: path.csv (step, t,
    lambda, gamma, R, D, C, S, J, accuracy, ...), finetune.csv, transfer.png, metrics.json."""
    from thermossl.models.digit_tasks import parse_classes
    from thermossl.surface_transfer import TransferConfig
    from thermossl.surface_transfer_run import run_transfer

    classes = {}
    for name, text in (("source", source), ("target", target)):
        try:
            classes[name] = parse_classes(text)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint=f"--{name}") from error
    config = TransferConfig(
        source=classes["source"],
        target=classes["target"],
        shared_outputs=shared_outputs,
        lambda_=lambda_,
        gamma=gamma,
        steps=steps,
        initial_steps=initial_steps,
        equilibration_steps=equilibration_steps,
        peak_learning_rate=peak_learning_rate,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        difference=difference,
        time_difference=time_difference,
        slope=_slope_setting(slope),
        corrections=corrections,
        tolerance=tolerance,
        line_tolerance=line_tolerance,
        max_relative_change=max_relative_change or None,
        latent_dim=latent_dim,
        hidden=hidden,
        batch_size=batch_size,
        evaluation_draws=evaluation_draws,
        seed=seed,
        allow_overlap=allow_overlap,
    )
    try:
        config.validate()
        metrics = run_transfer(config, out, resume=resume, stop_after=stop_after)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        raise typer.BadParameter(str(error)) from error
    if metrics is None:
        typer.echo(f"stopped after {stop_after} transfer steps; continue with --resume (in {out})")
        return
    start, end = metrics["start"], metrics["end"]
    accuracy = metrics["final_target_accuracy"]
    typer.echo(
        f"t 0 -> 1: (λ, γ) ({start['lambda']:.3f}, {start['gamma']:.3f}) -> ({end['lambda']:.3f}, "
        f"{end['gamma']:.3f}); C {start['C']:.4f} -> {end['C']:.4f} (largest change "
        f"{metrics['largest_relative_change_of_C']:.1%}); R {start['R']:.2f} -> {end['R']:.2f}; "
        f"D {start['D']:.2f} -> {end['D']:.2f}; target accuracy: transfer "
        f"{accuracy['transfer']:.3f}, fine-tune {accuracy['finetune']:.3f}, scratch "
        f"{accuracy['scratch']:.3f}; files in {out}"
    )


@app.command("iso-figure")
def iso_figure_command(
    runs: Annotated[list[Path], typer.Argument(help="Folders of finished `thermossl iso` runs.")],
    out: Annotated[Path, typer.Option(help="The figure's file.")] = Path("iso_sweep.png"),
) -> None:
    """Overlay several iso-classification runs (paper 002, Figs. 2 and 4b): R-D paths,
    multipliers, C relative to its start (train and test), the free energy along each process."""
    from thermossl.equilibrium_figures import iso_sweep_figure
    from thermossl.runs import write_figure

    try:
        figure = iso_sweep_figure(runs)
    except (ValueError, FileNotFoundError) as error:
        raise typer.BadParameter(str(error)) from error
    write_figure(out, figure)
    typer.echo(f"wrote {out}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
