r"""Predictive LDM on videos: train a Kalman-LDM, recurrent-LDM or CPC encoder and read the
position back.

Training sequences and test sequences come from different seeds
(:func:`~thermossl.models.ldm_data.train_test_seeds`). After training, a linear probe (ordinary
least squares) maps the model's features of every frame to the dot's true position: the filtered
state :math:`m_t = \mathbb{E}[x_t \mid z_{1:t}]` for the Kalman model, the context :math:`c_t` for
CPC, the latent :math:`z_t` itself for the recurrent model (whose probe is the affine map of
Theorem 1). It is fitted on the training sequences and scored by :math:`R^2` on the test
sequences (LDM paper, §6.1: the reference notebooks report 0.96–0.99). Frames whose dot has left
the image (the wobbly system's radius diffuses; the renderer pins such dots to the border) carry
no information on the position and are left out of every evaluation; ``in_frame_fraction``
records how many remain.

Injectivity (§7.1, A.4.2) is checked on the encoder's latents of the test frames, before and after
training, by :func:`injectivity_check`: how often the nearest neighbour of a frame in latent space
is a distant true state.

For the Kalman model the filter also gives the law of the state, :math:`x_t \mid z_{1:t} \sim
N(m_t, P_t)`; pushed through the probe :math:`p = W m + b` it gives a 95 % interval per
coordinate, :math:`\hat p_{t,k} \pm 1.96\,(W P_t W^\top)_{kk}^{1/2}`, whose coverage of the true
positions on the test frames measures whether the filter's uncertainty is calibrated (the
noise-aware filtering experiment).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from thermossl._validation import check_positive, check_positive_integer
from thermossl.models.ldm_cpc import PredictiveCPC
from thermossl.models.ldm_data import (
    CIRCLE_RENDERINGS,
    POSITION_EXTENT,
    VideoData,
    circle_video,
    train_test_seeds,
    wobbly_system,
)
from thermossl.models.ldm_encoding import (
    LATENT_NORMALIZATIONS,
    PAPER_KNN_OPTIONS,
    BatchStandardize,
    BatchWhiten,
)
from thermossl.models.ldm_kalman import KalmanLDM
from thermossl.models.ldm_recurrent import RecurrentLDM
from thermossl.runs import (
    environment,
    read_json,
    setting_differences,
    write_figure,
    write_json,
)

__all__ = [
    "SEQUENCE_MODELS",
    "SequenceConfig",
    "alignment_figure",
    "entropy_gradient_alignment",
    "fit_sequence_model",
    "in_frame",
    "injectivity_check",
    "interval_coverage",
    "latent_figure",
    "linear_probe_r2",
    "make_sequence_model",
    "markdown_sequence_table",
    "run_sequence_study",
    "sequence_data",
    "train_sequence_model",
]

#: Models by name: the Kalman-LDM with each entropy estimator (``kalman-contrastive`` is CPC with
#: the Kalman predictive density as its critic), the recurrent (LSTM + MLP) LDM, and CPC with a GRU
#: context and a vMF critic.
SEQUENCE_MODELS = (
    "kalman-knn",
    "kalman-stopgrad",
    "kalman-contrastive",
    "lstm-knn",
    "lstm-stopgrad",
    "cpc",
)


@dataclass(frozen=True)
class SequenceConfig:
    """Settings of one predictive-LDM run.

    :ivar str data: ``"circle-video"`` or ``"wobbly"``.
    :ivar str model: one of :data:`SEQUENCE_MODELS`.
    :ivar int steps: Adam steps.
    :ivar int batch_size: sequences per step.
    :ivar int num_frames: frames per sequence.
    :ivar int train_sequences: sequences in the training set (redrawn from it every step).
    :ivar int test_sequences: held-out sequences for the probe.
    :ivar int latent_dim: :math:`L`.
    :ivar int state_dim: :math:`D` of the Kalman model (hidden states when :math:`D > L`).
    :ivar float learning_rate: Adam's step size.
    :ivar tuple noise_levels: per-frame pixel-noise range (noise-aware filtering), or ``None``.
    :ivar float pixel_noise: pixel-noise sd when ``noise_levels`` is ``None`` (the wobbly system
        of the paper has none: ``thermossl ldm --data wobbly`` sets 0).
    :ivar str rendering: circle-video frames: ``"plain"``, ``"half_flip"`` (a non-injective
        rendering) or ``"random_mlp"`` (a frozen random network; see
        :func:`~thermossl.models.ldm_data.circle_video`).
    :ivar float jump_probability: circle-video: probability per step of a jump to a random phase.
    :ivar int hidden: width of the encoder's two hidden layers.
    :ivar str latent_normalization: the encoder's last layer: ``"none"``, ``"standardize"``
        (:class:`~thermossl.models.ldm_encoding.BatchStandardize`) or ``"whiten"``
        (:class:`~thermossl.models.ldm_encoding.BatchWhiten`).
    :ivar int alignment_every: every this many steps (0: never), record the cosine similarity
        between the encoder gradients of the kNN entropy and of the stop-gradient plug-in entropy
        (paper 004, Fig. 4D); Kalman models only.
    :ivar float predictor_speedup: the latent model's parameters (everything but the encoder) learn
        this many times faster than the encoder. The stop-gradient estimator assumes a predictor
        that tracks the latents' conditional law on a faster timescale (paper 004, A.6.2).
    :ivar int predictor_steps: before each joint step, this many extra Adam steps of the latent
        model alone on the same batch (the encoder held fixed): the other way to a faster
        predictor.
    """

    data: str = "circle-video"
    model: str = "kalman-knn"
    steps: int = 3000
    batch_size: int = 32
    num_frames: int = 40
    train_sequences: int = 512
    test_sequences: int = 128
    latent_dim: int = 2
    state_dim: int = 2
    learning_rate: float = 1e-3
    noise_levels: tuple[float, float] | None = None
    pixel_noise: float = 0.1
    rendering: str = "plain"
    jump_probability: float = 0.0
    hidden: int = 200
    latent_normalization: str = "none"
    predictor_speedup: float = 1.0
    predictor_steps: int = 0
    alignment_every: int = 0

    def __post_init__(self):
        if self.data not in ("circle-video", "wobbly"):
            raise ValueError(f"data must be 'circle-video' or 'wobbly', got {self.data!r}")
        if self.model not in SEQUENCE_MODELS:
            raise ValueError(f"model must be one of {SEQUENCE_MODELS}, got {self.model!r}")
        for name in ("steps", "batch_size", "train_sequences", "test_sequences", "latent_dim"):
            check_positive_integer(name, getattr(self, name))
        check_positive_integer("state_dim", self.state_dim)
        check_positive("learning_rate", self.learning_rate)
        check_positive("predictor_speedup", self.predictor_speedup)
        if not isinstance(self.predictor_steps, int) or self.predictor_steps < 0:
            raise ValueError(
                f"predictor_steps must be an integer >= 0, got {self.predictor_steps!r}"
            )
        if self.rendering not in CIRCLE_RENDERINGS:
            raise ValueError(
                f"rendering must be one of {CIRCLE_RENDERINGS}, got {self.rendering!r}"
            )
        if not 0.0 <= self.jump_probability <= 1.0:
            raise ValueError(f"jump_probability must lie in [0, 1], got {self.jump_probability}")
        if self.data == "wobbly" and (self.rendering != "plain" or self.jump_probability):
            raise ValueError("rendering and jump_probability apply to data='circle-video' only")
        if self.latent_normalization not in LATENT_NORMALIZATIONS:
            raise ValueError(
                f"latent_normalization must be one of {LATENT_NORMALIZATIONS}, "
                f"got {self.latent_normalization!r}"
            )
        if self.num_frames < 2:
            raise ValueError(f"num_frames must be >= 2, got {self.num_frames}")


def sequence_data(config: SequenceConfig, seed: int = 0) -> tuple[VideoData, VideoData]:
    """Training and test videos of ``config.data``, from different seeds."""
    train_seed, test_seed = train_test_seeds(seed)
    sizes = (config.train_sequences, config.test_sequences)
    if config.data == "circle-video":
        options = {
            "pixel_noise": config.pixel_noise,
            "noise_levels": config.noise_levels,
            "rendering": config.rendering,
            "jump_probability": config.jump_probability,
        }
        return tuple(
            circle_video(count, config.num_frames, seed=s, **options)
            for count, s in zip(sizes, (train_seed, test_seed), strict=True)
        )
    return tuple(
        wobbly_system(count, config.num_frames, seed=s, pixel_noise=config.pixel_noise)
        for count, s in zip(sizes, (train_seed, test_seed), strict=True)
    )


def make_sequence_model(config: SequenceConfig, frame_size: int) -> nn.Module:
    """The encoder (an MLP on flattened frames) inside the configured program."""
    encoder = nn.Sequential(
        nn.Linear(frame_size, config.hidden),
        nn.ReLU(),
        nn.Linear(config.hidden, config.hidden),
        nn.ReLU(),
        nn.Linear(config.hidden, config.latent_dim),
    )
    if config.latent_normalization == "standardize":
        encoder.append(BatchStandardize())
    elif config.latent_normalization == "whiten":
        encoder.append(BatchWhiten())
    if config.model == "cpc":
        return PredictiveCPC(encoder, config.latent_dim, context_dim=32)
    if config.model.startswith("lstm-"):
        return RecurrentLDM(encoder, config.latent_dim, entropy=config.model.removeprefix("lstm-"))
    return KalmanLDM(
        encoder,
        config.latent_dim,
        state_dim=config.state_dim,
        entropy=config.model.removeprefix("kalman-"),
        entropy_options=PAPER_KNN_OPTIONS if config.model == "kalman-knn" else None,
        noise_aware=config.noise_levels is not None,
    )


def _bound(program: nn.Module, frames: Tensor, noise_level: Tensor, noise_aware: bool):
    if isinstance(program, KalmanLDM):
        return program.bound(frames, noise_level if noise_aware else None)
    return program.bound(frames)


def features(program: nn.Module, data: VideoData, noise_aware: bool):
    """Per-frame probe features ``[S, T, F]`` and, for the Kalman model, the filtered
    covariances ``[S, T, D, D]`` (``None`` otherwise)."""
    frames = data.flattened_frames
    with torch.no_grad():
        if isinstance(program, KalmanLDM):
            result = program.filter(frames, data.noise_level if noise_aware else None)
            return result.filtered_mean, result.filtered_covariance
        if isinstance(program, RecurrentLDM):
            return program.latents(frames), None
        return program.contexts(program.latents(frames)), None


def in_frame(positions: Tensor, size: int = 10) -> Tensor:
    """``[...]`` mask of the positions whose dot centre lies strictly inside a ``size`` × ``size``
    frame (outside, the renderer pins the dot to the border and the frame stops moving)."""
    centre = (positions + POSITION_EXTENT) * size / (2 * POSITION_EXTENT)
    return ((centre > 0) & (centre < size - 1)).all(dim=-1)


def injectivity_check(latents, states, threshold: float = 0.5) -> dict:
    r"""Whether distant true states map to nearby latents (paper 004, §7.1 and A.4.2).

    For every frame :math:`i`, find its nearest other frame :math:`j(i)` in latent space and
    measure the distance of their true states, :math:`d_i = \|s_i - s_{j(i)}\|`. An injective,
    continuous encoder keeps latent neighbours close in the true space (small :math:`d_i`); a
    folded one maps some distant states on top of each other.

    :param latents: ``[N, L]`` (or ``[..., L]``, flattened) encoder outputs.
    :param states: ``[N, 2]`` true states of the same frames.
    :param float threshold: a true distance counted as "distant" (the wobbly system's radius is
        about 1 and its wobble 0.5).
    :returns: ``folded_fraction`` (the fraction of frames with :math:`d_i >` ``threshold``),
        ``median_distance`` and ``max_distance`` of :math:`d_i`, and ``state_neighbour_median``
        (the median true distance to the nearest true state, the resolution of the sample).

    Example: the fold :math:`u = |s_1|` of a line sends :math:`\pm s_1` together::

        >>> s = torch.linspace(-1, 1, 201).unsqueeze(-1)
        >>> injectivity_check(s, s)["folded_fraction"]
        0.0
        >>> injectivity_check(s.abs(), s)["folded_fraction"] > 0.7
        True
    """
    u = np.asarray(latents, dtype=np.float64).reshape(-1, np.shape(latents)[-1])
    s = np.asarray(states, dtype=np.float64).reshape(-1, np.shape(states)[-1])
    if u.shape[0] != s.shape[0] or u.shape[0] < 2:
        raise ValueError(
            f"latents and states must hold the same number (>= 2) of frames, got {u.shape[0]} "
            f"and {s.shape[0]}"
        )
    check_positive("threshold", threshold)
    distance = np.linalg.norm(s - s[_nearest_other(u)], axis=-1)
    state_distance = np.linalg.norm(s - s[_nearest_other(s)], axis=-1)
    return {
        "folded_fraction": float((distance > threshold).mean()),
        "median_distance": float(np.median(distance)),
        "max_distance": float(distance.max()),
        "state_neighbour_median": float(np.median(state_distance)),
    }


def _nearest_other(points: np.ndarray) -> np.ndarray:
    """Index of each point's nearest *other* point (a duplicate may be listed before the point
    itself, so the point is removed by index, not by position in the list)."""
    from sklearn.neighbors import NearestNeighbors

    _, index = NearestNeighbors(n_neighbors=2).fit(points).kneighbors(points)
    own = np.arange(points.shape[0])
    return np.where(index[:, 0] == own, index[:, 1], index[:, 0])


def _encoder_check(program: nn.Module, data: VideoData, mask: Tensor, kept: int = 600):
    """:func:`injectivity_check` of the encoder on ``data``'s in-frame frames, and the latents of
    the first ``kept`` of them (for :func:`latent_figure`)."""
    with torch.no_grad():
        latents = program.latents(data.flattened_frames)[mask]
    return injectivity_check(latents, data.positions[mask]), latents[:kept].tolist()


def entropy_gradient_alignment(program: KalmanLDM, frames: Tensor) -> float:
    r"""Cosine similarity between the encoder gradients of two entropy estimates on one batch:
    the kNN estimate :math:`BT\,\hat H_{\mathrm{kNN}}` and the stop-gradient plug-in
    :math:`-\sum_t \log N(z_t;\, \mathrm{sg}(H\bar x_t), \mathrm{sg}(S_t))` (paper 004, Fig. 4D)."""
    from thermossl.objectives.entropy import knn_entropy

    parameters = list(program.encoder.parameters())
    z = program.latents(frames)
    knn = z.shape[0] * z.shape[1] * knn_entropy(z.reshape(-1, z.shape[-1]), **PAPER_KNN_OPTIONS)
    plugin = program.stopgrad_entropy(program.latent_law(*z.shape[:2], None), z)
    first = torch.cat(
        [g.flatten() for g in torch.autograd.grad(knn, parameters, retain_graph=True)]
    )
    second = torch.cat([g.flatten() for g in torch.autograd.grad(plugin, parameters)])
    return float(torch.nn.functional.cosine_similarity(first, second, dim=0))


def linear_probe_r2(train_features, train_targets, test_features, test_targets):
    """:math:`R^2` on the test set of an ordinary-least-squares probe fitted on the training set;
    also returns the probe's weights ``W`` ``[2, F]`` and the test predictions."""
    from sklearn.linear_model import LinearRegression
    from sklearn.metrics import r2_score

    x_train = np.asarray(train_features, dtype=np.float64).reshape(-1, train_features.shape[-1])
    y_train = np.asarray(train_targets, dtype=np.float64).reshape(-1, train_targets.shape[-1])
    x_test = np.asarray(test_features, dtype=np.float64).reshape(-1, test_features.shape[-1])
    y_test = np.asarray(test_targets, dtype=np.float64).reshape(-1, test_targets.shape[-1])
    probe = LinearRegression().fit(x_train, y_train)
    prediction = probe.predict(x_test)
    return float(r2_score(y_test, prediction)), probe.coef_, prediction


