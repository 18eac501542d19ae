"""The toy study of TherML's Appendix B: run folder, resumption, bounds on trained models, CLI.

Short runs (tens of steps) exercise the machinery; what they assert holds for any model: the
hand-crafted model's exact functionals, and the information inequalities of eq. 11–12 on the exact
distribution, where the parameters are independent of the evaluation data.
"""

from __future__ import annotations

import json

import pytest
import torch
from thermossl.models.therml import toy_data
from thermossl.objectives.therml import entropy
from typer.testing import CliRunner

from thermossl.cli import app
from thermossl.therml_toy import (
    HAND_CRAFTED,
    TOY_PRESETS,
    ToyConfig,
    markdown_frontier,
    run_toy_frontier,
    train_toy,
)

runner = CliRunner(env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
SHORT = ToyConfig(steps=40, evaluation_draws=32)


def test_every_caption_of_figures_4_to_8_is_a_preset():
    assert len(TOY_PRESETS) == 13
    assert TOY_PRESETS["bayesian_neural_network"].multipliers == (
        0,
        0,
        1,
        1,
        0,
    )  # rho delta gamma sigma nu
    assert TOY_PRESETS["full_objective"].multipliers[:4] == (0.9, 1, 1000, 0.5)


def test_run_folder_metrics_and_resumption(tmp_path):
    presets = [HAND_CRAFTED, "vae", "bayesian_neural_network"]
    metrics = run_toy_frontier(presets, tmp_path, SHORT, progress=False, gibbs=None)
    stored = json.loads((tmp_path / "metrics.json").read_text())
    assert list(stored) == presets
    for splits in stored.values():
        assert set(splits) == {"train", "exact"}
        assert set(splits["exact"]) == {"R", "D", "C", "S"}
    assert stored[HAND_CRAFTED]["exact"]["R"] == pytest.approx(0.5, abs=1e-5)
    for name in presets:
        assert (tmp_path / name / "figure.png").stat().st_size > 10_000
    model = tmp_path / "vae" / "model.pt"
    stamp = model.stat().st_mtime_ns
    assert run_toy_frontier(presets, tmp_path, SHORT, progress=False, gibbs=None) == metrics
    assert model.stat().st_mtime_ns == stamp  # resumed: nothing retrained
    assert "| VAE (Fig. 7a) | 1, 1, 0, 0 |" in markdown_frontier(metrics)
    with pytest.raises(ValueError, match="other settings"):
        run_toy_frontier(presets, tmp_path, ToyConfig(steps=41), progress=False, gibbs=None)
    with pytest.raises(ValueError, match="unknown preset"):
        run_toy_frontier(["vea"], tmp_path / "other", SHORT, progress=False)


def test_information_inequalities_hold_on_the_exact_distribution(tmp_path):
    """Eq. 12 (R + D >= H(X)) and eq. 11 with KL(p||Q) >= 0 (R + D + C >= H(X, Y))."""
    metrics = run_toy_frontier(
        ["semi_supervised_vae", "full_objective"], tmp_path, SHORT, progress=False, gibbs=None
    )
    joint = toy_data().joint
    h_x, h_xy = float(entropy(joint.sum(1))), float(entropy(joint))
    for splits in metrics.values():
        exact = splits["exact"]
        assert exact["R"] + exact["D"] >= h_x
        assert exact["R"] + exact["D"] + exact["C"] >= h_xy
        assert exact["S"] > 0


def test_training_lowers_the_objective_it_is_given():
    worlds, history = train_toy(
        TOY_PRESETS["vae"].multipliers, ToyConfig(steps=300), progress=False
    )
    first, last = history[0]["J"], history[-1]["J"]
    assert last < first
    assert all(torch.isfinite(parameter).all() for parameter in worlds.parameters())


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="steps"):
        ToyConfig(steps=0)
    with pytest.raises(ValueError, match="learning_rate"):
        ToyConfig(learning_rate=-1.0)


def test_frontier_cli(tmp_path):
    result = runner.invoke(
        app,
        ["frontier", "--preset", "hand_crafted,vib", "--steps", "20", "--out", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    assert "VIB (Fig. 5a)" in result.output
    assert (tmp_path / "frontier.csv").exists() and (tmp_path / "frontier.md").exists()
    bad = runner.invoke(app, ["frontier", "--data", "mnist", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "toy" in bad.output
