"""The pair study (Table 2 on digits): training helps the probe, and the run folder resumes."""

from __future__ import annotations

import json

import pytest

from thermossl.ldm_pairs_study import (
    PAIR_CONFIGURATIONS,
    PairStudyConfig,
    baseline_accuracies,
    pair_configuration,
    run_pair_study,
    train_pair_model,
)

SHORT = PairStudyConfig(steps=120, batch_size=128)


def test_the_sphere_kde_goal_learns_a_latent_the_probe_reads_better_than_an_untrained_one():
    baselines = baseline_accuracies(SHORT, seeds=3)
    result = train_pair_model("sphere", "kde", False, SHORT, seed=0)
    assert result["latent_accuracy"] > max(baselines["untrained_latent"]) + 0.05
    assert baselines["pixels"] > 0.9  # the digits are nearly linearly separable already


def test_names_round_trip_and_unknown_names_are_refused():
    assert len(PAIR_CONFIGURATIONS) == 12
    assert pair_configuration("plane-knn-mi") == ("plane", "knn", True)
    assert pair_configuration("sphere-logdet") == ("sphere", "logdet", False)
    for name in ("torus-knn", "plane-histogram", "plane-knn-mi-extra", "plane"):
        with pytest.raises(ValueError, match="unknown pair configuration"):
            pair_configuration(name)


def test_the_study_writes_its_table_and_resumes(tmp_path):
    config = PairStudyConfig(steps=5, batch_size=64)
    metrics = run_pair_study(["plane-logdet"], seeds=2, out=tmp_path, config=config, progress=False)
    row = metrics["configurations"]["plane-logdet"]
    assert len(row["accuracy"]) == 2 and 0.0 <= row["mean"] <= 1.0
    assert "| plane | logdet | no |" in (tmp_path / "table.md").read_text()
    saved = json.loads((tmp_path / "plane-logdet" / "seed-1.json").read_text())
    saved["accuracy"] = -1.0  # a finished run is read back, not retrained
    (tmp_path / "plane-logdet" / "seed-1.json").write_text(json.dumps(saved))
    again = run_pair_study(["plane-logdet"], seeds=2, out=tmp_path, config=config, progress=False)
    assert again["configurations"]["plane-logdet"]["accuracy"][1] == -1.0
    with pytest.raises(ValueError, match="other settings"):
        run_pair_study(["plane-logdet"], 2, tmp_path, PairStudyConfig(steps=6), progress=False)


def test_the_ldm_cli_runs_the_pair_study_and_names_what_it_cannot_run(tmp_path):
    from typer.testing import CliRunner

    from thermossl.cli import app

    runner = CliRunner(env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
    arguments = ["ldm", "--configuration", "sphere-kde-mi", "--seeds", "1", "--steps", "3"]
    result = runner.invoke(app, [*arguments, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "| sphere | kde | yes |" in result.output and "| raw pixels |" in result.output
    bad = runner.invoke(app, ["ldm", "--configuration", "cube-kde", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "unknown pair configuration" in bad.output
    other = runner.invoke(app, ["ldm", "--model", "cpc", "--out", str(tmp_path / "y")])
    assert other.exit_code != 0 and "not available" in other.output
