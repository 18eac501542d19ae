r"""Embedded data processes of the latent-distribution-matching experiments (paper 004).

Mikulasch & Zenke, *Understanding self-supervised learning via latent distribution matching*:

* :func:`circle_video` — §6.1 (Fig. 4, Fig. A3–A4; Appendix B, "Learning of a simple dynamical
  system with Kalman-based SSL"): a Gaussian dot moving on the unit circle, 10×10 frames, for the
  Kalman-predictive LDM model; variants with a discontinuous (``"half_flip"``) or random-network
  (``"random_mlp"``) rendering, random jumps, and a per-frame pixel-noise level for noise-aware
  filtering;
* :func:`wobbly_system` — §7.1, eq. 16 (Fig. 5; Appendix B, "Nonlinear systems identification"):
  a nonlinear "wobbly" rotation integrated by RK4, rendered as a dot and swirled;
* :func:`augmented_digit_pairs` — two random augmentations of each of scikit-learn's bundled 8×8
  digits, for the pair (two-view) LDM experiments of §5.

Everything is generated here (nothing is downloaded) from an explicit ``seed`` through
:func:`numpy.random.default_rng`; the global random states of NumPy and torch are never read or
written, and one seed reproduces bit-identical tensors. Train and test sets must come from
different seeds: :func:`train_test_seeds` gives the pair ``(2·seed, 2·seed + 1)`` (the convention
of :func:`thermossl.models.datasets.load_dataset`), so no two study seeds share a sequence.

**Rendering** (restored facts of paper 004; the authors' ``dot_motion.py`` in
``fmi-basel/latent_distribution_matching``). A position :math:`p = (p_1, p_2) \in [-3, 3]^2`
becomes a dot of width one pixel centred at the pixel coordinate

.. math::

    (u, v) = \operatorname{clip}\big((p + 3) \cdot \tfrac{\text{size}}{6},\ 0,\ \text{size} - 1\big),
    \qquad
    \text{frame}[i, j] = \exp\!\Big(-\frac{(i - u)^2 + (j - v)^2}{2 \sigma^2}\Big), \quad \sigma = 1,

so the first coordinate of a position is the frame's *row* index ``i`` and the second its column
``j`` (``frame[i, j]``, as ``torch.meshgrid(..., indexing="ij")`` in the reference). Positions
beyond :math:`[-3, 3]` pin the dot to the frame's edge, as the reference clamps; only the wobbly
system travels that far. Pixel noise :math:`\sigma_t\, \xi`, :math:`\xi \sim N(0, 1)` i.i.d. per
pixel, is added to the rendered frame. :func:`render_frames` gives the noise-free frames.

.. note::
    Noise amounts here are **standard deviations** (``pixel_noise``, ``position_noise``,
    ``noise_levels``), except ``process_noise_variance``. The reference's configuration files
    give *variances* (``observation_noise: 0.15`` there is ``pixel_noise = sqrt(0.15) ≈ 0.39``
    here; its circular ``prediction_noise: 0.05`` is ``position_noise ≈ 0.22``).
"""

from __future__ import annotations

import math
from functools import lru_cache
from numbers import Real
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from thermossl._validation import check_positive, check_positive_integer

__all__ = [
    "CIRCLE_RENDERINGS",
    "DOT_WIDTH",
    "RANDOM_MLP_WIDTH",
    "RENDERINGS",
    "SPLITS",
    "DigitPairs",
    "VideoData",
    "augmented_digit_pairs",
    "circle_video",
    "render_frames",
    "train_test_seeds",
    "wobbly_system",
]

#: Width :math:`\sigma` of the Gaussian dot, in pixels.
DOT_WIDTH = 1.0
#: Half the side of the square of positions that the frame shows: :math:`[-3, 3]^2`.
POSITION_EXTENT = 3.0
#: Renderings of :func:`render_frames`.
RENDERINGS = ("plain", "half_flip", "random_mlp", "swirl")
#: Renderings of :func:`circle_video` (the paper's §6.1 variants; ``"swirl"`` works too).
CIRCLE_RENDERINGS = ("plain", "half_flip", "random_mlp")
#: Hidden width of the frozen random rendering network (``rendering="random_mlp"``).
RANDOM_MLP_WIDTH = 5
#: Negative slope of its leaky ReLUs (PyTorch's default).
RANDOM_MLP_SLOPE = 0.01
#: Splits of :func:`augmented_digit_pairs`.
SPLITS = ("train", "test")
#: Side of a scikit-learn digit image.
DIGIT_SIZE = 8


