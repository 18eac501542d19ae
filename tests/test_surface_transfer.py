"""The geodesic transfer driver on digits (paper 002, §4.2–4.3): the data mixture of eq. 23, the
shared labels of §5.3, the rates of eq. 30 against the derivatives the run logged, the weight
prior reaching every training, resume, the command line and bad input.

Its numerical engines (eq. 30's solve, the equilibration) are tested in
tests/inference/test_quasi_static.py and tests/test_equilibrium_surface.py."""

from __future__ import annotations

import csv
import inspect
import itertools
import json
import math

import pytest
import torch
from thermossl.models.digit_tasks import (
    Mixture,
    interleaved_order,
    mixture_weights,
    parse_classes,
    shared_labels,
)
from thermossl.models.therml_digits import DigitsWorlds, digits_data
from typer.testing import CliRunner

from thermossl import cli, surface_transfer
from thermossl.cli import app
from thermossl.equilibrium_surface import equilibrate, evaluate_functionals
from thermossl.surface_transfer import (
    TransferConfig,
    TransferState,
    correct_onto_path,
    transfer_worlds,
)
from thermossl.surface_transfer_figures import relative_changes_of_C
from thermossl.surface_transfer_rates import (
    chord_slope,
    least_change_slope,
    path_correction,
    path_residuals,
)
from thermossl.surface_transfer_run import run_transfer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TINY = {
    "steps": 2,
    "initial_steps": 30,
    "equilibration_steps": 8,
    "latent_dim": 2,
    "hidden": 8,
    "batch_size": 64,
    "evaluation_draws": 1,
}
SOURCE, TARGET = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
EPS = torch.finfo(torch.float64).eps
runner = CliRunner(env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})


def _rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def _numbers(row):
    return {key: float(value) for key, value in row.items() if key != "time_scheme" and value}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """A tiny run with the defaults (eq. 30's predictor and the corrector, the chord's slope,
    shared outputs, weight prior), recording every call of ``equilibrate``."""
    out = tmp_path_factory.mktemp("straight")
    calls = []

    signature = inspect.signature(equilibrate)

    def recording(*arguments, **options):
        calls.append(signature.bind(*arguments, **options).arguments)
        return equilibrate(*arguments, **options)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(surface_transfer, "equilibrate", recording)
        run_transfer(TransferConfig(**TINY), out, progress=True)
    return out, calls


# classes, labels and settings --------------------------------------------------------------------


def test_parse_classes_reads_ranges_and_lists():
    assert parse_classes("0-4") == SOURCE
    assert parse_classes("5,6,7") == (5, 6, 7)
    assert parse_classes("3") == (3,)
    assert parse_classes(" 9, 0-1 ,1") == (0, 1, 9)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "at least one digit"),
        ("  ", "at least one digit"),
        ("a", "cannot read"),
        ("0-4,", "cannot read"),
        ("1--3", "cannot read"),
        ("4-2", "runs backwards"),
        ("10", "must lie in 0-9"),
        ("3-12", "must lie in 0-9"),
        ("-1", "cannot read"),
    ],
)
def test_parse_classes_rejects_bad_text(text, message):
    with pytest.raises(ValueError, match=message):
        parse_classes(text)


def test_shared_labels_number_each_task_by_rank():
    digits = torch.arange(10)
    assert shared_labels(digits, SOURCE, TARGET).tolist() == [0, 1, 2, 3, 4] * 2
    # ranks follow the sorted classes, whatever order they are given in
    assert shared_labels(torch.tensor([7, 2, 9, 1]), (2, 1), (9, 7)).tolist() == [0, 1, 1, 0]
    with pytest.raises(ValueError, match="as many source as target classes, got 4"):
        shared_labels(digits, (0, 1, 2, 3), TARGET)
    with pytest.raises(ValueError, match=r"disjoint tasks, but both name \[4\]"):
        shared_labels(digits, SOURCE, (4, 5, 6, 7, 8))
    with pytest.raises(ValueError, match=r"labels \[9\] belong to neither"):
        shared_labels(torch.tensor([0, 9]), (0, 1), (5, 6))