def interval_coverage(weights, predictions, covariances, targets, level_z: float = 1.959964):
    """Fraction of (frame, coordinate) pairs whose true value lies in
    :math:`\\hat p \\pm z\\,(W P W^\\top)^{1/2}_{kk}`."""
    W = torch.as_tensor(weights, dtype=torch.float64)
    P = covariances.to(torch.float64).reshape(-1, *covariances.shape[-2:])
    sd = torch.einsum("kd,nde,ke->nk", W, P, W).clamp_min(0).sqrt().numpy()
    y = np.asarray(targets, dtype=np.float64).reshape(-1, W.shape[0])
    return float((np.abs(y - predictions) <= level_z * sd).mean())


def fit_sequence_model(
    program: nn.Module, config: SequenceConfig, train: VideoData, seed: int = 0, progress=False
) -> tuple[list[dict], list[tuple[int, float]]]:
    """Adam on the program's derived bound over random batches of ``train``'s sequences.

    The encoder learns at ``config.learning_rate`` and the latent model ``predictor_speedup`` times
    faster; with ``predictor_steps`` > 0, each batch first gets that many steps of the latent model
    alone. Returns the bound's terms per frame at every step, and the gradient alignment where
    ``alignment_every`` asks for it.
    """
    noise_aware = config.noise_levels is not None
    encoder = list(program.encoder.parameters())
    predictor = [p for p in program.parameters() if all(p is not q for q in encoder)]
    optimizer = torch.optim.Adam(
        [
            {"params": encoder, "lr": config.learning_rate},
            {"params": predictor, "lr": config.learning_rate * config.predictor_speedup},
        ]
    )
    generator = torch.Generator().manual_seed(seed)
    history, alignment = [], []
    for step in tqdm(range(config.steps), disable=not progress, desc=config.model):
        index = torch.randperm(config.train_sequences, generator=generator)[: config.batch_size]
        batch = (train.flattened_frames[index], train.noise_level[index])
        frames = index.numel() * config.num_frames
        for _ in range(config.predictor_steps):  # the encoder's parameters get no gradient
            optimizer.zero_grad(set_to_none=True)
            (-_bound(program, *batch, noise_aware).total / frames).backward(inputs=predictor)
            optimizer.step()
        bound = _bound(program, *batch, noise_aware)
        loss = -bound.total / frames
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{config.model} diverged at step {step} (loss {float(loss)})")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append({name: float(v.detach()) / frames for name, v in bound.terms.items()})
        if (
            config.alignment_every
            and isinstance(program, KalmanLDM)
            and step % config.alignment_every == 0
        ):
            alignment.append(
                (step, entropy_gradient_alignment(program, train.flattened_frames[index]))
            )
    return history, alignment


