"""glorot_core.compare and the overlay figures without the service: layers matched by index across runs
of different depths, the snapshot choice, and every drawn line read back equal to the report's
histogram or statistic."""

from __future__ import annotations

import itertools
import json
from typing import Any

import numpy as np
import pytest

from glorot_core.compare import Run, compare, parse_snapshot, snapshot_index
from glorot_core.figures.overlay import OVERLAYS, render
from glorot_core.runner import run_experiment
from glorot_core.spec import validate_spec


def _report(init: str, hidden: list[int]) -> dict[str, Any]:
    spec = validate_spec({"device": "cpu", "model": {"hidden": hidden, "init": init}, "train": {"steps": 10},
                          "data": {"test_examples": 50},
                          "diagnostics": {"every": 10, "monitor_examples": 30, "jacobian": {"mode": "off"}}})
    return dict(json.loads(json.dumps(run_experiment(spec))))


@pytest.fixture(scope="module")
def runs() -> list[Run]:
    out = []
    for k, (init, hidden) in enumerate((("standard", [12, 12, 12]), ("normalized", [12, 12]))):
        r = _report(init, hidden)
        out.append(Run(label=f"job{k}", spec=r["spec"], layers=r["layers"], snapshot=r["snapshots"][0],
                       snapshot_index=0))
    return out


def test_layers_are_matched_by_index_and_missing_ones_are_null(runs: list[Run]) -> None:
    body = compare(runs, "init")
    assert [lay["index"] for lay in body["layers"]] == [1, 2, 3]
    third = body["layers"][2]
    assert third["present"] == [True, False]
    assert third["statistics"]["activation.std"]["values"][1] is None
    assert third["statistics"]["activation.std"]["differences"] == [None]
    assert third["histograms"]["activation"]["same_bins"] is False  # one run has no histogram there
    assert body["same_bins"]["activation"] is False and body["same_bins"]["backprop_grad"] is False
    first = body["layers"][0]["statistics"]["jacobian.mean_sv"]  # Jacobians off: not measured
    assert first == {"values": [None, None], "differences": [None]}
    with pytest.raises(ValueError):
        compare(runs[:1], "init")


def test_snapshot_choice() -> None:
    assert [parse_snapshot(t) for t in ("init", "final", "0", "12")] == ["init", "final", 0, 12]
    for bad in ("last", "-1", "1.5", ""):
        with pytest.raises(ValueError):
            parse_snapshot(bad)
    assert (snapshot_index("init", 3), snapshot_index("final", 3), snapshot_index(1, 3)) == (0, 2, 1)
    with pytest.raises(IndexError):
        snapshot_index(3, 3)


def _fractions(hist: dict[str, Any]) -> np.ndarray:
    total = sum(hist["counts"]) + hist["underflow"] + hist["overflow"] + hist["nonfinite"]
    return np.asarray(hist["counts"], dtype=float) / total


def test_histogram_overlays_draw_each_runs_numbers(runs: list[Run]) -> None:
    for name, section in (("activation_histograms", "activation"), ("backprop_grad_histograms", "backprop_grad"),
                          ("weight_grad_histograms", "weight_grad")):
        ax = OVERLAYS[name].build(runs).axes[0]
        lines = {ln.get_gid(): ln for ln in ax.get_lines() if ln.get_gid()}
        assert set(lines) == {f"{section}-layer{i}-run{k}" for k, n in ((1, 3), (2, 2)) for i in range(1, n + 1)}
        for k, run in enumerate(runs, start=1):
            for lay in run.snapshot["layers"]:
                line = lines[f"{section}-layer{lay['index']}-run{k}"]
                hist = lay[section]["histogram"]
                y = _fractions(hist)
                if section == "activation":  # density: fraction / bin width, as Fig 6's y axis
                    y = y / np.diff(np.asarray(hist["edges"], dtype=float))
                    assert ax.get_xscale() == "linear"
                else:
                    assert ax.get_xscale() == "symlog"
                np.testing.assert_allclose(line.get_ydata(), y, rtol=1e-12)
                assert len(line.get_xdata()) == len(hist["counts"])
        # one colour per layer across runs, one line style per run across layers
        for i in (1, 2):
            assert lines[f"{section}-layer{i}-run1"].get_color() == lines[f"{section}-layer{i}-run2"].get_color()
        styles = {k: {ln.get_linestyle() for g, ln in lines.items() if g.endswith(f"run{k}")} for k in (1, 2)}
        assert all(len(s) == 1 for s in styles.values()) and styles[1] != styles[2]


def test_layer_profile_draws_each_runs_std(runs: list[Run]) -> None:
    fig = OVERLAYS["layer_profile"].build(runs)
    for ax, section in zip(fig.axes, ("activation", "backprop_grad"), strict=True):
        lines = {ln.get_gid(): ln for ln in ax.get_lines() if ln.get_gid()}
        for k, run in enumerate(runs, start=1):
            line = lines[f"profile-{section}-run{k}"]
            assert list(line.get_xdata()) == [lay["index"] for lay in run.snapshot["layers"]]
            assert list(line.get_ydata()) == [lay[section]["std"] for lay in run.snapshot["layers"]]
    for name, fmt in itertools.product(OVERLAYS, ("png", "svg")):
        data = render(name, runs, fmt)
        assert data.startswith(b"\x89PNG") if fmt == "png" else b"<svg" in data[:400]