def test_mixture_relabels_and_keeps_only_the_two_tasks():
    data = digits_data()
    separate = Mixture(data, (1, 3), (8, 6), shared_outputs=False)
    shared = Mixture(data, (1, 3), (8, 6), shared_outputs=True)
    assert (separate.num_outputs, shared.num_outputs) == (10, 2)
    in_tasks = torch.isin(data.train_labels, torch.tensor([1, 3, 6, 8]))
    assert shared.data.train_pixels.shape[0] == int(in_tasks.sum())
    assert torch.equal(shared.data.train_pixels, separate.data.train_pixels)
    assert torch.equal(separate.data.train_labels, separate.train_digits)
    rank = {1: 0, 3: 1, 6: 0, 8: 1}
    for name in ("train", "test"):
        digits = getattr(shared, f"{name}_digits").tolist()
        assert getattr(shared.data, f"{name}_labels").tolist() == [rank[d] for d in digits]
    # each pixel row still carries its own digit: the relabelled rows match the raw data
    first = shared.data.test_pixels[0]
    raw = torch.nonzero((data.test_pixels == first).all(-1)).flatten()
    assert int(data.test_labels[raw[0]]) == int(shared.test_digits[0])


def test_transfer_worlds_keep_the_first_outputs_of_the_seeded_classifier():
    config = TransferConfig(latent_dim=3, hidden=8, seed=4)
    full = DigitsWorlds(latent_dim=3, hidden=8, seed=4)
    reduced = transfer_worlds(config, 5)
    assert reduced.classifier.weight.shape == (5, 3)
    assert torch.equal(reduced.classifier.weight, full.classifier.weight[:5])
    assert torch.equal(reduced.encoder_head.weight, full.encoder_head.weight)
    assert transfer_worlds(config, 10).classifier.weight.shape == (10, 3)
    with pytest.raises(ValueError, match="num_outputs must be at most 10"):
        transfer_worlds(config, 11)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"lambda_": 0.0}, "lambda_ must be"),
        ({"lambda_": -1.0}, "lambda_ must be"),
        ({"gamma": 0.0}, "gamma must be"),
        ({"gamma": float("nan")}, "gamma must be"),
        ({"weight_decay": -1e-3}, "weight_decay must be"),
        ({"weight_decay": float("inf")}, "weight_decay must be"),
        ({"source": ()}, "empty split"),
        ({"target": ()}, "empty split"),
        ({"target": (5, 5)}, "twice"),
        ({"target": (5, 10)}, "digit classes 0-9"),
        ({"source": "0-4", "target": "4-9"}, r"share the classes \[4\]"),
        ({"source": "0-3", "target": "5-9"}, "as many source as target classes"),
        ({"source": "0-4", "target": "4-8", "allow_overlap": True}, "disjoint tasks"),
        ({"steps": 0}, "steps must be"),
        ({"time_difference": 0.7}, "time_difference"),
        ({"slope": -2.0}, "slope must not be"),  # 1 + k lambda = 0 at lambda = 0.5
        ({"max_relative_change": 1.0}, "max_relative_change"),
        ({"slope": "steep"}, "slope must be a number or one of"),
        ({"slope": float("inf")}, "slope must be a finite number"),
        ({"tolerance": 0.0}, "tolerance must lie"),
        ({"line_tolerance": 1.0}, "line_tolerance must lie"),
        ({"corrections": -1}, "corrections must be a non-negative integer"),
    ],
)
def test_config_rejects_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        TransferConfig(**settings).validate()


def test_unequal_or_overlapping_tasks_need_separate_outputs():
    TransferConfig(source="0-3", target="5-9", shared_outputs=False).validate()
    config = TransferConfig(source="0-5", target="5-9", shared_outputs=False, allow_overlap=True)
    config.validate()
    assert config.source == (0, 1, 2, 3, 4, 5)