def train_sequence_model(config: SequenceConfig, seed: int = 0, progress: bool = False) -> dict:
    """Train one configuration and evaluate it; returns the metrics (R², coverage, timings)."""
    train, test = sequence_data(config, seed)
    noise_aware = config.noise_levels is not None
    with torch.random.fork_rng():  # the initialization is seeded; the caller's stream is kept
        torch.manual_seed(seed)
        program = make_sequence_model(config, train.flattened_frames.shape[-1])
    train_mask, test_mask = in_frame(train.positions), in_frame(test.positions)
    injectivity_before, latents_before = _encoder_check(program, test, test_mask)
    start = time.perf_counter()
    history, alignment = fit_sequence_model(program, config, train, seed, progress)
    seconds = time.perf_counter() - start
    injectivity_after, latents_after = _encoder_check(program, test, test_mask)
    train_features, _ = features(program, train, noise_aware)
    test_features, test_covariances = features(program, test, noise_aware)
    r2, weights, prediction = linear_probe_r2(
        train_features[train_mask],
        train.positions[train_mask],
        test_features[test_mask],
        test.positions[test_mask],
    )
    metrics = {
        "config": asdict(config),
        "seed": seed,
        "r2": r2,
        "in_frame_fraction": float(test_mask.float().mean()),
        "injectivity_untrained": injectivity_before,
        "injectivity": injectivity_after,
        "latent_sample": {
            "positions": test.positions[test_mask][: len(latents_after)].tolist(),
            "untrained": latents_before,
            "trained": latents_after,
        },
        "seconds": seconds,
        "final_terms": {
            name: float(np.mean([row[name] for row in history[-50:]])) for name in history[-1]
        },
    }
    if alignment:
        metrics["gradient_alignment"] = alignment
    if test_covariances is not None:
        metrics["coverage_95"] = interval_coverage(
            weights, prediction, test_covariances[test_mask], test.positions[test_mask]
        )
    return metrics


