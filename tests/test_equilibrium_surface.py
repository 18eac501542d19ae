"""The iso-classification driver on digits (paper 002): bookkeeping, resume, schedules, bad input.

The numerical engines it composes are tested against closed forms in
tests/inference/test_quasi_static.py; here: the functionals it logs equal the derived bound's, a
resumed run equals a straight one, and its schedules are the documented ones."""

from __future__ import annotations

import csv

import pytest
import torch
from thermossl.inference.quasi_static import rise_and_anneal
from thermossl.models.therml_digits import DIGITS_SITES, DigitsWorlds, digits_data
from thermossl.objectives.therml import functionals
from typer.testing import CliRunner

from thermossl.cli import app
from thermossl.equilibrium_surface import (
    SurfaceConfig,
    equilibrate,
    evaluate_functionals,
    run_iso_classification,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SMALL = {"initial_steps": 30, "equilibration_steps": 10, "latent_dim": 2, "hidden": 8}


def test_evaluated_functionals_are_the_derived_bounds_averaged_over_the_fixed_draws():
    data = digits_data()
    worlds = DigitsWorlds(latent_dim=2, hidden=8)
    pixels, labels = data.train_pixels[:100], data.train_labels[:100]
    values = evaluate_functionals(worlds, pixels, labels, draws=3, seed=5)
    noise = torch.randn(3, 100, 2, generator=torch.Generator().manual_seed(5))
    expected = [
        functionals(worlds.model, worlds.guide, pixels, labels, None, noise[k], None,
                    num_examples=100, sites=DIGITS_SITES)
        for k in range(3)
    ]  # fmt: skip
    for key, name in (("R", "rate"), ("D", "distortion"), ("C", "classification")):
        mean = sum(float(getattr(e, name)) for e in expected) / 3
        assert values[key] == pytest.approx(mean, rel=1e-5)


def test_equilibration_steps_at_the_scheduled_rate():
    """Adam's first step moves the parameter with the largest gradient by the learning rate
    (|m / sqrt(v)| = 1): one equilibration step of T = 1 is scheduled at rise_and_anneal(1, 2)."""
    data = digits_data()
    worlds = DigitsWorlds(latent_dim=2, hidden=8)
    before = [p.detach().clone() for p in worlds.parameters()]
    equilibrate(worlds, data, 0.5, 5.0, steps=1, peak_learning_rate=1e-3, seed=0)
    moved = max(
        float((p - b).abs().max()) for p, b in zip(worlds.parameters(), before, strict=True)
    )
    assert moved == pytest.approx(rise_and_anneal(1, 2, 1e-3), rel=1e-4)
    with pytest.raises(ValueError, match="schedule"):
        equilibrate(worlds, data, 0.5, 5.0, steps=1, peak_learning_rate=1e-3, seed=0, schedule="x")


def _rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_a_resumed_process_equals_a_straight_one(tmp_path):
    config = SurfaceConfig(steps=2, **SMALL)
    run_iso_classification(config, tmp_path / "straight", progress=False)
    run_iso_classification(SurfaceConfig(steps=1, **SMALL), tmp_path / "split", progress=False)
    run_iso_classification(config, tmp_path / "split", resume=True, progress=False)
    straight, split = (
        _rows(tmp_path / "straight" / "path.csv"),
        _rows(tmp_path / "split" / "path.csv"),
    )
    assert straight == split and len(straight) == 3
    assert {"step", "lambda", "gamma", "R", "D", "C"} <= set(straight[0])


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["iso", "--lambda", "0"], "lambda_ must be"),
        (["iso", "--gamma", "-2"], "gamma must be"),
        (["iso", "--data", "moons"], "only digits"),
        (["iso", "--steps", "0"], "steps must be"),
    ],
)
def test_cli_rejects_bad_input(tmp_path, arguments, message):
    result = CliRunner().invoke(app, [*arguments, "--out", str(tmp_path / "x")])
    assert result.exit_code != 0
    assert message in result.output