# the data mixture (eq. 23) -----------------------------------------------------------------------


def test_mixture_weights_are_the_two_uniform_laws_mixed():
    labels = digits_data().train_labels
    in_source, in_target = labels < 5, labels >= 5
    for t in (0.0, 0.3, 1.0):
        weights = mixture_weights(labels, SOURCE, TARGET, t)
        shares = [torch.tensor(share, dtype=torch.float64) for share in ((1 - t), t)]
        expected = torch.where(
            in_source, shares[0] / int(in_source.sum()), shares[1] / int(in_target.sum())
        )
        assert torch.allclose(weights, expected, rtol=1e-12, atol=0)
        assert float(weights.sum()) == pytest.approx(1.0, abs=1e-12)
    # classes of neither task weigh zero; an example of both tasks carries both shares
    weights = mixture_weights(labels, (0, 1), (1, 2), 0.25)
    assert float(weights[labels > 2].abs().sum()) == 0
    one = labels == 1
    expected = 0.75 / int((labels <= 1).sum()) + 0.25 / int(((labels == 1) | (labels == 2)).sum())
    assert torch.allclose(weights[one], torch.tensor(expected, dtype=torch.float64))
    with pytest.raises(ValueError, match="t must lie"):
        mixture_weights(labels, SOURCE, TARGET, 1.5)


def test_weighted_functionals_combine_the_separate_source_and_target_ones():
    data = digits_data()
    worlds = DigitsWorlds(latent_dim=2, hidden=8)
    t = 0.3
    weights = mixture_weights(data.train_labels, SOURCE, TARGET, t)
    mixed = evaluate_functionals(worlds, data.train_pixels, data.train_labels, 2, weights=weights)
    parts = [
        evaluate_functionals(worlds, data.train_pixels[mask], data.train_labels[mask], 2)
        for mask in (data.train_labels < 5, data.train_labels >= 5)
    ]
    for key in ("R", "D", "C", "accuracy"):
        assert mixed[key] == pytest.approx((1 - t) * parts[0][key] + t * parts[1][key], rel=1e-6)
    assert parts[0]["C"] != pytest.approx(parts[1]["C"], rel=1e-3)  # the mixture matters


def test_interleaved_order_couples_the_draws_of_nearby_mixtures():
    """Inverse-CDF draws from p(x, t) and p(x, t + 0.05) with one generator: with the examples
    interleaved, a draw changes only where the mixture moved (ideally 5 %); in the raw order
    most draws change."""
    labels = digits_data().train_labels
    order = interleaved_order(labels, SOURCE, TARGET)
    assert sorted(order.tolist()) == list(range(labels.shape[0]))

    def shared(labels):
        draws = [
            torch.multinomial(
                mixture_weights(labels, SOURCE, TARGET, t),
                4096,
                replacement=True,
                generator=torch.Generator().manual_seed(1),
            )
            for t in (0.3, 0.35)
        ]
        return float((draws[0] == draws[1]).double().mean())

    assert shared(labels[order]) > 0.88
    assert shared(labels) < 0.6


# the process ------------------------------------------------------------------------------------


def _check_eq30(rows, steps):
    """Each step's rates solve eq. 30 with the derivatives, slope and lambda it logged, and the
    multipliers moved by rate x dt."""
    for row in rows[1:]:
        value = _numbers(row)
        k, lam = value["slope"], value["lambda_start"]
        lambda_dot, gamma_dot = value["lambda_rate"], value["gamma_rate"]
        right = k * value["dR/dt"] / (1 + k * lam) - value["dD/dt"]
        for row_name, target in (("D", right), ("C", -value["dC/dt"])):
            terms = (
                value[f"d{row_name}/dlambda"] * lambda_dot,
                value[f"d{row_name}/dgamma"] * gamma_dot,
            )
            # a backward-stable solve of the 2 x 2 system: residual within a few ulps of its terms
            bound = 16 * EPS * (abs(terms[0]) + abs(terms[1]) + abs(target))
            assert abs(terms[0] + terms[1] - target) <= bound
        scale = value["rate_scale"]
        assert 0 < scale <= 1
        if not value["lambda_clipped"]:
            predicted = lam + scale * lambda_dot / steps
            assert value["lambda_predicted"] == pytest.approx(
                predicted, rel=4 * EPS
            )  # x dt vs / steps
            if value["corrections"] == 0:
                assert value["lambda"] == value["lambda_predicted"]
    assert [row["time_scheme"] for row in rows[1:]] == ["forward", "central"][: len(rows) - 1]