def run_sequence_study(
    config: SequenceConfig, seeds: int, out: Path, progress: bool = True
) -> dict:
    """Train ``config`` for ``seeds`` seeds; each finished run is kept in ``OUT/seed-S.json``, so an
    interrupted study resumes. Writes ``OUT/metrics.json`` with the runs and their summary."""
    check_positive_integer("seeds", seeds)
    out = Path(out)
    settings = asdict(config)
    config_path = out / "config.json"
    if config_path.exists():
        # a setting added since the folder was written ran at its default
        defaults = json_ready(asdict(SequenceConfig()))
        previous = {**defaults, **read_json(config_path).get("settings", {})}
        if previous != json_ready(settings):
            differences = setting_differences(previous, json_ready(settings))
            raise ValueError(
                f"{out} holds a study with other settings ({differences}); use another --out"
            )
    write_json(config_path, {"settings": settings, "environment": environment()})
    runs = []
    for seed in range(seeds):
        path = out / f"seed-{seed}.json"
        if path.exists():
            runs.append(read_json(path))
            continue
        result = train_sequence_model(config, seed, progress)
        write_json(path, result)
        runs.append(result)
    summary = {"r2": _summary([run["r2"] for run in runs])}
    if "coverage_95" in runs[0]:
        summary["coverage_95"] = _summary([run["coverage_95"] for run in runs])
    for key, name in (
        ("injectivity_untrained", "folded_fraction_untrained"),
        ("injectivity", "folded_fraction"),
    ):
        if all(key in run for run in runs):  # runs kept from before the check have none
            summary[name] = _summary([run[key]["folded_fraction"] for run in runs])
    metrics = {"settings": settings, "summary": summary, "runs": runs}
    write_json(out / "metrics.json", metrics)
    if any("gradient_alignment" in run for run in runs):
        write_figure(out / "gradient_alignment.png", alignment_figure(runs))
    if "latent_sample" in runs[0]:
        write_figure(out / "latents.png", latent_figure(runs[0]))
    return metrics


