"""The failure-mode diagnostics flag exactly the mode constructed, with the numbers computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from thermossl.objectives.failure_modes import diagnose


def separated(n: int = 200, confidence: float = 8.0):
    """Two balanced, confident, augmentation-invariant clusters on spread-out features."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 2
    features = torch.randn(n, 3, generator=generator) + 4.0 * labels[:, None]
    logits = confidence * torch.nn.functional.one_hot(labels, 2).double()
    return features, logits, labels


def test_a_healthy_model_shows_no_failure_mode():
    features, logits, _ = separated()
    report = diagnose(features, logits, logits)
    assert not (report.representation_collapse or report.cluster_collapse)
    assert not report.label_inconsistency
    assert report.largest_cluster_mass == 0.5 and report.label_agreement == 1.0
    # confident and invariant: L_INV = H(softmax([8, 0])); balanced: L_PRIOR = ln 2
    p = 1.0 / (1.0 + math.exp(-8.0))
    entropy = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert report.invariance_loss == pytest.approx(entropy, rel=1e-10)
    assert report.prior_loss == pytest.approx(math.log(2), rel=1e-10)
    assert report.prior_optimum == pytest.approx(math.log(2), rel=1e-12)


def test_representation_collapse():
    _, logits, _ = separated()
    constant = torch.tensor([[1.0, -2.0, 0.5]]).expand(200, 3)
    report = diagnose(constant + 1e-9 * torch.randn(200, 3), logits, logits)
    assert report.representation_collapse and report.relative_spread < 1e-6


def test_cluster_collapse():
    features, _, _ = separated()
    logits = torch.tensor([[3.0, 0.0]]).expand(200, 2)
    report = diagnose(features, logits, logits)
    assert report.cluster_collapse and report.largest_cluster_mass == 1.0
    # q-bar = softmax([3, 0]) for every cluster: L_PRIOR = -(1/2)(log q1 + log q2)
    q = torch.softmax(torch.tensor([3.0, 0.0], dtype=torch.float64), 0)
    assert report.prior_loss == pytest.approx(float(-0.5 * q.log().sum()), rel=1e-10)


def test_label_inconsistency():
    features, logits, _ = separated()
    flipped = logits.clone()
    flipped[:60] = flipped[:60].flip(-1)  # 60 of 200 assignments change under augmentation
    report = diagnose(features, logits, flipped)
    assert report.label_inconsistency and report.label_agreement == pytest.approx(0.7)
    assert not report.cluster_collapse


def test_non_uniform_prior_optimum_is_its_entropy():
    features, logits, _ = separated()
    prior = torch.tensor([0.2, 0.8], dtype=torch.float64)
    report = diagnose(features, logits, logits, prior)
    assert report.prior_optimum == pytest.approx(-(0.2 * math.log(0.2) + 0.8 * math.log(0.8)))


def test_mismatched_logits_are_rejected():
    features, logits, _ = separated()
    with pytest.raises(ValueError, match="logits"):
        diagnose(features, logits, logits[:10])


def test_soft_uninformative_labels_are_inconsistent_though_they_agree_under_augmentation():
    """Definition 10's adversary: permuting such labels across inputs costs nothing."""
    features, _, labels = separated()
    generator = torch.Generator().manual_seed(1)
    logits = 0.05 * torch.randn(200, 2, generator=generator, dtype=torch.float64)
    logits[:, 0] += 0.01 * (labels.double() - 0.5)  # argmax barely tied to the input
    report = diagnose(features, logits, logits + 1e-4)
    assert report.label_agreement == 1.0 and report.label_inconsistency
    assert report.shuffled_invariance_loss - report.invariance_loss < 0.01


def test_the_shuffled_invariance_loss_is_the_mean_over_all_pairings():
    """E_pi[L_INV] over uniform permutations equals the mean of CE(p'_i, p_j) over all (i, j)."""
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(7, 3, generator=generator, dtype=torch.float64)
    augmented = logits + 0.3 * torch.randn(7, 3, generator=generator, dtype=torch.float64)
    report = diagnose(torch.randn(7, 2, generator=generator), logits, augmented)
    p_aug, log_p = torch.softmax(augmented, -1), torch.log_softmax(logits, -1)
    pairs = [-(p_aug[i] * log_p[j]).sum() for i in range(7) for j in range(7)]
    assert report.shuffled_invariance_loss == pytest.approx(float(sum(pairs) / 49), rel=1e-12)
    # a healthy model gains most of the shuffled loss back: not flagged
    features, confident, _ = separated()
    healthy = diagnose(features, confident, confident)
    assert healthy.shuffled_invariance_loss > 3.0 and not healthy.label_inconsistency
