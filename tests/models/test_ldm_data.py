"""The data processes of paper 004 (LDM): circle videos, the wobbly system, augmented digits.

Stochastic properties are checked against their exact values with tolerances of five Monte Carlo
standard errors, derived from the known noise laws and the sample counts; the RK4 integrator is
checked against scipy's ``solve_ivp`` (DOP853 at tolerance 1e-12) on the polar form of eq. 16,
and the swirl against ``skimage.transform.swirl`` called frame by frame.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.integrate import solve_ivp
from skimage.transform import swirl
from thermossl.models.ldm_data import (
    RANDOM_MLP_SLOPE,
    _random_mlp,
    _rk4_step,
    augmented_digit_pairs,
    circle_video,
    render_frames,
    train_test_seeds,
    wobbly_system,
)

F64 = torch.float64
OMEGA = 2 * math.pi / 20


def phase_increments(positions: torch.Tensor) -> torch.Tensor:
    """Angle from z_{t-1} to z_t, in (-pi, pi], ``[S, T - 1]``."""
    previous, current = positions[:, :-1], positions[:, 1:]
    cross = previous[..., 0] * current[..., 1] - previous[..., 1] * current[..., 0]
    dot = (previous * current).sum(-1)
    return torch.atan2(cross, dot)


def dot_by_formula(positions: torch.Tensor, size: int) -> torch.Tensor:
    """exp(-((i - u)^2 + (j - v)^2) / 2), (u, v) = (p + 3) * size / 6, written out directly."""
    centre = ((positions + 3) * size / 6).clamp(0, size - 1)
    i = torch.arange(size, dtype=positions.dtype)[:, None]
    j = torch.arange(size, dtype=positions.dtype)[None, :]
    u, v = centre[..., 0, None, None], centre[..., 1, None, None]
    return torch.exp(-((i - u) ** 2 + (j - v) ** 2) / 2)


def assert_variance_ratio(residual: torch.Tensor, sd: float) -> None:
    """Sample variance / sd^2 = 1 within 5 standard errors (sqrt(2 / n) for Gaussian data)."""
    n = residual.numel()
    ratio = float((residual**2).mean()) / sd**2
    assert abs(ratio - 1) < 5 * math.sqrt(2 / n), f"variance ratio {ratio:.4f} (n={n})"
    assert abs(float(residual.mean())) < 5 * sd / math.sqrt(n)


# ------------------------------------------------------------------------------ circle video


def test_positions_lie_on_the_unit_circle_with_uniform_initial_phase():
    video = circle_video(400, 30, seed=0, position_noise=0.2, dtype=F64)
    radius = video.positions.norm(dim=-1)
    assert torch.allclose(radius, torch.ones_like(radius), atol=1e-12)
    initial = video.positions[:, 0]
    phase = torch.atan2(initial[:, 1], initial[:, 0]).numpy() % (2 * math.pi)
    assert stats.kstest(phase / (2 * math.pi), "uniform").pvalue > 1e-3
    float32 = circle_video(50, 30, seed=0)
    assert float32.frames.dtype == float32.positions.dtype == torch.float32
    assert torch.allclose(float32.positions.norm(dim=-1), torch.ones(50, 30), atol=1e-6)


def test_mean_phase_advance_is_two_pi_over_twenty():
    s = 0.05  # position noise: the angular increment is ~ N(omega, s^2) to first order
    video = circle_video(200, 101, seed=1, position_noise=s, dtype=F64)
    increments = phase_increments(video.positions)
    n = increments.numel()
    # Angular noise atan2(s e_perp, 1 + s e_par): mean exactly 0, sd = s (1 + O(s^2)).
    assert abs(float(increments.mean()) - OMEGA) < 5 * 1.05 * s / math.sqrt(n)
    assert abs(float(increments.std()) / s - 1) < 0.03
    noiseless = circle_video(5, 50, seed=1, position_noise=0.0, dtype=F64)
    exact = torch.full((5, 49), OMEGA, dtype=F64)
    assert torch.allclose(phase_increments(noiseless.positions), exact)
    half_speed = circle_video(
        5, 50, seed=1, position_noise=0.0, frames_per_revolution=40, dtype=F64
    )
    assert torch.allclose(phase_increments(half_speed.positions), exact / 2)


@pytest.mark.parametrize("size", [10, 16])
def test_argmax_pixel_tracks_the_position(size):
    video = circle_video(40, 25, seed=2, pixel_noise=0.0, position_noise=0.1, size=size, dtype=F64)
    assert torch.allclose(video.frames, dot_by_formula(video.positions, size), rtol=1e-12)
    centre = (video.positions + 3) * size / 6
    nearest = torch.floor(centre + 0.5).long()
    flat = video.frames.flatten(-2).argmax(-1)
    row, column = flat // size, flat % size
    clear = ((centre - centre.floor() - 0.5).abs() > 1e-6).all(-1)  # no tie between two pixels
    assert clear.float().mean() > 0.99
    assert torch.equal(row[clear], nearest[..., 0][clear])
    assert torch.equal(column[clear], nearest[..., 1][clear])
    # The dot stays inside the frame: radius 1 maps to pixel coordinates within (1, size - 2).
    assert bool((centre > 1).all() and (centre < size - 2).all())


def test_half_flip_mirrors_the_lower_half_left_to_right():
    video = circle_video(60, 20, seed=3, rendering="half_flip", pixel_noise=0.0, dtype=F64)
    positions = video.positions
    lower = positions[..., 0] > 0
    mirrored = positions * torch.tensor([1.0, -1.0], dtype=F64)
    expected = torch.where(lower[..., None], mirrored, positions)
    assert torch.allclose(video.frames, dot_by_formula(expected, 10), rtol=1e-12)
    assert lower.any() and (~lower).any()
    flat = video.frames.flatten(-2).argmax(-1)
    column = flat % 10
    expected_column = torch.floor((expected[..., 1] + 3) * 10 / 6 + 0.5).long()
    assert (column == expected_column).float().mean() > 0.99


@pytest.mark.parametrize("rendering", ["plain", "half_flip", "random_mlp"])
def test_pixel_noise_has_the_requested_standard_deviation(rendering):
    sd = 0.1
    video = circle_video(100, 40, seed=4, rendering=rendering, pixel_noise=sd, dtype=F64)
    clean = render_frames(video.positions, rendering, dtype=F64)
    assert_variance_ratio(video.frames - clean, sd)
    assert torch.equal(video.noise_level, torch.full((100, 40), sd, dtype=F64))


def test_per_frame_noise_levels_match_the_residuals():
    low, high = 0.05, 0.5
    video = circle_video(200, 50, seed=5, noise_levels=(low, high), pixel_noise=9.0, dtype=F64)
    sigma = video.noise_level
    assert bool((sigma >= low).all() and (sigma <= high).all())
    n = sigma.numel()
    uniform_sd = (high - low) / math.sqrt(12)
    assert abs(float(sigma.mean()) - (low + high) / 2) < 5 * uniform_sd / math.sqrt(n)
    residual = video.frames - render_frames(video.positions, dtype=F64)
    assert_variance_ratio(residual / sigma[..., None, None], 1.0)
    # In aggregate per frame: sum_t r_t^2 against sum_t 100 sigma_t^2, in three bands of sigma.
    per_frame = (residual**2).sum((-1, -2))
    for band in [(low, 0.2), (0.2, 0.35), (0.35, high)]:
        inside = (sigma >= band[0]) & (sigma < band[1])
        s2 = sigma[inside] ** 2
        ratio = float(per_frame[inside].sum() / (100 * s2.sum()))
        standard_error = math.sqrt(2 * 100 * float((s2**2).sum())) / float(100 * s2.sum())
        assert abs(ratio - 1) < 5 * standard_error, (band, ratio)


def test_jumps_occur_at_the_requested_rate():
    p = 0.1
    video = circle_video(200, 101, seed=6, jump_probability=p, position_noise=0.0, dtype=F64)
    assert not video.jumps[:, 0].any()
    opportunities = 200 * 100
    rate = float(video.jumps.sum()) / opportunities
    assert abs(rate - p) < 5 * math.sqrt(p * (1 - p) / opportunities)
    increments = phase_increments(video.positions)
    jumped = video.jumps[:, 1:]
    assert torch.allclose(increments[~jumped], torch.full_like(increments[~jumped], OMEGA))
    # After a jump the phase is uniform on the circle.
    after = video.positions[:, 1:][jumped]
    phase = torch.atan2(after[:, 1], after[:, 0]).numpy() % (2 * math.pi)
    assert stats.kstest(phase / (2 * math.pi), "uniform").pvalue > 1e-3


def test_fixed_jump_angle_and_extreme_probabilities():
    angle = 3 * math.pi / 4
    video = circle_video(
        50, 60, seed=7, jump_probability=0.2, jump_angle=angle, position_noise=0.0, dtype=F64
    )
    increments = phase_increments(video.positions)
    jumped = video.jumps[:, 1:]
    assert jumped.any()
    wrapped = math.remainder(OMEGA + angle, 2 * math.pi)
    assert torch.allclose(increments[jumped], torch.full_like(increments[jumped], wrapped))
    assert not circle_video(20, 30, seed=7, jump_probability=0.0).jumps.any()
    assert circle_video(20, 30, seed=7, jump_probability=1.0).jumps[:, 1:].all()


def test_random_mlp_rendering_is_frozen_nonlinear_and_injective():
    train = circle_video(20, 30, seed=0, rendering="random_mlp", pixel_noise=0.0, dtype=F64)
    test = circle_video(20, 30, seed=1, rendering="random_mlp", pixel_noise=0.0, dtype=F64)
    for video in (train, test):  # one renderer, whatever the sequence seed
        expected = render_frames(video.positions, "random_mlp", mlp_seed=0, dtype=F64)
        assert torch.allclose(video.frames, expected, rtol=1e-12, atol=1e-14)
    points = torch.randn(200, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    frames = render_frames(points, "random_mlp", dtype=F64).flatten(-2)
    other = render_frames(points, "random_mlp", mlp_seed=1, dtype=F64).flatten(-2)
    assert not torch.allclose(frames, other)
    # Not affine: the render of a midpoint is not the midpoint of the renders (somewhere).
    middle = render_frames((points[:100] + points[100:]) / 2, "random_mlp", dtype=F64).flatten(-2)
    assert float((middle - (frames[:100] + frames[100:]) / 2).abs().max()) > 1e-3
    # Locally injective everywhere sampled: the Jacobian (central differences) has rank 2.
    h = 1e-6
    columns = [
        render_frames(points + h * e, "random_mlp", dtype=F64).flatten(-2)
        - render_frames(points - h * e, "random_mlp", dtype=F64).flatten(-2)
        for e in torch.eye(2, dtype=F64)
    ]
    jacobian = torch.stack(columns, -1) / (2 * h)
    # Each layer is injective; the Jacobian's smallest singular value is at least slope^4 times
    # the readout's (every leaky ReLU in its negative regime), tiny but positive.
    readout = torch.tensor(_random_mlp(10, 0)[-1][0])
    bound = RANDOM_MLP_SLOPE**4 * float(torch.linalg.svdvals(readout)[-1])
    assert float(torch.linalg.svdvals(jacobian)[:, -1].min()) > 0.99 * bound > 0
    assert float(torch.cdist(frames, frames).add(torch.eye(200) * 1e9).min()) > 0


# ---------------------------------------------------------------------------- wobbly system

A, K, THETA0 = 0.5, 4.0, -3 * math.pi / 8


def exact_wobbly(initial: np.ndarray, times: np.ndarray) -> np.ndarray:
    """solve_ivp on the polar form of eq. 16 (dr/dt = a k cos(k (theta - theta0)), dtheta/dt = 1)."""

    def polar(_, state):
        return [A * K * math.cos(K * (state[1] - THETA0)), 1.0]

    r0, theta0 = math.hypot(*initial), math.atan2(initial[1], initial[0])
    solution = solve_ivp(
        polar, (0, times[-1]), [r0, theta0], t_eval=times, method="DOP853", rtol=1e-12, atol=1e-12
    )
    r, theta = solution.y
    return np.stack([r * np.cos(theta), r * np.sin(theta)], -1)


def rk4_error(dt: float, horizon: float = 10.0) -> float:
    """Largest deviation of a noise-free run from solve_ivp over ``horizon`` time units.

    Seed 9's three trajectories keep a radius above 0.5: the Cartesian drift is singular at the
    origin (the angle is undefined there), where no fixed-step integrator stays accurate.
    """
    steps = round(horizon / dt)
    video = wobbly_system(3, steps + 1, seed=9, dt=dt, process_noise_variance=0.0, dtype=F64)
    assert float(video.positions.norm(dim=-1).min()) > 0.5
    times = dt * np.arange(steps + 1)
    positions = video.positions.numpy()
    return max(
        float(np.abs(positions[s] - exact_wobbly(positions[s, 0], times)).max()) for s in range(3)
    )


def test_noise_free_rk4_matches_solve_ivp():
    coarse, fine = rk4_error(0.01), rk4_error(0.005)
    assert fine < coarse < 2e-7
    # Fourth order: halving the step divides the global error by about 2^4 (2^4.3 measured:
    # the leading term still carries a higher-order correction at these steps).
    order = math.log2(coarse / fine)
    assert 3.7 < order < 4.6, order


def test_wobbly_initial_state_and_process_noise():
    q = 0.1
    video = wobbly_system(300, 21, seed=9, process_noise_variance=q, dtype=F64)
    initial = video.positions[:, 0]
    assert torch.allclose(initial.norm(dim=-1), torch.ones(300, dtype=F64), atol=1e-12)
    phase = torch.atan2(initial[:, 1], initial[:, 0]).numpy() % (2 * math.pi)
    assert stats.kstest(phase / (2 * math.pi), "uniform").pvalue > 1e-3
    previous = video.positions[:, :-1].numpy()
    drift = _rk4_step(previous, 0.3, A, K, THETA0)
    residual = torch.from_numpy(video.positions[:, 1:].numpy() - drift)
    assert_variance_ratio(residual[..., 0], math.sqrt(q))
    assert_variance_ratio(residual[..., 1], math.sqrt(q))
    correlation = float((residual[..., 0] * residual[..., 1]).mean()) / q
    assert abs(correlation) < 5 / math.sqrt(residual[..., 0].numel())


def test_swirl_equals_skimage_on_the_noise_free_render():
    video = wobbly_system(4, 30, seed=10, dtype=F64)
    assert not video.jumps.any() and bool((video.noise_level == 0).all())
    plain = render_frames(video.positions, "plain", dtype=F64).numpy()
    expected = np.stack(
        [
            [swirl(plain[s, t], strength=10, radius=200) for t in range(plain.shape[1])]
            for s in range(plain.shape[0])
        ]
    )
    np.testing.assert_allclose(video.frames.numpy(), expected, rtol=0, atol=1e-12)
    assert not np.allclose(expected, plain, atol=1e-2)  # the swirl does move the dot
    noisy = wobbly_system(4, 30, seed=10, pixel_noise=0.2, dtype=F64)
    assert torch.equal(noisy.positions, video.positions)  # pixel noise is drawn last
    assert_variance_ratio(noisy.frames - render_frames(noisy.positions, "swirl", dtype=F64), 0.2)


# -------------------------------------------------------------------------- reproducibility


def generate_all(seed: int) -> list[torch.Tensor]:
    circle = circle_video(
        6, 12, seed, rendering="random_mlp", jump_probability=0.3, noise_levels=(0.0, 0.3)
    )
    wobbly = wobbly_system(6, 12, seed, pixel_noise=0.1)
    pairs = augmented_digit_pairs(seed, "test")
    return [*circle, *wobbly, *pairs]


def test_same_seed_reproduces_and_leaves_global_generators_alone():
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()  # noqa: NPY002
    first, again = generate_all(0), generate_all(0)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])  # noqa: NPY002


def test_different_seeds_give_different_data():
    train_seed, test_seed = train_test_seeds(0)
    assert train_seed != test_seed and set(train_test_seeds(1)).isdisjoint((train_seed, test_seed))
    first, second = generate_all(train_seed), generate_all(test_seed)
    frames_and_positions = [0, 1, 4, 5, 8, 9]  # circle, wobbly frames/positions; digit views
    for index in frames_and_positions:
        assert not torch.equal(first[index], second[index]), index


# ---------------------------------------------------------------------------- digit pairs


def correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


def test_digit_pairs_keep_images_and_labels(digits):
    train = augmented_digit_pairs(0, "train")
    test = augmented_digit_pairs(0, "test")
    assert torch.equal(train.clean, digits.train_inputs)
    assert torch.equal(train.labels, digits.train_labels)
    assert torch.equal(test.clean, digits.test_inputs)
    assert torch.equal(test.labels, digits.test_labels)
    assert train.x1.shape == train.x2.shape == (1347, 64) and test.x1.shape == (450, 64)
    for view in (train.x1, train.x2, test.x1):
        assert view.dtype == torch.float32 and bool(view.min() >= 0 and view.max() <= 1)


def test_digit_views_differ_but_stay_close_to_the_clean_image():
    pairs = augmented_digit_pairs(1, "train", dtype=F64)
    assert pairs.x1.dtype == F64
    assert bool(((pairs.x1 - pairs.x2).abs().amax(1) > 0.05).all())  # every pair differs
    own = correlation(pairs.x1, pairs.clean)
    shuffled = correlation(pairs.x1, pairs.clean.roll(1, 0))  # another image
    assert float(own.mean()) > 0.55
    assert float(own.mean()) > float(shuffled.mean()) + 0.15
    # Without the shift (the strongest augmentation on 8×8 pixels) the views stay very close.
    unshifted = augmented_digit_pairs(1, "train", max_shift=0.0, dtype=F64)
    near = correlation(unshifted.x1, unshifted.clean)
    assert float(near.mean()) > 0.9 and float(near.min()) > 0.4


def test_digit_identity_augmentation_returns_the_clean_images():
    pairs = augmented_digit_pairs(
        2,
        "train",
        max_shift=0.0,
        max_rotation_degrees=0.0,
        scale_range=(1.0, 1.0),
        pixel_noise=0.0,
        erase_probability=0.0,
    )
    assert torch.equal(pairs.x1, pairs.clean) and torch.equal(pairs.x2, pairs.clean)
    erased = augmented_digit_pairs(
        2,
        "train",
        max_shift=0.0,
        max_rotation_degrees=0.0,
        scale_range=(1.0, 1.0),
        pixel_noise=0.0,
        erase_probability=1.0,
        erase_size=3,
    )
    changed = (erased.x1 != erased.clean).sum(1)
    assert bool((changed <= 9).all()) and bool((erased.x1 <= erased.clean).all())


# ----------------------------------------------------------------------------- bad input

BAD_INPUTS = [
    (circle_video, {"num_sequences": 0, "num_frames": 5}, "num_sequences"),
    (circle_video, {"num_sequences": 2, "num_frames": -1}, "num_frames"),
    (circle_video, {"num_sequences": 2, "num_frames": 5, "pixel_noise": -0.1}, "pixel_noise"),
    (circle_video, {"num_sequences": 2, "num_frames": 5, "rendering": "fancy"}, "rendering"),
    (
        circle_video,
        {"num_sequences": 2, "num_frames": 5, "jump_probability": 1.5},
        "jump_probability",
    ),
    (
        circle_video,
        {"num_sequences": 2, "num_frames": 5, "noise_levels": (0.5, 0.1)},
        "noise_levels",
    ),
    (
        circle_video,
        {"num_sequences": 2, "num_frames": 5, "noise_levels": (-0.1, 0.1)},
        "noise_levels",
    ),
    (
        circle_video,
        {"num_sequences": 2, "num_frames": 5, "frames_per_revolution": 0},
        "frames_per_revolution",
    ),
    (
        circle_video,
        {"num_sequences": 2, "num_frames": 5, "position_noise": math.nan},
        "position_noise",
    ),
    (circle_video, {"num_sequences": 2, "num_frames": 5, "seed": -1}, "seed"),
    (circle_video, {"num_sequences": 2, "num_frames": 5, "size": 0}, "size"),
    (wobbly_system, {"num_sequences": 2, "num_frames": 0}, "num_frames"),
    (wobbly_system, {"num_sequences": 2, "num_frames": 5, "dt": 0.0}, "dt"),
    (
        wobbly_system,
        {"num_sequences": 2, "num_frames": 5, "process_noise_variance": -1},
        "process_noise_variance",
    ),
    (wobbly_system, {"num_sequences": 2, "num_frames": 5, "pixel_noise": -1}, "pixel_noise"),
    (wobbly_system, {"num_sequences": 2, "num_frames": 5, "a": math.inf}, "a"),
    (augmented_digit_pairs, {"split": "validation"}, "split"),
    (augmented_digit_pairs, {"erase_probability": -0.1}, "erase_probability"),
    (augmented_digit_pairs, {"scale_range": (1.1, 0.9)}, "scale_range"),
    (augmented_digit_pairs, {"erase_size": 9}, "erase_size"),
    (render_frames, {"positions": torch.zeros(3, 3)}, "positions"),
    (render_frames, {"positions": torch.zeros(3, 2), "rendering": "blur"}, "rendering"),
    (train_test_seeds, {"seed": 1.5}, "seed"),
]


@pytest.mark.parametrize(
    ("function", "arguments", "name"), BAD_INPUTS, ids=[case[2] for case in BAD_INPUTS]
)
def test_bad_input_names_the_argument(function, arguments, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        function(**arguments)


def test_bad_dtype_is_a_type_error():
    with pytest.raises(TypeError, match="dtype"):
        circle_video(2, 5, dtype=torch.int64)