def alignment_figure(runs: list[dict]):
    """Cosine similarity of the kNN and stop-gradient entropy gradients over training, per seed."""
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.0, 3.4))
    for run in runs:
        steps, cosines = zip(*run.get("gradient_alignment", []), strict=True)
        axis.plot(steps, cosines, marker=".", label=f"seed {run['seed']}")
    axis.axhline(0.0, color="grey", lw=0.8)
    axis.set_xlabel("training step")
    axis.set_ylabel("cosine similarity")
    axis.set_title("encoder gradients: kNN entropy vs stop-grad plug-in entropy", fontsize=10)
    axis.set_ylim(-1, 1)
    axis.legend(frameon=False)
    figure.tight_layout()
    return figure


def latent_figure(run: dict):
    """The true positions of test frames and the encoder's latents of the same frames before and
    after training, all coloured by the true angle (paper 004, Fig. 5C): an injective encoder
    keeps the colours in order, and an affine one keeps the shape."""
    import matplotlib.pyplot as plt

    sample = run["latent_sample"]
    positions = np.asarray(sample["positions"])
    angle = np.arctan2(positions[:, 1], positions[:, 0])
    panels = [
        ("true position", positions),
        ("latents, untrained encoder", np.asarray(sample["untrained"])),
        (f"latents after training (probe R² {run['r2']:.3f})", np.asarray(sample["trained"])),
    ]
    figure, axes = plt.subplots(1, 3, figsize=(10.5, 3.6))
    for axis, (title, points) in zip(axes, panels, strict=True):
        axis.scatter(points[:, 0], points[:, 1], c=angle, cmap="twilight", s=6, linewidths=0)
        axis.set_title(title, fontsize=9)
        axis.set_aspect("equal", adjustable="datalim")
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(
        f"{run['config']['data']}, {run['config']['model']}, seed {run['seed']}: colour = true angle",
        fontsize=10,
    )
    figure.tight_layout()
    return figure