def test_each_step_solves_eq30_with_the_derivatives_it_logged(straight):
    out = straight[0]
    rows = _rows(out / "path.csv")
    assert len(rows) == TINY["steps"] + 1
    assert [float(row["t"]) for row in rows] == [0.0, 0.5, 1.0]
    _check_eq30(rows, TINY["steps"])
    # the defaults: no damping, the slope of the chord to the scratch model
    assert all(_numbers(row)["rate_scale"] == 1 for row in rows[1:])
    scratch = torch.load(out / "checkpoint.pt", weights_only=False)["scratch"]
    expected = chord_slope(_numbers(rows[0]), scratch)
    assert all(_numbers(row)["slope"] == expected for row in rows[1:])


def test_each_step_is_corrected_until_C_is_within_tolerance(straight):
    """The corrector stops with C within 2 % of C0 and the point within 2 % of D0 of the line, or
    after 4 corrections; the logged residual is the one of the row's R, D."""
    rows = [_numbers(row) for row in _rows(straight[0] / "path.csv")]
    start = rows[0]
    for row in rows[1:]:
        line, _ = path_residuals(row, start, row["slope"])
        assert row["line_residual"] == line  # the same formula on the same numbers
        inside = abs(row["C"] / start["C"] - 1) <= 0.02 and abs(line) <= 0.02 * start["D"]
        assert row["corrections"] == 4 or inside
        if row["corrections"] == 0:
            assert abs(row["C_predicted"] / start["C"] - 1) <= 0.02
            assert abs(row["line_residual_predicted"]) <= 0.02 * start["D"]
    # corrections.csv: one row per correction, the last of a step at the step's point
    path = straight[0] / "corrections.csv"
    records = [_numbers(record) for record in _rows(path)] if path.exists() else []
    for row in rows[1:]:
        mine = [record for record in records if record["step"] == row["step"]]
        assert [record["correction"] for record in mine] == list(range(1, len(mine) + 1))
        assert len(mine) == row["corrections"]
        if mine:
            for key in ("lambda", "gamma", "C", "R", "D"):
                assert mine[-1][key] == row[key]  # read off the same parameters