class VideoData(NamedTuple):
    """Synthetic videos with their latent truth.

    :ivar Tensor frames: ``[S, T, size, size]``, frame ``t`` of sequence ``s`` (``frame[i, j]``:
        row ``i`` follows the position's first coordinate); :attr:`flattened_frames` gives
        ``[S, T, size * size]`` for an MLP encoder.
    :ivar Tensor positions: ``[S, T, 2]``, the true latent position (Cartesian).
    :ivar Tensor noise_level: ``[S, T]``, the standard deviation of the pixel noise of each frame.
    :ivar Tensor jumps: ``[S, T]`` booleans, ``True`` where the position jumped at that step
        (always ``False`` at ``t = 0`` and for the wobbly system).
    """

    frames: Tensor
    positions: Tensor
    noise_level: Tensor
    jumps: Tensor

    @property
    def flattened_frames(self) -> Tensor:
        """The frames as vectors, ``[S, T, size * size]`` (a view)."""
        return self.frames.flatten(-2)


class DigitPairs(NamedTuple):
    """Two augmented views of each digit of one split, the clean images and the labels.

    :ivar Tensor x1: ``[N, 64]``, first augmentation (an 8×8 image, row-major, in [0, 1]).
    :ivar Tensor x2: ``[N, 64]``, second, independent augmentation of the same images.
    :ivar Tensor clean: ``[N, 64]``, the un-augmented images (for linear probing).
    :ivar Tensor labels: ``[N]`` (int64), the digit classes 0–9.
    """

    x1: Tensor
    x2: Tensor
    clean: Tensor
    labels: Tensor


def train_test_seeds(seed: int) -> tuple[int, int]:
    """Seeds of a study's training and test sets, ``(2·seed, 2·seed + 1)``.

    Distinct study seeds never share a generator seed, and training and test sequences are
    independent draws.

    :param int seed: the study's seed (a non-negative integer).

    Example::

        >>> train_seed, test_seed = train_test_seeds(3)
        >>> train_seed, test_seed
        (6, 7)
        >>> train = circle_video(4, 10, seed=train_seed)
        >>> test = circle_video(4, 10, seed=test_seed)
    """
    _check_seed("seed", seed)
    return 2 * seed, 2 * seed + 1


# ----------------------------------------------------------------------------------- checks


def _check_seed(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def _as_number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        return math.nan
    return float(value)


def _check_non_negative(name: str, value: object) -> None:
    number = _as_number(value)
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _check_finite(name: str, value: object) -> None:
    if not math.isfinite(_as_number(value)):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")


def _check_probability(name: str, value: object) -> None:
    number = _as_number(value)
    if not (0.0 <= number <= 1.0):
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")


def _check_interval(name: str, value: object, *, minimum: float = 0.0) -> tuple[float, float]:
    """A pair ``(low, high)`` of finite numbers with ``minimum <= low <= high``."""
    try:
        low, high = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high), got {value!r}") from None
    low, high = _as_number(low), _as_number(high)
    if not (math.isfinite(low) and math.isfinite(high) and minimum <= low <= high):
        raise ValueError(
            f"{name} must be a pair (low, high) of finite numbers with {minimum:g} <= low <= high, "
            f"got {value!r}"
        )
    return low, high


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


def _check_dtype(dtype: object) -> None:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")


# -------------------------------------------------------------------------------- rendering


def _dots(positions: np.ndarray, size: int) -> np.ndarray:
    """Noise-free dot frames ``[..., size, size]`` of positions ``[..., 2]`` (float64)."""
    centre = np.clip((positions + POSITION_EXTENT) * size / (2 * POSITION_EXTENT), 0, size - 1)
    grid = np.arange(size, dtype=np.float64)
    # The Gaussian factorizes over rows and columns.
    rows = np.exp(-0.5 * ((grid - centre[..., 0:1]) / DOT_WIDTH) ** 2)
    columns = np.exp(-0.5 * ((grid - centre[..., 1:2]) / DOT_WIDTH) ** 2)
    return rows[..., :, None] * columns[..., None, :]


def _half_flip(positions: np.ndarray) -> np.ndarray:
    """Mirror the second coordinate where the first is positive (the reference's ``half_flip``)."""
    flipped = positions.copy()
    lower_half = flipped[..., 0] > 0
    flipped[..., 1] = np.where(lower_half, -flipped[..., 1], flipped[..., 1])
    return flipped


def _orthogonal(rng: np.random.Generator, rows: int, columns: int) -> np.ndarray:
    """A random matrix with orthonormal columns (or rows), as ``torch.nn.init.orthogonal_``."""
    gaussian = rng.standard_normal((rows, columns))
    if rows < columns:
        gaussian = gaussian.T
    q, r = np.linalg.qr(gaussian)
    q = q * np.sign(np.diag(r))
    return q.T if rows < columns else q