def json_ready(settings: dict) -> dict:
    """``settings`` as they read back from JSON (tuples become lists)."""
    return {
        key: list(value) if isinstance(value, tuple) else value for key, value in settings.items()
    }


def _summary(values: list[float]) -> dict:
    values = np.asarray(values, dtype=float)
    sd = float(values.std(ddof=1)) if values.size > 1 else float("nan")
    return {
        "mean": float(values.mean()),
        "sd": sd,
        "min": float(values.min()),
        "values": values.tolist(),
    }


def markdown_sequence_table(metrics: dict) -> str:
    """One row: data, model, probe R², (Kalman) 95 % interval coverage and the folded fraction of
    :func:`injectivity_check` before → after training, over the seeds."""
    settings, summary = metrics["settings"], metrics["summary"]

    def cell(name: str) -> str:
        if name not in summary:
            return "—"
        row = summary[name]
        spread = "" if np.isnan(row["sd"]) else f" ± {row['sd']:.3f}"
        return f"{row['mean']:.3f}{spread} (min {row['min']:.3f})"

    noise = settings["noise_levels"]
    data = settings["data"]
    if settings.get("rendering", "plain") != "plain":
        data += f", {settings['rendering']} frames"
    if settings.get("jump_probability", 0.0):
        data += f", jumps p = {settings['jump_probability']:g}"
    lines = [
        "| data | model | pixel noise | probe R² (test) | 95 % interval coverage "
        "| folded fraction, untrained → trained | seeds |",
        "|---|---|---|---|---|---|---|",
        f"| {data} | {settings['model']} | "
        f"{f'{noise[0]}–{noise[1]} per frame' if noise else settings['pixel_noise']} | "
        f"{cell('r2')} | {cell('coverage_95')} | "
        f"{cell('folded_fraction_untrained')} → {cell('folded_fraction')} | "
        f"{len(metrics['runs'])} |",
    ]
    return "\n".join(lines)
