"""Seed studies behind ``thermossl compare``: the statistics, the files, resuming, bad input."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from typer.testing import CliRunner

from thermossl.cli import app
from thermossl.seed_study import run_study, summarize, write_tables
from thermossl.training import TrainingConfig


def base_config() -> TrainingConfig:
    config = TrainingConfig(method="gedi_no_gen", data="moons", iterations=3, batch_size=16)
    config.settings.langevin["buffer_size"] = 50
    return config


def test_the_summary_is_the_mean_and_sample_sd_per_method():
    flags = {
        "representation_collapse": False,
        "cluster_collapse": True,
        "label_inconsistency": False,
    }
    rows = [
        {"method": "a", "nmi": 0.2, "failure_modes": flags},
        {"method": "a", "nmi": 0.4, "failure_modes": {**flags, "cluster_collapse": False}},
        {"method": "a", "nmi": 0.9, "failure_modes": flags},
        {"method": "b", "nmi": 0.5},
    ]
    first, second = summarize(rows)
    assert first.method == "a" and first.seeds == 3
    assert first.nmi_mean == pytest.approx(0.5, abs=1e-15)
    assert first.nmi_sd == pytest.approx(math.sqrt((0.3**2 + 0.1**2 + 0.4**2) / 2), abs=1e-15)
    assert first.failures == {
        "representation_collapse": 0,
        "cluster_collapse": 2,
        "label_inconsistency": 0,
    }
    assert second.failures == {} and math.isnan(second.nmi_sd)
    assert first.cells()[1] == "0.50 ± 0.36" and first.cells()[4] == "2/3"
    assert first.cells()[2] == "–" and math.isnan(first.probe_mean)  # no probe in these rows
    probed = summarize([{"method": "c", "nmi": 0.1, "linear_probe": p} for p in (0.8, 0.9)])[0]
    assert probed.probe_mean == pytest.approx(0.85) and probed.cells()[2] == "0.850 ± 0.071"


def test_a_study_trains_every_pair_once_and_resumes_from_finished_runs(tmp_path):
    methods, seeds = ["gedi_no_gen", "barlow"], [0, 1]
    threads = torch.get_num_threads()
    rows = run_study(base_config(), methods, seeds, tmp_path, progress=False)
    assert torch.get_num_threads() == threads  # in-process runs leave the thread count alone
    assert [(row["method"], row["seed"]) for row in rows] == [
        (m, s) for m in methods for s in seeds
    ]
    finished = tmp_path / "barlow-1" / "metrics.json"
    stamp = finished.stat().st_mtime_ns
    again = run_study(base_config(), methods, seeds, tmp_path, progress=False)
    assert finished.stat().st_mtime_ns == stamp  # read back, not retrained
    assert [row["nmi"] for row in again] == [row["nmi"] for row in rows]

    summaries = summarize(rows)
    runs_csv, summary_csv, summary_md = write_tables(rows, summaries, tmp_path, "moons")
    with open(runs_csv) as handle:
        assert len(list(csv.DictReader(handle))) == 4
    with open(summary_csv) as handle:
        table = {row["method"]: row for row in csv.DictReader(handle)}
    assert float(table["barlow"]["nmi_mean"]) == pytest.approx(summaries[1].nmi_mean)
    assert table["barlow"]["cluster_collapse"] == ""  # no clusters, no flag
    assert "| gedi_no_gen |" in summary_md.read_text()


def test_a_study_rejects_unknown_methods_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"unknown method 'nope'.*gedi"):
        run_study(base_config(), ["gedi_no_gen", "nope"], [0], tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()
    with pytest.raises(ValueError, match="one method and one seed"):
        run_study(base_config(), [], [0], tmp_path, progress=False)
    with pytest.raises(ValueError, match="jobs"):
        run_study(base_config(), ["gedi"], [0], tmp_path, jobs=0, progress=False)


def test_compare_prints_and_writes_the_table(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "compare",
            "--data",
            "circles",
            "--seeds",
            "2",
            "--methods",
            "gedi_no_gen,swav",
            "--iterations",
            "2",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "NMI on circles" in result.output and "| swav |" in result.output
    assert (tmp_path / "summary.md").exists() and (tmp_path / "swav-1" / "metrics.json").exists()
    bad = CliRunner().invoke(app, ["compare", "--methods", "gedi,nope", "--out", str(tmp_path)])
    assert bad.exit_code != 0 and "unknown method" in bad.output


def test_a_study_with_other_settings_retrains(tmp_path):
    run_study(base_config(), ["gedi_no_gen"], [0], tmp_path, progress=False)
    metrics = tmp_path / "gedi_no_gen-0" / "metrics.json"
    stamp = metrics.stat().st_mtime_ns
    other = base_config()
    other.augmentation_noise = 0.1
    run_study(other, ["gedi_no_gen"], [0], tmp_path, progress=False)
    assert metrics.stat().st_mtime_ns != stamp


def test_a_run_saved_before_a_setting_existed_matches_its_default(tmp_path):
    """A config.json written before a field was added (here ``restarts``) still names the same
    run when the field holds its default, and a different one otherwise."""
    import json
    from dataclasses import replace

    from thermossl.seed_study import _same_settings

    config = base_config()
    saved = config.to_dict()
    del saved["restarts"], saved["restart"]
    (tmp_path / "config.json").write_text(json.dumps({**saved, "environment": {}}))
    assert _same_settings(config, tmp_path)
    assert not _same_settings(replace(config, restarts=2), tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**saved, "unknown_setting": 1}))
    assert not _same_settings(config, tmp_path)