@lru_cache(maxsize=8)
def _random_mlp(size: int, seed: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Frozen weights ``((W, b), ...)`` of the random rendering network (last ``b`` is zero)."""
    rng = np.random.default_rng(seed)
    layers = []
    fan_in = 2
    for _ in range(4):
        weight = _orthogonal(rng, RANDOM_MLP_WIDTH, fan_in)
        bound = 1.0 / math.sqrt(fan_in)
        layers.append((weight, rng.uniform(-bound, bound, RANDOM_MLP_WIDTH)))
        fan_in = RANDOM_MLP_WIDTH
    bound = 1.0 / math.sqrt(fan_in)
    readout = rng.uniform(-bound, bound, (size * size, fan_in))
    layers.append((readout, np.zeros(size * size)))
    for weight, bias in layers:
        weight.setflags(write=False)
        bias.setflags(write=False)
    return tuple(layers)


def _apply_random_mlp(positions: np.ndarray, size: int, seed: int) -> np.ndarray:
    hidden = positions
    *layers, (readout, _) = _random_mlp(size, seed)
    for weight, bias in layers:
        hidden = hidden @ weight.T + bias
        hidden = np.where(hidden > 0, hidden, RANDOM_MLP_SLOPE * hidden)
    return (hidden @ readout.T).reshape(*positions.shape[:-1], size, size)


@lru_cache(maxsize=8)
def _swirl_matrix(size: int, strength: float, radius: float) -> np.ndarray:
    """The swirl as a ``[size², size²]`` matrix, column ``k`` the swirl of the ``k``-th pixel.

    ``skimage.transform.swirl`` with its defaults (bilinear interpolation, ``mode="reflect"``,
    output clipped to the input's range, which bilinear weights never leave) is linear in the
    image, so one matrix product swirls a whole batch.
    """
    from skimage.transform import swirl

    basis = np.eye(size * size).reshape(-1, size, size)
    columns = [swirl(image, strength=strength, radius=radius).ravel() for image in basis]
    matrix = np.stack(columns, axis=1)
    matrix.setflags(write=False)
    return matrix


def _render(
    positions: np.ndarray,
    rendering: str,
    size: int,
    mlp_seed: int,
    swirl_strength: float,
    swirl_radius: float,
) -> np.ndarray:
    if rendering == "random_mlp":
        return _apply_random_mlp(positions, size, mlp_seed)
    if rendering == "half_flip":
        positions = _half_flip(positions)
    frames = _dots(positions, size)
    if rendering == "swirl":
        matrix = _swirl_matrix(size, float(swirl_strength), float(swirl_radius))
        flat = frames.reshape(-1, size * size) @ matrix.T
        frames = flat.reshape(frames.shape)
    return frames


def render_frames(
    positions: Tensor,
    rendering: str = "plain",
    *,
    size: int = 10,
    mlp_seed: int = 0,
    swirl_strength: float = 10.0,
    swirl_radius: float = 200.0,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    r"""Noise-free frames ``[..., size, size]`` of positions ``[..., 2]``.

    * ``"plain"``: the Gaussian dot of the module docstring.
    * ``"half_flip"``: the dot of the position with its second coordinate mirrored wherever the
      first is positive, :math:`(p_1, p_2) \mapsto (p_1, -p_2)` for :math:`p_1 > 0`: the lower half
      of the frame (rows below the centre) is flipped left–right, a discontinuous but injective
      rendering (the reference's ``half_flip``).
    * ``"random_mlp"``: a frozen random network, not a dot: ``Linear(2, 5)`` → LeakyReLU →
      3 × (``Linear(5, 5)`` → LeakyReLU) → ``Linear(5, size², bias=False)`` reshaped to
      ``size × size`` (the reference's ``random`` post-processing). The four hidden weights are
      random orthogonal matrices (orthonormal columns for the first), the biases uniform in
      :math:`\pm 1/\sqrt{\text{fan-in}}`, the readout uniform in :math:`\pm 1/\sqrt 5` (PyTorch's
      default ``Linear`` law), all drawn from ``numpy.random.default_rng(mlp_seed)``. Each layer is
      injective, so the rendering is an injective nonlinear map of the position (onto a
      2-manifold of a 5-dimensional subspace of pixel space), though poorly conditioned where
      many units are in the leaky regime (Jacobian singular values down to
      :math:`0.01^4` times the readout's).
    * ``"swirl"``: the plain dot passed through ``skimage.transform.swirl(frame,
      strength=swirl_strength, radius=swirl_radius)`` (centre of the frame, other arguments at
      their defaults), as in §7.1.

    :param Tensor positions: ``[..., 2]`` positions (any real dtype; computed in float64).
    :param str rendering: one of :data:`RENDERINGS`.
    :param int size: frame side in pixels.
    :param int mlp_seed: seed of the random network (``"random_mlp"`` only).
    :param float swirl_strength: ``strength`` of the swirl (``"swirl"`` only).
    :param float swirl_radius: ``radius`` of the swirl (``"swirl"`` only).
    :param torch.dtype dtype: floating dtype of the result.
    :raises ValueError: for an unknown rendering or bad sizes.

    Example::

        >>> frame = render_frames(torch.tensor([0.0, 0.0]))
        >>> frame.shape, frame[5, 5].item()
        (torch.Size([10, 10]), 1.0)
    """
    _check_choice("rendering", rendering, RENDERINGS)
    check_positive_integer("size", size)
    _check_seed("mlp_seed", mlp_seed)
    _check_finite("swirl_strength", swirl_strength)
    check_positive("swirl_radius", swirl_radius)
    _check_dtype(dtype)
    array = np.asarray(torch.as_tensor(positions).detach().cpu(), dtype=np.float64)
    if array.ndim < 1 or array.shape[-1] != 2:
        raise ValueError(f"positions must have shape [..., 2], got {tuple(array.shape)}")
    frames = _render(array, rendering, size, mlp_seed, swirl_strength, swirl_radius)
    return torch.from_numpy(frames).to(dtype)


def _noisy_frames(
    positions: np.ndarray,
    noise_level: np.ndarray,
    rng: np.random.Generator,
    render: dict,
    dtype: torch.dtype,
) -> Tensor:
    """Render ``[S, T, 2]`` positions frame by frame and add the pixel noise, into ``dtype``."""
    num_sequences, num_frames, _ = positions.shape
    size = render["size"]
    frames = torch.empty(num_sequences, num_frames, size, size, dtype=dtype)
    noisy = bool((noise_level > 0).any())
    for t in range(num_frames):
        frame = _render(positions[:, t], **render)
        if noisy:
            pixel_noise = rng.standard_normal((num_sequences, size, size))
            frame = frame + noise_level[:, t, None, None] * pixel_noise
        frames[:, t] = torch.from_numpy(frame)
    return frames


def _video(
    positions: np.ndarray, noise_level: np.ndarray, jumps: np.ndarray, frames: Tensor
) -> VideoData:
    dtype = frames.dtype
    return VideoData(
        frames,
        torch.from_numpy(positions).to(dtype),
        torch.from_numpy(noise_level).to(dtype),
        torch.from_numpy(jumps),
    )


# ------------------------------------------------------------------------------ circle video


def _rotation(angle: float) -> np.ndarray:
    return np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])


def circle_video(
    num_sequences: int,
    num_frames: int,
    seed: int = 0,
    *,
    frames_per_revolution: float = 20.0,
    pixel_noise: float = 0.1,
    rendering: str = "plain",
    jump_probability: float = 0.0,
    jump_angle: float | None = None,
    noise_levels: tuple[float, float] | None = None,
    position_noise: float = 0.05,
    size: int = 10,
    mlp_seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> VideoData:
    r"""Videos of a dot in circular motion, the filtering problem of §6.1 (Fig. 4, A3, A4).

    A position :math:`z_t` on the unit circle advances by :math:`\omega = 2\pi /
    \text{frames\_per\_revolution}` per frame, with isotropic position noise before the
    renormalization:

    .. math::

        \tilde z_t = R(\omega)\, z_{t-1} + s\, \varepsilon_t, \qquad
        z_t = \tilde z_t / \lVert \tilde z_t \rVert, \qquad
        \varepsilon_t \sim N(0, I_2),

    :math:`R(\omega)` the rotation by :math:`\omega` and :math:`s` = ``position_noise``; the
    phase increments are i.i.d. with mean exactly :math:`\omega` (the angular noise is symmetric)
    and standard deviation :math:`\approx s`. The initial phase is uniform on :math:`[0, 2\pi)`,
    independently per sequence (the reference starts every sequence at :math:`(1, 0)`). With
    probability ``jump_probability``, independently at each step :math:`t \ge 1`, the dot then
    jumps: to a uniform random phase (``jump_angle=None``), or by a fixed rotation
    :math:`z_t \leftarrow R(\text{jump\_angle})\, z_t` (the reference's jumps are
    ``jump_angle = 3π/4``); :attr:`VideoData.jumps` marks those steps.

    The radius is 1, as in the reference: at ``size = 10`` the dot's centre stays within pixel
    coordinates :math:`[3.3, 6.7]`, well inside the frame. Frames are rendered by
    :func:`render_frames` (``rendering``) and get pixel noise of standard deviation
    ``pixel_noise``, or, when ``noise_levels = (low, high)`` is given, of a per-frame standard
    deviation :math:`\sigma_{s,t} \sim U[\text{low}, \text{high}]` (i.i.d. over frames, overriding
    ``pixel_noise``) for noise-aware filtering, where the model reads :attr:`VideoData.noise_level`
    to set its observation covariance. (The reference's law is a shifted exponential on the
    *variance*, :math:`\max(0, E - 0.3\,m)`, :math:`E \sim \mathrm{Exp}(\text{mean } m = 0.3)`; a
    uniform range is easier to state and to test.)

    Appendix B: 800–6,400 training sequences of 100 frames at 20 frames per revolution; no
    position noise in Fig. 4 (``position_noise=0``), variance 0.05 in Fig. A4.

    :param int num_sequences: number of sequences ``S``.
    :param int num_frames: frames per sequence ``T``.
    :param int seed: seed of the sequences (see :func:`train_test_seeds`).
    :param float frames_per_revolution: frames per turn (period / dt; 2.0 / 0.1 in the paper).
    :param float pixel_noise: standard deviation of the pixel noise (ignored with
        ``noise_levels``).
    :param str rendering: one of :data:`CIRCLE_RENDERINGS` (or ``"swirl"``).
    :param float jump_probability: per-step jump probability, in [0, 1].
    :param jump_angle: ``None`` (jump to a uniform phase) or the fixed jump rotation in radians.
    :param noise_levels: ``None`` or ``(low, high)``, the range of the per-frame noise standard
        deviation, ``0 <= low <= high``.
    :param float position_noise: standard deviation :math:`s` of the position noise.
    :param int size: frame side in pixels.
    :param int mlp_seed: seed of the random rendering network, independent of ``seed`` so that
        training and test sets share one renderer.
    :param torch.dtype dtype: floating dtype of the tensors (generation runs in float64).
    :raises ValueError: naming the argument, for non-positive counts, negative noise, an unknown
        rendering, a probability outside [0, 1] or ``noise_levels`` not ``(low <= high)``.

    Example::

        >>> video = circle_video(num_sequences=4, num_frames=30, seed=0)
        >>> video.frames.shape, video.positions.shape, video.noise_level.shape
        (torch.Size([4, 30, 10, 10]), torch.Size([4, 30, 2]), torch.Size([4, 30]))
        >>> bool(torch.allclose(video.positions.norm(dim=-1), torch.ones(4, 30)))
        True
        >>> video.flattened_frames.shape
        torch.Size([4, 30, 100])
    """
    check_positive_integer("num_sequences", num_sequences)
    check_positive_integer("num_frames", num_frames)
    _check_seed("seed", seed)
    check_positive("frames_per_revolution", frames_per_revolution)
    _check_non_negative("pixel_noise", pixel_noise)
    _check_choice("rendering", rendering, RENDERINGS)
    _check_probability("jump_probability", jump_probability)
    if jump_angle is not None:
        _check_finite("jump_angle", jump_angle)
    if noise_levels is not None:
        noise_levels = _check_interval("noise_levels", noise_levels)
    _check_non_negative("position_noise", position_noise)
    check_positive_integer("size", size)
    _check_seed("mlp_seed", mlp_seed)
    _check_dtype(dtype)

    rng = np.random.default_rng(seed)
    steps = num_frames - 1
    initial_phase = rng.uniform(0.0, 2 * math.pi, num_sequences)
    position_steps = position_noise * rng.standard_normal((num_sequences, steps, 2))
    jumps = np.zeros((num_sequences, num_frames), dtype=bool)
    jumps[:, 1:] = rng.random((num_sequences, steps)) < jump_probability
    jump_phase = rng.uniform(0.0, 2 * math.pi, (num_sequences, steps))
    if noise_levels is None:
        noise_level = np.full((num_sequences, num_frames), float(pixel_noise))
    else:
        noise_level = rng.uniform(*noise_levels, (num_sequences, num_frames))

    rotation = _rotation(2 * math.pi / frames_per_revolution)
    jump_rotation = None if jump_angle is None else _rotation(float(jump_angle))
    positions = np.empty((num_sequences, num_frames, 2))
    positions[:, 0] = np.stack([np.cos(initial_phase), np.sin(initial_phase)], axis=-1)
    for t in range(1, num_frames):
        z = positions[:, t - 1] @ rotation.T + position_steps[:, t - 1]
        z = z / np.linalg.norm(z, axis=-1, keepdims=True)
        if jump_rotation is None:
            phase = jump_phase[:, t - 1]
            jumped = np.stack([np.cos(phase), np.sin(phase)], axis=-1)
        else:
            jumped = z @ jump_rotation.T
        positions[:, t] = np.where(jumps[:, t, None], jumped, z)

    render = {
        "rendering": rendering,
        "size": size,
        "mlp_seed": mlp_seed,
        "swirl_strength": 10.0,
        "swirl_radius": 200.0,
    }
    frames = _noisy_frames(positions, noise_level, rng, render, dtype)
    return _video(positions, noise_level, jumps, frames)


# ---------------------------------------------------------------------------- wobbly system


def _wobbly_field(z: np.ndarray, a: float, k: float, theta0: float) -> np.ndarray:
    """Eq. 16 in Cartesian coordinates: :math:`\\dot r\\,(\\cos θ, \\sin θ) + r\\,(-\\sin θ, \\cos θ)`."""
    r = np.hypot(z[..., 0], z[..., 1])
    theta = np.arctan2(z[..., 1], z[..., 0])
    r_dot = a * k * np.cos(k * (theta - theta0))
    cos, sin = np.cos(theta), np.sin(theta)
    return np.stack([r_dot * cos - r * sin, r_dot * sin + r * cos], axis=-1)


def _rk4_step(z: np.ndarray, dt: float, a: float, k: float, theta0: float) -> np.ndarray:
    k1 = _wobbly_field(z, a, k, theta0)
    k2 = _wobbly_field(z + dt / 2 * k1, a, k, theta0)
    k3 = _wobbly_field(z + dt / 2 * k2, a, k, theta0)
    k4 = _wobbly_field(z + dt * k3, a, k, theta0)
    return z + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def wobbly_system(
    num_sequences: int,
    num_frames: int,
    seed: int = 0,
    *,
    a: float = 0.5,
    k: float = 4.0,
    theta0: float = -3 * math.pi / 8,
    dt: float = 0.3,
    process_noise_variance: float = 0.1,
    swirl_strength: float = 10.0,
    swirl_radius: float = 200.0,
    size: int = 10,
    pixel_noise: float = 0.0,
    dtype: torch.dtype = torch.float32,
) -> VideoData:
    r"""Videos of the nonlinear "wobbly" system of §7.1 (eq. 16, Fig. 5), swirled.

    In polar coordinates :math:`z = r (\cos\theta, \sin\theta)` the drift is

    .. math::

        \frac{dr}{dt} = a\, k \cos\big(k (\theta - \theta_0)\big), \qquad
        \frac{d\theta}{dt} = 1,

    a rotation whose radius wobbles :math:`k` times per turn. As in the authors' code the state
    is the Cartesian position :math:`z`, advanced by one classical Runge–Kutta (RK4) step of
    length :math:`\Delta t` = ``dt`` of the same flow written in Cartesian coordinates,
    :math:`\dot z = \dot r (\cos\theta, \sin\theta) + r (-\sin\theta, \cos\theta)`, plus Gaussian
    process noise of variance :math:`q` = ``process_noise_variance`` on each Cartesian
    coordinate (the paper's "Gaussian distributed random variables" of eq. 16):

    .. math::

        z_{t+1} = \mathrm{RK4}_{\Delta t}(z_t) + \sqrt{q}\, \varepsilon_t, \qquad
        \varepsilon_t \sim N(0, I_2), \qquad
        z_0 = \eta / \lVert \eta \rVert, \ \eta \sim N(0, I_2),

    the initial state uniform on the unit circle. The noise has no restoring force on the radius,
    which therefore diffuses (by about :math:`\sqrt{q\,t}` per coordinate after :math:`t` steps):
    long sequences carry the dot past the frame's edge, where it stays pinned in the frame while
    :attr:`VideoData.positions` keeps the true state (the reference's 100-frame sequences do the
    same). Frames: the plain dot of :func:`render_frames` (10×10, as in the paper's configuration)
    passed through ``skimage.transform.swirl(frame, strength=10, radius=200)``, then pixel noise
    (none in the paper: ``observation_noise: 0.0``).

    Appendix B: 10,000 training sequences of 100 frames.

    :param int num_sequences: number of sequences ``S``.
    :param int num_frames: frames per sequence ``T``.
    :param int seed: seed of the sequences (see :func:`train_test_seeds`).
    :param float a: wobble amplitude :math:`a`.
    :param float k: wobbles per turn :math:`k`.
    :param float theta0: wobble phase :math:`\theta_0`.
    :param float dt: RK4 step :math:`\Delta t` per frame.
    :param float process_noise_variance: :math:`q`, variance of the per-step noise per coordinate.
    :param float swirl_strength: ``strength`` of the swirl.
    :param float swirl_radius: ``radius`` of the swirl.
    :param int size: frame side in pixels.
    :param float pixel_noise: standard deviation of the pixel noise.
    :param torch.dtype dtype: floating dtype of the tensors (generation runs in float64).
    :raises ValueError: naming the argument, for non-positive counts or step, negative noise or
        non-finite constants.

    Example::

        >>> video = wobbly_system(num_sequences=2, num_frames=20, seed=0)
        >>> video.frames.shape, video.positions.shape
        (torch.Size([2, 20, 10, 10]), torch.Size([2, 20, 2]))
        >>> bool(torch.allclose(video.positions[:, 0].norm(dim=-1), torch.ones(2)))
        True
    """
    check_positive_integer("num_sequences", num_sequences)
    check_positive_integer("num_frames", num_frames)
    _check_seed("seed", seed)
    _check_finite("a", a)
    _check_finite("k", k)
    _check_finite("theta0", theta0)
    check_positive("dt", dt)
    _check_non_negative("process_noise_variance", process_noise_variance)
    _check_finite("swirl_strength", swirl_strength)
    check_positive("swirl_radius", swirl_radius)
    check_positive_integer("size", size)
    _check_non_negative("pixel_noise", pixel_noise)
    _check_dtype(dtype)

    rng = np.random.default_rng(seed)
    initial = rng.standard_normal((num_sequences, 2))
    process_noise = math.sqrt(process_noise_variance) * rng.standard_normal(
        (num_sequences, num_frames - 1, 2)
    )
    positions = np.empty((num_sequences, num_frames, 2))
    positions[:, 0] = initial / np.linalg.norm(initial, axis=-1, keepdims=True)
    a, k, theta0, dt = float(a), float(k), float(theta0), float(dt)
    for t in range(1, num_frames):
        positions[:, t] = _rk4_step(positions[:, t - 1], dt, a, k, theta0) + process_noise[:, t - 1]

    noise_level = np.full((num_sequences, num_frames), float(pixel_noise))
    jumps = np.zeros((num_sequences, num_frames), dtype=bool)
    render = {
        "rendering": "swirl",
        "size": size,
        "mlp_seed": 0,
        "swirl_strength": float(swirl_strength),
        "swirl_radius": float(swirl_radius),
    }
    frames = _noisy_frames(positions, noise_level, rng, render, dtype)
    return _video(positions, noise_level, jumps, frames)


# ---------------------------------------------------------------------------- digit pairs


def _augment(
    images: np.ndarray,
    rng: np.random.Generator,
    max_shift: float,
    max_rotation_degrees: float,
    scale_range: tuple[float, float],
    pixel_noise: float,
    erase_probability: float,
    erase_size: int,
) -> np.ndarray:
    """One random augmentation of each ``[N, 8, 8]`` image in [0, 1] (vectorized)."""
    from scipy.ndimage import map_coordinates

    count, side, _ = images.shape
    angle = np.deg2rad(rng.uniform(-max_rotation_degrees, max_rotation_degrees, count))
    scale = rng.uniform(*scale_range, count)
    shift = rng.uniform(-max_shift, max_shift, (count, 2))
    noise = rng.standard_normal(images.shape)
    erase = rng.random(count) < erase_probability
    corner = rng.integers(0, side - erase_size + 1, (count, 2))

    # Output pixel u shows the input at c + R(-angle) (u - c - shift) / scale: the image is
    # scaled and rotated about its centre c, then shifted. Bilinear, zero outside the image.
    centre = (side - 1) / 2
    rows, columns = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    grid = np.stack([rows.ravel(), columns.ravel()], axis=-1).astype(np.float64)  # [P, 2]
    cos, sin = np.cos(angle), np.sin(angle)
    inverse = (
        np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], -2) / scale[:, None, None]
    )
    offset = grid[None] - centre - shift[:, None, :]  # [N, P, 2]
    source = np.einsum("nij,npj->npi", inverse, offset) + centre
    index = np.broadcast_to(np.arange(count, dtype=np.float64)[:, None], source.shape[:2])
    warped = map_coordinates(
        images, [index, source[..., 0], source[..., 1]], order=1, mode="grid-constant", cval=0.0
    ).reshape(images.shape)

    augmented = warped + pixel_noise * noise
    line = np.arange(side)
    inside_rows = (line >= corner[:, :1]) & (line < corner[:, :1] + erase_size)  # [N, side]
    inside_columns = (line >= corner[:, 1:]) & (line < corner[:, 1:] + erase_size)
    patch = inside_rows[:, :, None] & inside_columns[:, None, :] & erase[:, None, None]
    augmented[patch] = 0.0
    return np.clip(augmented, 0.0, 1.0)


def augmented_digit_pairs(
    seed: int = 0,
    split: str = "train",
    *,
    test_fraction: float = 0.25,
    split_seed: int = 0,
    max_shift: float = 1.0,
    max_rotation_degrees: float = 10.0,
    scale_range: tuple[float, float] = (0.9, 1.1),
    pixel_noise: float = 0.05,
    erase_probability: float = 0.5,
    erase_size: int = 2,
    dtype: torch.dtype = torch.float32,
) -> DigitPairs:
    r"""Two random augmentations of each scikit-learn digit, for the pair-LDM experiments (§5).

    The images and the split are those of :func:`thermossl.models.datasets.load_dataset`
    ``("digits", seed=split_seed, test_fraction=test_fraction)``: 1,797 8×8 images scaled to
    [0, 1], a stratified split (1,347 training and 450 test images at the defaults), so
    :attr:`DigitPairs.clean` equals that data set's inputs. Each view applies, independently per
    image and view:

    1. an affine warp about the image centre (bilinear, zero outside the image): rotation by
       :math:`\phi \sim U[\pm\text{max\_rotation\_degrees}]`, scaling by
       :math:`s \sim U[\text{scale\_range}]`, then a shift :math:`\sim U[\pm\text{max\_shift}]^2`
       pixels (continuous, so sub-pixel);
    2. additive Gaussian pixel noise of standard deviation ``pixel_noise``;
    3. random erasing: with probability ``erase_probability`` an ``erase_size`` × ``erase_size``
       patch at a uniform position is set to 0;
    4. clipping to [0, 1].

    The augmentations are drawn from ``numpy.random.default_rng([seed, i])``, ``i`` the index of
    ``split`` in :data:`SPLITS`, so the two splits' augmentations are independent for any seed;
    the whole set is augmented in a few milliseconds.

    :param int seed: seed of the augmentations.
    :param str split: ``"train"`` or ``"test"``.
    :param float test_fraction: share of the digits held out for testing.
    :param int split_seed: seed of the stratified split (fixed by default).
    :param float max_shift: largest shift per axis, in pixels.
    :param float max_rotation_degrees: largest rotation, in degrees.
    :param scale_range: ``(low, high)`` range of the scale factor, ``0 < low <= high``.
    :param float pixel_noise: standard deviation of the additive pixel noise.
    :param float erase_probability: probability of erasing a patch, in [0, 1].
    :param int erase_size: side of the erased patch, 1 to 8 pixels.
    :param torch.dtype dtype: floating dtype of the images.
    :raises ValueError: naming the argument, for an unknown split or bad augmentation settings.

    Example::

        >>> pairs = augmented_digit_pairs(seed=0, split="test")
        >>> pairs.x1.shape, pairs.clean.shape, pairs.labels.shape
        (torch.Size([450, 64]), torch.Size([450, 64]), torch.Size([450]))
        >>> bool(pairs.x1.min() >= 0 and pairs.x1.max() <= 1), bool((pairs.x1 != pairs.x2).any())
        (True, True)
    """
    from thermossl.models.datasets import load_dataset

    _check_seed("seed", seed)
    _check_choice("split", split, SPLITS)
    number = _as_number(test_fraction)
    if not (0.0 < number < 1.0):
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    _check_seed("split_seed", split_seed)
    _check_non_negative("max_shift", max_shift)
    _check_non_negative("max_rotation_degrees", max_rotation_degrees)
    low, high = _check_interval("scale_range", scale_range, minimum=0.0)
    if low <= 0:
        raise ValueError(f"scale_range must have low > 0, got {scale_range!r}")
    _check_non_negative("pixel_noise", pixel_noise)
    _check_probability("erase_probability", erase_probability)
    check_positive_integer("erase_size", erase_size)
    if erase_size > DIGIT_SIZE:
        raise ValueError(f"erase_size must be at most {DIGIT_SIZE}, got {erase_size!r}")
    _check_dtype(dtype)

    data = load_dataset("digits", seed=split_seed, test_fraction=test_fraction)
    inputs, labels = (
        (data.train_inputs, data.train_labels)
        if split == "train"
        else (data.test_inputs, data.test_labels)
    )
    images = inputs.numpy().astype(np.float64).reshape(-1, DIGIT_SIZE, DIGIT_SIZE)
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    settings = (
        float(max_shift),
        float(max_rotation_degrees),
        (low, high),
        float(pixel_noise),
        float(erase_probability),
        erase_size,
    )
    views = [_augment(images, rng, *settings).reshape(len(images), -1) for _ in range(2)]
    x1, x2 = (torch.from_numpy(view).to(dtype) for view in views)
    return DigitPairs(x1, x2, inputs.to(dtype), labels.clone())