def test_path_correction_is_exact_on_a_power_law_surface():
    """Where R, D are linear and log C is linear in (log lambda, log gamma), one undamped Newton
    step from any point zeroes both residuals, with the derivatives taken elsewhere; a damped
    step changes no multiplier by more than the factor asked for, in the same direction."""
    generator = torch.Generator().manual_seed(3)
    start = {"R": 9.0, "D": 70.0, "C": 0.02}
    checked = 0
    for _ in range(40):
        slope = float(torch.randn((), generator=generator)) * 5
        gradients = torch.randn(3, 2, generator=generator, dtype=torch.float64)
        offset = torch.randn(3, generator=generator, dtype=torch.float64) * 0.3
        jacobian = torch.stack([gradients[1] - slope * gradients[0], gradients[2]])
        if torch.linalg.cond(jacobian) > 100:  # keep the Newton steps of moderate size
            continue
        checked += 1

        def surface(lambda_, gamma, gradients=gradients, offset=offset):
            logs = torch.tensor([math.log(lambda_), math.log(gamma)], dtype=torch.float64)
            moved = offset + gradients @ logs
            return {"R": start["R"] + float(moved[0]), "D": start["D"] + float(moved[1]),
                    "C": start["C"] * math.exp(float(moved[2]))}  # fmt: skip

        where = {"lambda": 0.7, "gamma": 12.0}
        where["C"] = surface(where["lambda"], where["gamma"])["C"]
        derivatives = {}  # d/dlambda = (d/dlog lambda) / lambda; dC = C dlog C
        for column, multiplier in enumerate(("lambda", "gamma")):
            for row, name in enumerate("RD"):
                derivatives[f"d{name}/d{multiplier}"] = (
                    float(gradients[row, column]) / where[multiplier]
                )
            derivatives[f"dC/d{multiplier}"] = (
                where["C"] * float(gradients[2, column]) / where[multiplier]
            )
        lambda_, gamma = 0.5, 5.0
        residuals = path_residuals(surface(lambda_, gamma), start, slope)
        step = path_correction(derivatives, slope, residuals, where, largest_factor=1e9)
        after = surface(lambda_ * math.exp(step[0]), gamma * math.exp(step[1]))
        # round-off: evaluating the line at D ~ 70 and the log of C, and a solve with cond <= 100
        scale = abs(start["D"]) + abs(slope) * abs(start["R"])
        bound = 8 * EPS * (scale + 100 * (abs(residuals[0]) + abs(residuals[1])))
        assert all(abs(left) <= bound for left in path_residuals(after, start, slope))
        damped = path_correction(derivatives, slope, residuals, where, largest_factor=1.01)
        assert max(map(abs, damped)) == pytest.approx(math.log(1.01), rel=1e-12)
        assert damped[0] * step[1] == pytest.approx(damped[1] * step[0], abs=1e-15)
    assert checked >= 20
    with pytest.raises(ValueError, match="singular"):
        zero = dict.fromkeys(derivatives, 0.0)
        path_correction(zero, 1.0, (1.0, 1.0), where)
    with pytest.raises(ValueError, match="largest_factor"):
        path_correction(derivatives, 1.0, (1.0, 1.0), where, largest_factor=1.0)


def test_correct_onto_path_stops_at_the_tolerance(monkeypatch):
    """The corrector loop on a fake surface with C = C0 (6 / gamma)^p and the line always met:
    with the right elasticity (-p) chord Newton reaches gamma = 6 in one correction; with a
    wrong one it takes several, each followed by one equilibration, and stops inside the
    tolerance or at the limit."""
    start = {"R": 1.0, "D": 2.0, "C": 0.1}
    calls = []
    power = 1.5

    def fake_equilibrate(worlds, mixture, config, lambda_, gamma, t, seed, **options):
        calls.append((lambda_, gamma, seed))

    def level(gamma):
        return {"R": 1.0, "D": 2.0, "C": 0.1 * (6.0 / gamma) ** power}

    def fake_values(worlds, mixture, t, draws):
        return level(calls[-1][1])

    monkeypatch.setattr(surface_transfer, "equilibrate_on_mixture", fake_equilibrate)
    monkeypatch.setattr(surface_transfer, "train_values", fake_values)
    config = TransferConfig(steps=4, tolerance=0.01, corrections=5)
    where = {"lambda": 0.5, "gamma": 5.0, "C": level(5.0)["C"]}
    derivatives = {"dR/dlambda": 0.0, "dR/dgamma": 0.0, "dD/dlambda": -1.0, "dD/dgamma": 0.0,
                   "dC/dlambda": 0.0, "dC/dgamma": -power * where["C"] / 5.0}  # fmt: skip
    state = TransferState(None, 0.5, 3.0, step=1, slope=2.0, start=start)
    values, made = correct_onto_path(state, None, config, derivatives, where, level(3.0))
    assert len(made) == 1 and state.gamma == pytest.approx(6.0) and state.lambda_ == 0.5
    assert values["C"] == pytest.approx(0.1) and made[0]["gamma"] == pytest.approx(6.0)
    # an elasticity three times too steep: log gamma approaches log 6 by thirds of the gap
    calls.clear()
    state = TransferState(None, 0.5, 3.0, step=1, slope=2.0, start=start)
    steep = {**derivatives, "dC/dgamma": 3 * derivatives["dC/dgamma"]}
    values, made = correct_onto_path(state, None, config, steep, where, level(3.0))
    gaps = [math.log(6.0 / gamma) for _, gamma, _ in calls]
    assert gaps == pytest.approx([math.log(2) * (2 / 3) ** k for k in range(1, 6)])
    assert len(made) == 5 and abs(values["C"] / 0.1 - 1) > 0.01  # 1.5 * 0.69 * (2/3)^5 > 0.01
    assert len({seed for *_, seed in calls}) == 5  # each correction its own seed
    # already inside the tolerance: nothing to do
    calls.clear()
    _, made = correct_onto_path(state, None, config, derivatives, where, {**start, "C": 0.1005})
    assert made == [] and not calls


