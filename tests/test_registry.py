"""The instrument interface: a statistic registered in the test itself reaches the report's layer
entries and the metric series, on its own schedule, without an edit anywhere else."""

from __future__ import annotations

import json
from typing import Any

import pytest

from glorot_core.instruments.base import Instrument, Registry, Schedule
from glorot_core.instruments.monitor import Monitor
from glorot_core.instruments.probe import Capture
from glorot_core.instruments.registry import DEFAULT
from glorot_core.models import build_mlp
from glorot_core.report import metric_rows
from glorot_core.runner import run_experiment
from glorot_core.spec import validate_spec

SPEC = {
    "model": {"hidden": [16, 12, 8], "activation": "tanh", "init": "normalized"},
    "data": {"test_examples": 100},
    "train": {"steps": 40, "lr": 0.05},
    "diagnostics": {"every": 10, "monitor_examples": 40, "jacobian": {"mode": "off"}},
    "device": "cpu",
}


class RowNorms(Instrument):
    """Mean L2 norm of the weight rows feeding each unit, and the layer's unit count."""

    section = "row_norms"
    scalars = ("mean",)

    def __init__(self, schedule: Schedule = Schedule()) -> None:
        self.schedule = schedule

    def measure_point(self, capture: Capture, monitor: Monitor) -> dict[str, Any]:
        return {"mean": capture.weight.norm(dim=1).mean(), "units": capture.point.shape[0], "note": "text"}


def test_a_registered_instrument_reaches_the_report_and_the_metric_series() -> None:
    spec = validate_spec(SPEC)
    with DEFAULT.added(RowNorms()):
        report = run_experiment(spec)
        rows = list(metric_rows(report))
    model, _ = build_mlp(spec.model, seed=spec.train.seed)  # the same initial weights
    first = report["snapshots"][0]["layers"]
    for lay, lin in zip(first, model.linears, strict=False):
        section = lay["row_norms"]
        assert section["mean"] == pytest.approx(float(lin.weight.detach().norm(dim=1).mean()), rel=1e-6)
        assert section["units"] == lin.weight.shape[0] and section["note"] == "text"
    series = {(step, layer) for step, layer, name, _ in rows if name == "row_norms.mean"}
    assert series == {(s["step"], lay["index"]) for s in report["snapshots"] for lay in s["layers"]}
    assert not any(name == "row_norms.units" for _, _, name, _ in rows)  # only declared scalars are series
    assert {"section": "row_norms", "scalars": ["mean"], "every": 1, "network_section": None} in \
        report["resolved"]["instruments"]
    json.dumps(report, allow_nan=False)
    # Unregistered again: the next run has no such section and no such series.
    again = run_experiment(validate_spec({**SPEC, "train": {"steps": 0}}))
    assert "row_norms" not in again["snapshots"][0]["layers"][0]
    assert not any(name.startswith("row_norms.") for *_, name, _ in metric_rows(again))


def test_an_instrument_runs_on_its_own_schedule() -> None:
    spec = validate_spec({**SPEC, "train": {"steps": 50, "lr": 0.05}})  # snapshots 0..5 at steps 0, 10, …, 50
    with DEFAULT.added(RowNorms(Schedule(every=2))):
        report = run_experiment(spec)
        rows = list(metric_rows(report))
    measured = [s["step"] for s in report["snapshots"] if s["layers"][0]["row_norms"] is not None]
    assert measured == [0, 20, 40, 50]  # snapshot counts 0, 2, 4, and the last one
    assert {step for step, _, name, _ in rows if name == "row_norms.mean"} == {0, 20, 40, 50}


def test_layer_entries_name_their_probe_point() -> None:
    report = run_experiment(validate_spec({**SPEC, "train": {"steps": 0}}))
    assert [lay["name"] for lay in report["snapshots"][0]["layers"]] == ["hidden1", "hidden2", "hidden3"]
    assert [lay["name"] for lay in report["layers"]] == ["hidden1", "hidden2", "hidden3"]


def test_registry_refuses_duplicate_and_reserved_sections() -> None:
    reg = Registry([RowNorms()])
    with pytest.raises(ValueError, match="already registered"):
        reg.register(RowNorms())
    reg.register(RowNorms(Schedule(every=3)), replace=True)
    assert reg.get("row_norms").schedule.every == 3 and len(reg) == 1

    class Bad(RowNorms):
        section = "name"

    with pytest.raises(ValueError, match="section name"):
        reg.register(Bad())
    with pytest.raises(ValueError):
        Schedule(every=0)


def test_default_sections_keep_the_report_order() -> None:
    sections = [inst.section for inst in DEFAULT]
    assert sections[:6] == ["activation", "saturation", "backprop_grad", "weight_grad", "jacobian", "theory"]
    assert "effective_rank" in sections
