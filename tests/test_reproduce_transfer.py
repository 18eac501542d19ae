"""Slow reproduction of the README's transfer 0–4 → 5–9 (paper 002, §5.2, Fig. 5):
``make reproduce``, about 25 minutes on one core.

The default run of ``thermossl transfer`` (eq. 30's predictor with the chord's slope, up to four
corrections per step at 2 %): C on the training mixture stays within ±3 % of its start at every
t, and the final model classifies the target at least as well as fine-tuning and training from
scratch with the same multipliers (README: 0.987 against 0.982 and 0.978)."""

from __future__ import annotations

import pytest

from thermossl.surface_transfer import TransferConfig
from thermossl.surface_transfer_run import run_transfer

pytestmark = pytest.mark.slow


def test_transfer_keeps_c_and_reaches_the_target(tmp_path):
    metrics = run_transfer(TransferConfig(), tmp_path, progress=False)
    assert metrics["largest_relative_change_of_C"] <= 0.03
    accuracy = metrics["final_target_accuracy"]
    assert accuracy["transfer"] >= 0.95
    # 224 target test images: 0.01 is two of them, the resolution at which "as well as" is read
    assert accuracy["transfer"] >= max(accuracy["finetune"], accuracy["scratch"]) - 0.01
    target_C = metrics["final_target_C"]  # held at C0, below the baselines' C at gamma_0
    assert target_C["transfer"] < min(target_C["finetune"], target_C["scratch"])