def test_rows_log_the_free_energy_with_the_weight_prior(straight):
    """J = R + lambda D + gamma C + S per row, S = eps |theta|^2 / 2 of the shared-output model."""
    out, _ = straight
    rows = [_numbers(row) for row in _rows(out / "path.csv")]
    for row in rows:
        expected = row["R"] + row["lambda"] * row["D"] + row["gamma"] * row["C"] + row["S"]
        assert row["J"] == expected
    saved = torch.load(out / "checkpoint.pt", weights_only=False)
    assert saved["worlds"]["classifier.weight"].shape == (5, TINY["latent_dim"])
    squares = sum(float(value.double().square().sum()) for value in saved["worlds"].values())
    assert rows[-1]["S"] == pytest.approx(0.5 * 1e-2 * squares, rel=1e-5)
    metrics = json.loads((out / "metrics.json").read_text())
    changes = relative_changes_of_C(rows)
    assert metrics["largest_relative_change_of_C"] == pytest.approx(max(map(abs, changes)))
    assert metrics["final_relative_change_of_C"] == pytest.approx(changes[-1])


def test_every_training_gets_the_weight_prior_and_long_ones_a_progress_bar(straight):
    """Source, branches, steps, fine-tuning chunks and scratch all pass weight_decay; only the
    two long trainings (step decay) show a progress bar; the logged gradient steps add up."""
    out, calls = straight
    steps, size = TINY["steps"], TINY["equilibration_steps"]
    path = [_numbers(row) for row in _rows(out / "path.csv")]
    corrections = [int(row["corrections"]) for row in path[1:]]
    # per step: 4 multiplier branches; at t = 0 the center and t + 1/steps, at t = 0.5 the two
    # shifted in t; 1 equilibration and one per correction
    assert len(calls) == 2 + sum(6 + 1 + made for made in corrections) + steps
    assert all(call["weight_decay"] == 1e-2 for call in calls)
    long = [call for call in calls if call.get("schedule") == "step_decay"]
    assert [call["steps"] for call in long] == [TINY["initial_steps"]] * 2
    assert all(call.get("progress") is True for call in long)
    assert not any(call.get("progress") for call in calls if call not in long)
    assert [row["gradient_steps"] for row in path[1:]] == [
        (7 + made) * size for made in corrections
    ]
    times = {float(call["sampling_weights"][0]) for call in calls}  # t +- 1/steps: 0, 0.5, 1
    assert len(times) == 3
    finetune = _rows(out / "finetune.csv")
    assert int(finetune[-1]["gradient_steps"]) == sum(row["gradient_steps"] for row in path[1:])


