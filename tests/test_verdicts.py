"""Saturation verdicts (issue 9 items 1–2): the total saturated fraction of two-sided activations,
naming the sides; for relu, dead units and a zero fraction well above the ≈0.5 a symmetric init gives."""

from __future__ import annotations

from typing import Any

import pytest

from glorot_core.runner import run_experiment
from glorot_core.spec import validate_spec
from glorot_core.verdicts import EXPECTED_ZERO_FRACTION, SATURATED_FRACTION, ZERO_FRACTION_MARGIN, diagnose

SATURATION_CODES = {"saturated_low", "saturated_high", "saturated_both"}


def _run(model: dict[str, Any], steps: int = 0, lr: float = 0.01) -> dict[str, Any]:
    return run_experiment(validate_spec({
        "model": model, "data": {"test_examples": 100},
        "train": {"steps": steps, "lr": lr},
        "diagnostics": {"every": max(steps, 1), "monitor_examples": 300, "jacobian": {"mode": "off"}},
        "device": "cpu",
    }))


def _saturation_verdicts(report: dict[str, Any], step: int) -> dict[int, dict[str, Any]]:
    return {v["layer"]: v for v in report["verdicts"] if v["code"] in SATURATION_CODES and v["step"] == step}


def _report_with(saturation: dict[str, Any]) -> dict[str, Any]:
    layer = {"index": 1, "saturation": saturation, "backprop_grad": {"std": 1.0}}
    return {"snapshots": [{"step": 0, "layers": [layer]}], "end": {}}


def test_lr50_tanh_layers_saturated_on_both_sides_are_flagged() -> None:
    """lr = 50 drives every tanh layer to ±1 within 50 updates, about half on each side: no side alone
    reaches one half, the total does, and every layer is flagged (paper Fig 3's story needs it)."""
    report = _run({"hidden": [200] * 5, "activation": "tanh", "init": "standard"}, steps=50, lr=50.0)
    last = report["snapshots"][-1]
    found = _saturation_verdicts(report, last["step"])
    assert sorted(found) == [1, 2, 3, 4, 5]
    for lay in last["layers"]:
        sat, v = lay["saturation"], found[lay["index"]]
        assert sat["low"] + sat["high"] > 0.9  # the report keeps both sides
        assert v["values"]["fraction"] == pytest.approx(sat["low"] + sat["high"], abs=1e-6)
        assert v["code"] == "saturated_both" and v["values"]["sides"] == ["low", "high"]


def test_one_sided_and_two_sided_saturation_codes() -> None:
    rule = {"threshold": 0.05, "rule": "output <= -0.95 (low) or >= 0.95 (high)"}
    both = diagnose(_report_with({"fraction": 0.998, "low": 0.5, "high": 0.498, **rule}), None)
    assert [v["code"] for v in both] == ["saturated_both"] and "50% low and 50% high" in both[0]["message"]
    low = diagnose(_report_with({"fraction": 0.6, "low": 0.59, "high": 0.01, **rule}), None)
    assert [v["code"] for v in low] == ["saturated_low"]
    below = SATURATED_FRACTION - 0.01
    assert diagnose(_report_with({"fraction": below, "low": below / 2, "high": below / 2, **rule}), None) == []


def test_he_init_relu_network_at_init_is_not_flagged() -> None:
    """He-init relu 5×1000 at init: each pre-activation is symmetric about 0, so ≈half the outputs
    are 0 in every layer; that is health, not saturation."""
    report = _run({"hidden": [1000] * 5, "activation": "relu", "init": "he"})
    fractions = [lay["saturation"]["fraction"] for lay in report["snapshots"][0]["layers"]]
    # The pooled zero fraction of 300k outputs deviates from 0.5 by ≈0.01–0.015 between weight draws.
    assert all(abs(f - EXPECTED_ZERO_FRACTION) < 0.06 for f in fractions), fractions
    codes = {v["code"] for v in report["verdicts"]}
    assert not codes & (SATURATION_CODES | {"dead_units"}), report["verdicts"]


def test_relu_network_with_biases_of_minus_5_is_flagged() -> None:
    """Biases of −5 put every pre-activation below 0 (|Σ w z| ≪ 5 at He init): the zero fraction is ≈1,
    far above 0.5 + margin, and almost every unit is dead on the whole monitor set."""
    report = _run({"hidden": [1000] * 5, "activation": "relu", "init": "he", "bias_init": -5.0})
    found = _saturation_verdicts(report, 0)
    assert sorted(found) == [1, 2, 3, 4, 5]
    for v in found.values():
        assert v["code"] == "saturated_low"
        assert v["values"]["fraction"] >= EXPECTED_ZERO_FRACTION + ZERO_FRACTION_MARGIN
    dead = {v["layer"] for v in report["verdicts"] if v["code"] == "dead_units"}
    assert dead == {1, 2, 3, 4, 5}
