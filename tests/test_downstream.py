"""Linear probe, OOD score and AUROC, shifted digits and image grids (thermossl.downstream)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.common import assert_relative_close
from thermossl.downstream import (
    GAUSSIAN_SHIFT_SCALE,
    SHIFTS,
    linear_probe_accuracy,
    ood_auroc,
    ood_table,
    plot_image_grid,
    score_norm,
    shifted_digits,
)

# --- (a) linear probe -------------------------------------------------------------------------


def test_linear_probe_is_perfect_on_noisy_one_hot_labels():
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 10, (800,), generator=generator)
    features = F.one_hot(labels, 10).double()
    features = features + 0.05 * torch.randn(
        features.shape, generator=generator, dtype=torch.float64
    )
    accuracy = linear_probe_accuracy(features[:500], labels[:500], features[500:], labels[500:])
    assert accuracy == 1.0


def test_linear_probe_is_at_chance_on_pure_noise():
    """Test labels independent of everything: the number correct is Binomial(m, 1/10) exactly."""
    generator = torch.Generator().manual_seed(2)
    n, m, c = 1000, 1000, 10
    features = torch.randn(n + m, 16, generator=generator)
    labels = torch.randint(0, c, (n + m,), generator=generator)
    accuracy = linear_probe_accuracy(features[:n], labels[:n], features[n:], labels[n:], seed=3)
    band = 4 * math.sqrt((1 / c) * (1 - 1 / c) / m)
    assert abs(accuracy - 1 / c) < band, (accuracy, band)


def test_linear_probe_standardizes_so_feature_scales_do_not_matter(digits):
    """Without standardization the L2 penalty would act differently on rescaled pixels."""
    generator = torch.Generator().manual_seed(10)
    scale = torch.exp(torch.empty(64).uniform_(-7.0, 7.0, generator=generator)).double()
    shift = torch.randn(64, generator=generator, dtype=torch.float64)
    train, test = digits.train_inputs.double(), digits.test_inputs.double()
    raw = linear_probe_accuracy(train, digits.train_labels, test, digits.test_labels)
    rescaled = linear_probe_accuracy(
        train * scale + shift, digits.train_labels, test * scale + shift, digits.test_labels
    )
    assert raw > 0.9  # raw 8x8 pixels are nearly linearly separable
    assert abs(rescaled - raw) <= 2 / len(test)


def test_linear_probe_accepts_numpy_and_rejects_bad_shapes():
    z = np.linspace(-1.0, 1.0, 40)[:, None]
    y = (z[:, 0] > 0).astype(np.int64)
    assert linear_probe_accuracy(z, y, z, y) == 1.0
    with pytest.raises(ValueError, match="same number of rows"):
        linear_probe_accuracy(z, y[:-1], z, y)
    with pytest.raises(ValueError, match="same width"):
        linear_probe_accuracy(z, y, np.hstack([z, z]), y)
    with pytest.raises(ValueError, match="two classes"):
        linear_probe_accuracy(z, np.zeros_like(y), z, y)


# --- (b) the score ----------------------------------------------------------------------------


class QuadraticEnergy(nn.Module):
    """E(x) = ||x - mu||^2 / (2 s^2), with trainable mu and log s."""

    def __init__(self, mu: torch.Tensor, s: float):
        super().__init__()
        self.mu = nn.Parameter(mu.clone())
        self.log_s = nn.Parameter(torch.tensor(math.log(s), dtype=mu.dtype))

    def forward(self, x):
        return 0.5 * (x - self.mu).pow(2).sum(-1) / torch.exp(2 * self.log_s)


def test_score_norm_matches_the_closed_form_of_a_quadratic_energy():
    generator = torch.Generator().manual_seed(4)
    mu = torch.randn(5, generator=generator, dtype=torch.float64)
    s = 0.7
    x = torch.randn(37, 5, generator=generator, dtype=torch.float64)

    def energy(y):
        return 0.5 * (y - mu).pow(2).sum(-1) / s**2

    expected = -(x - mu).norm(dim=1) / s**2
    # batches of 8 leave a ragged last batch; the result must not depend on the batching
    assert_relative_close(score_norm(energy, x, batch_size=8), expected, rtol=1e-10)
    assert_relative_close(score_norm(energy, x), expected, rtol=1e-10)
    assert_relative_close(score_norm(QuadraticEnergy(mu, s), x, batch_size=5), expected, rtol=1e-10)


def test_score_norm_leaves_no_gradients_and_no_graph():
    module = QuadraticEnergy(torch.zeros(3, dtype=torch.float64), 2.0)
    x = torch.rand(10, 3, dtype=torch.float64)
    with torch.no_grad():  # the score needs autograd internally, even under no_grad
        scores = score_norm(module, x, batch_size=4)
    assert all(parameter.grad is None for parameter in module.parameters())
    assert scores.grad_fn is None and not scores.requires_grad
    assert x.grad is None and not x.requires_grad
    assert scores.shape == (10,) and scores.dtype == torch.float64


def test_score_norm_rejects_energies_of_the_wrong_shape_or_without_autograd():
    x = torch.rand(4, 3)
    with pytest.raises(ValueError, match=r"\[n\] energies"):
        score_norm(lambda y: y.pow(2), x)
    with pytest.raises(ValueError, match="does not depend on x"):
        score_norm(lambda y: y.detach().sum(-1), x)
    with pytest.raises(ValueError, match="batch_size"):
        score_norm(lambda y: y.sum(-1), x, batch_size=0)


# --- (c) AUROC --------------------------------------------------------------------------------


def test_ood_auroc_is_the_mann_whitney_fraction_with_ties():
    in_scores = torch.tensor([0.9, 0.5, 0.5, 0.1])
    out_scores = torch.tensor([0.5, 0.2, 0.1])
    # pairs (in, out) won by "in", ties counting 1/2:
    # 0.9 beats all three: 3;  each 0.5: tie with 0.5, beats 0.2 and 0.1: 2.5 (twice);
    # 0.1: loses to 0.5 and 0.2, ties with 0.1: 0.5.   Total 8.5 of 4 * 3 = 12 pairs.
    assert ood_auroc(in_scores, out_scores) == pytest.approx(8.5 / 12, abs=1e-12)


@pytest.mark.parametrize(
    ("in_scores", "out_scores", "expected"),
    [
        ([3.0, 4.0, 5.0], [0.0, 1.0, 2.0], 1.0),
        ([0.0, 1.0, 2.0], [3.0, 4.0, 5.0], 0.0),
        ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], 0.5),
        ([7.0, 7.0], [7.0, 7.0, 7.0], 0.5),
    ],
    ids=["separated", "reversed", "identical", "all_tied"],
)
def test_ood_auroc_extremes(in_scores, out_scores, expected):
    assert ood_auroc(torch.tensor(in_scores), np.array(out_scores)) == expected


def test_ood_auroc_rejects_empty_and_non_finite_scores():
    with pytest.raises(ValueError, match="non-empty"):
        ood_auroc(torch.tensor([]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="finite"):
        ood_auroc(torch.tensor([float("nan")]), torch.tensor([1.0]))


# --- (d) shifted digits -----------------------------------------------------------------------


def test_inverted_is_an_involution(digits):
    x = digits.test_inputs  # multiples of 1/16: 1 - (1 - x) is exact in float32
    inverted = shifted_digits(x, "inverted")
    assert torch.equal(inverted + x, torch.ones_like(x))  # black <-> white, exactly 1 - x
    assert torch.equal(shifted_digits(inverted, "inverted"), x)


def test_shuffled_keeps_each_images_sorted_pixels(digits):
    x = digits.test_inputs
    shuffled = shifted_digits(x, "shuffled", torch.Generator().manual_seed(5))
    assert torch.equal(shuffled.sort(dim=1).values, x.sort(dim=1).values)
    # the pixels really move: almost every image differs from its original
    assert (shuffled != x).any(dim=1).float().mean() > 0.99
    images = x.reshape(-1, 8, 8)
    shuffled_images = shifted_digits(images, "shuffled", torch.Generator().manual_seed(5))
    assert shuffled_images.shape == images.shape
    assert torch.equal(shuffled_images.reshape(-1, 64), shuffled)


def test_noise_is_uniform_in_the_unit_interval_and_reproducible(digits):
    x = digits.test_inputs
    noise = shifted_digits(x, "noise", torch.Generator().manual_seed(6))
    assert noise.shape == x.shape and noise.dtype == x.dtype
    assert float(noise.min()) >= 0.0 and float(noise.max()) <= 1.0
    # mean of U[0, 1] is 1/2 with variance 1/12 per pixel
    assert abs(float(noise.mean()) - 0.5) < 4 * math.sqrt(1 / 12 / noise.numel())
    again = shifted_digits(x, "noise", torch.Generator().manual_seed(6))
    other = shifted_digits(x, "noise", torch.Generator().manual_seed(7))
    assert torch.equal(noise, again)
    assert not torch.equal(noise, other)


def test_gaussian_shift_is_clamped_with_the_right_tail_mass():
    """From x = 1/2, a pixel is clamped when |sigma eps| > 1/2: probability 2 Phi(-1/(2 sigma))."""
    x = torch.full((200, 64), 0.5, dtype=torch.float64)
    shifted = shifted_digits(x, "gaussian", torch.Generator().manual_seed(8))
    assert float(shifted.min()) >= 0.0 and float(shifted.max()) <= 1.0
    clamped = ((shifted == 0.0) | (shifted == 1.0)).double().mean()
    p = math.erfc(0.5 / GAUSSIAN_SHIFT_SCALE / math.sqrt(2))
    assert abs(float(clamped) - p) < 4 * math.sqrt(p * (1 - p) / x.numel())


def test_unknown_shift_raises_listing_the_valid_ones(digits):
    with pytest.raises(ValueError, match="noise, inverted, shuffled, gaussian"):
        shifted_digits(digits.test_inputs, "rotated")
    with pytest.raises(ValueError, match="rotated"):
        ood_table(lambda y: y.sum(-1), digits.test_inputs, kinds=("noise", "rotated"))
    assert set(SHIFTS) >= {"noise", "inverted", "shuffled", "gaussian"}


# --- (e) integration: a Gaussian fitted to the digits -----------------------------------------


def test_fitted_gaussian_detects_noise_and_inverted_digits(digits):
    train = digits.train_inputs.double()
    mu = train.mean(0)
    covariance = torch.cov(train.T) + 0.01 * torch.eye(train.shape[1], dtype=torch.float64)
    precision = torch.linalg.inv(covariance)

    def energy(x):  # half the squared Mahalanobis distance
        d = x - mu
        return 0.5 * ((d @ precision) * d).sum(-1)

    test = digits.test_inputs.double()
    # the score is the closed form -||Sigma^{-1} (x - mu)||
    assert_relative_close(
        score_norm(energy, test[:50]), -((test[:50] - mu) @ precision).norm(dim=1), rtol=1e-10
    )
    table = ood_table(energy, test, generator=torch.Generator().manual_seed(9))
    assert list(table) == list(SHIFTS)
    assert table["noise"] > 0.9, table
    assert table["inverted"] > 0.9, table
    assert all(0.0 <= value <= 1.0 for value in table.values())


# --- (f) image grid ---------------------------------------------------------------------------


def test_plot_image_grid_writes_a_png(tmp_path, digits):
    path = plot_image_grid(
        digits.test_inputs[:10], tmp_path / "new" / "folder" / "digits.png", title="digits"
    )
    assert path == tmp_path / "new" / "folder" / "digits.png"
    data = path.read_bytes()
    assert len(data) > 100 and data[:8] == b"\x89PNG\r\n\x1a\n"
    square = plot_image_grid(digits.test_inputs[:6].reshape(-1, 8, 8), tmp_path / "s.png", rows=2)
    assert square.stat().st_size > 0
    with pytest.raises(ValueError, match="square"):
        plot_image_grid(torch.rand(3, 10), tmp_path / "bad.png")