def test_a_resumed_transfer_equals_a_straight_one(straight, tmp_path):
    straight_out = straight[0]
    assert run_transfer(TransferConfig(**TINY), tmp_path, progress=False, stop_after=1) is None
    assert len(_rows(tmp_path / "path.csv")) == 2 and not (tmp_path / "metrics.json").exists()
    run_transfer(TransferConfig(**TINY), tmp_path, progress=False, resume=True)
    for name in ("path.csv", "finetune.csv"):
        assert _rows(tmp_path / name) == _rows(straight_out / name)
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(
        (straight_out / "metrics.json").read_text()
    )
    with pytest.raises(ValueError, match="other settings"):
        run_transfer(TransferConfig(**{**TINY, "weight_decay": 0.0}), tmp_path, resume=True)
    with pytest.raises(FileExistsError, match="already holds a run"):
        run_transfer(TransferConfig(**TINY), tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        run_transfer(TransferConfig(**TINY), tmp_path / "empty", resume=True)


# the command line --------------------------------------------------------------------------------


def test_cli_defaults_are_the_config_defaults():
    parameters = inspect.signature(cli.transfer).parameters
    defaults = TransferConfig().to_dict()
    assert set(defaults) - set(parameters) == {"minimum_multiplier"}  # not on the command line
    defaults.pop("minimum_multiplier")
    for name, value in defaults.items():
        given = parameters[name].default
        if name in ("source", "target"):
            given = parse_classes(given)
        if name == "max_relative_change":
            given = given or None
        assert given == value, name


def test_cli_transfer_open_loop_with_separate_outputs_and_damping(tmp_path):
    """eq. 30 as written (no corrections) on tasks of different sizes, the least-change slope,
    damped steps."""
    out = tmp_path / "run"
    arguments = ["transfer", "--source", "0-4", "--target", "5-8", "--separate-outputs"]
    arguments += ["--out", str(out), "--corrections", "0", "--max-relative-change", "0.2"]
    arguments += ["--slope", "least-change"]
    arguments += ["--time-difference", "0.05"]
    options = {key.replace("_", "-"): value for key, value in TINY.items()}
    for key, value in options.items():
        arguments += [f"--{key}", str(value)]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert "target accuracy" in result.output
    rows = _rows(out / "path.csv")
    assert {"step", "t", "lambda", "gamma", "R", "D", "C", "S", "J", "accuracy"} <= set(rows[0])
    _check_eq30(rows, TINY["steps"])
    assert all(int(row["corrections"]) == 0 for row in rows[1:])
    first = _numbers(rows[1])  # the least change at t = 0: (lambda_dot / lambda, gamma_dot /
    assert first["slope"] == least_change_slope(first, 0.5, 5.0)
    u, v = first["lambda_rate"] / 0.5, first["gamma_rate"] / 5.0  # gamma) along (a, b)
    a, b = first["dC/dlambda"] * 0.5, first["dC/dgamma"] * 5.0
    assert u * b == pytest.approx(v * a, rel=1e-6, abs=1e-12)
    for before, row in itertools.pairwise(rows):  # damped steps change a multiplier by 20 % at most
        changes = [abs(float(row[k]) / float(before[k]) - 1) for k in ("lambda", "gamma")]
        assert max(changes) <= 0.2 + 1e-9
        assert (float(row["rate_scale"]) < 1) == (max(changes) == pytest.approx(0.2))
    saved = torch.load(out / "checkpoint.pt", weights_only=False)
    assert saved["worlds"]["classifier.weight"].shape[0] == 10  # the digits themselves
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["final_target_accuracy"]) == {"transfer", "finetune", "scratch"}
    assert metrics["config"]["shared_outputs"] is False
    assert (out / "transfer.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--lambda", "0"], "lambda_ must be"),
        (["--gamma", "-2"], "gamma must be"),
        (["--weight-decay", "-1"], "weight_decay must be"),
        (["--source", ""], "at least one digit"),
        (["--target", "5-12"], "must lie in 0-9"),
        (["--source", "0-5", "--target", "5-9"], "share the classes [5]"),
        (["--source", "0-3", "--target", "5-9"], "as many source as target classes"),
        (["--slope", "steep"], "expected a number or one of chord, least-change"),
        (["--tolerance", "0"], "tolerance must lie"),
        (["--corrections", "-1"], "corrections must be a non-negative integer"),
    ],
)
def test_cli_rejects_bad_input(tmp_path, arguments, message):
    result = runner.invoke(app, ["transfer", *arguments, "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not (tmp_path / "x").exists()
