"""Reproduction of the README's predictive-LDM results (slow: `make reproduce`).

One seed of each command of the README's tables, with its settings: identifiability on the wobbly
system (about 1 min on one core), the Kalman-LDM on circular videos with the kNN entropy, with
noise-aware covariances, with the gradient alignment, with the stop-gradient entropy and whitened
latents, and as CPC with the Kalman critic (5–12 min each). Asserted are the issue's targets,
which the README's runs meet with a margin.
"""

from __future__ import annotations

import numpy as np
import pytest

from thermossl.ldm_sequences import SequenceConfig, train_sequence_model

pytestmark = pytest.mark.slow


def test_the_recurrent_predictor_identifies_the_wobbly_system():
    """Theorem 1: affine R² ≥ 0.9 from learned to true latents, and an injective encoder."""
    metrics = train_sequence_model(
        SequenceConfig(data="wobbly", model="lstm-knn", num_frames=20, pixel_noise=0.0), seed=0
    )
    assert metrics["r2"] >= 0.9
    assert metrics["injectivity_untrained"]["folded_fraction"] > 0.2  # folded at the start
    assert metrics["injectivity"]["folded_fraction"] <= 0.01


def test_kalman_ldm_reads_the_circle_and_its_gradients_align():
    metrics = train_sequence_model(
        SequenceConfig(data="circle-video", model="kalman-knn", alignment_every=100), seed=0
    )
    assert metrics["r2"] >= 0.95
    assert 0.90 <= metrics["coverage_95"] <= 0.99
    late = [cosine for step, cosine in metrics["gradient_alignment"] if step >= 200]
    assert np.mean(late) > 0.3


def test_noise_aware_intervals_cover_90_to_99_percent():
    metrics = train_sequence_model(
        SequenceConfig(data="circle-video", model="kalman-knn", noise_levels=(0.05, 0.5)), seed=0
    )
    assert metrics["r2"] >= 0.95
    assert 0.90 <= metrics["coverage_95"] <= 0.99


def test_cpc_with_the_kalman_critic_reads_the_circle():
    """InfoNCE over time with the Kalman predictive density as critic (the contrastive entropy)."""
    metrics = train_sequence_model(SequenceConfig(model="kalman-contrastive"), seed=0)
    assert metrics["r2"] >= 0.95


def test_stopgrad_kalman_ldm_with_whitened_latents_reads_the_circle():
    metrics = train_sequence_model(
        SequenceConfig(
            model="kalman-stopgrad",
            steps=6000,
            predictor_speedup=10.0,
            latent_normalization="whiten",
        ),
        seed=0,
    )
    assert metrics["r2"] >= 0.95
