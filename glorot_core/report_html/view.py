"""What the HTML report shows, read out of a JSON report (schema_version 1) as plain rows: the per-layer
statistics at the first and last snapshots, the linear theory beside the measurements, the verdicts
with their numbers, and the run's facts. The template only lays these rows out, so the tests can check
every number against the report without parsing HTML.

Nothing is recomputed except the predicted/measured ratios of eqs 5 and 6, which the report gives only
for eq. 7 (``weight_grad_var_predicted_over_measured``); they are formed the same way (a plain quotient,
``None`` when either side is missing, non-finite or the denominator is zero).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Report = Mapping[str, Any]


@dataclass(frozen=True)
class Column:
    """One column of the per-layer table: the value is ``layer[section][key]`` of a snapshot."""

    header: str
    section: str
    key: str
    title: str
    percent: bool = False


LAYER_COLUMNS: tuple[Column, ...] = (
    Column("mean z", "activation", "mean", "mean activation over the monitor examples and units (Fig 2)"),
    Column("std z", "activation", "std", "standard deviation of the activations (Fig 2's bars)"),
    Column("p98 z", "activation", "p98", "98th percentile of the activations (Figs 3, 10)"),
    Column("saturated", "saturation", "fraction",
           "fraction of outputs within the threshold of an asymptote (relu: exactly 0) (§3)", percent=True),
    Column("dead units", "saturation", "dead_units", "fraction of units saturated on every monitor example",
           percent=True),
    Column("std ∂C/∂s", "backprop_grad", "std", "std of the back-propagated gradients per example (eq. 6, Fig 7)"),
    Column("std ∂C/∂W", "weight_grad", "std", "std of the weight gradients (eq. 7, Figs 8, 9)"),
    Column("mean σ(J)", "jacobian", "mean_sv",
           "mean singular value of J^i = ∂z_{i+1}/∂z_i (§4.2.2: ≈0.5 standard, ≈0.8 normalized init)"),
)
"""The per-layer table's columns, in order (the statistics of docs/science.md's instruments)."""


@dataclass(frozen=True)
class Cell:
    """A number as the page shows it, with the report's value kept for the tests."""

    value: Any
    text: str


@dataclass(frozen=True)
class LayerRow:
    index: int
    name: str
    units: Any
    cells: list[Cell]


@dataclass(frozen=True)
class SnapshotTable:
    """One snapshot's per-layer statistics; ``label`` says which snapshot it is."""

    label: str
    step: int
    rows: list[LayerRow]
    test_error: Cell
    monitor_loss: Cell


@dataclass(frozen=True)
class TheoryTriple:
    """A predicted variance beside the measured one and their quotient."""

    predicted: Cell
    measured: Cell
    ratio: Cell


@dataclass(frozen=True)
class TheoryRow:
    index: int
    name: str
    applies: bool
    activation: TheoryTriple
    backprop: TheoryTriple
    weight_grad: TheoryTriple
    ratio_to_layer1_predicted: Cell
    ratio_to_layer1_measured: Cell
    chi: Cell
    depth_scale: Cell


@dataclass(frozen=True)
class VerdictRow:
    code: str
    severity: str
    layer: Any
    step: Any
    message: str
    values: list[tuple[str, str]] = field(default_factory=list)


def number_text(v: Any, *, percent: bool = False) -> str:
    """A report number for reading: 4 significant digits (``1.234e-05`` when small or large), integers
    as they are, percentages with one decimal; ``None`` (not measured) as an em dash; the report's
    strings for non-finite values (``NaN``, ``Infinity``) as written."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return {math.inf: "Infinity", -math.inf: "-Infinity"}.get(v, "NaN")
        if percent:
            return f"{100 * v:.1f}%"
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(number_text(x, percent=percent) for x in v)
    return str(v)


def cell(v: Any, *, percent: bool = False) -> Cell:
    return Cell(v, number_text(v, percent=percent))


def _section_value(layer: Mapping[str, Any], section: str, key: str) -> Any:
    block = layer.get(section)
    return block.get(key) if isinstance(block, Mapping) else None


def _names(report: Report) -> dict[int, Mapping[str, Any]]:
    return {lay["index"]: lay for lay in report.get("layers", []) if isinstance(lay, Mapping) and "index" in lay}


def snapshot_table(report: Report, snap: Mapping[str, Any], label: str) -> SnapshotTable:
    """The per-layer row of every ``LAYER_COLUMNS`` statistic of one snapshot."""
    described = _names(report)
    rows = []
    for lay in snap.get("layers", []):
        d = described.get(lay.get("index"), {})
        rows.append(LayerRow(
            index=lay.get("index"), name=str(lay.get("name") or d.get("name") or ""), units=d.get("units"),
            cells=[cell(_section_value(lay, c.section, c.key), percent=c.percent) for c in LAYER_COLUMNS],
        ))
    return SnapshotTable(label=label, step=snap.get("step", 0), rows=rows, test_error=cell(snap.get("test_error"),
                         percent=True), monitor_loss=cell(snap.get("monitor_loss")))


def snapshot_tables(report: Report) -> list[SnapshotTable]:
    """The first snapshot (initialisation) and the last (end of training); one table when they are one."""
    snaps = report.get("snapshots") or []
    if not snaps:
        return []
    first, last = snaps[0], snaps[-1]
    if len(snaps) == 1:
        return [snapshot_table(report, first, f"step {first.get('step', 0)}: initialisation (the only snapshot)")]
    return [snapshot_table(report, first, f"step {first.get('step', 0)}: initialisation"),
            snapshot_table(report, last, f"step {last.get('step')}: end of training")]


def ratio(a: Any, b: Any) -> float | None:
    """a / b when both are finite numbers and b ≠ 0, else None (as the report's own ratios)."""
    ok = all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in (a, b))
    return a / b if ok and b != 0 else None


def _triple(row: Mapping[str, Any], what: str, given_ratio: str | None = None) -> TheoryTriple:
    p, m = row.get(f"predicted_{what}"), row.get(f"measured_{what}")
    r = row.get(given_ratio) if given_ratio else ratio(p, m)
    return TheoryTriple(cell(p), cell(m), cell(r))


def theory_rows(report: Report) -> list[TheoryRow]:
    """The report's ``theory.at_init`` (eqs 5–7 at initialisation, per example) as rows: each predicted
    variance beside the measured one and predicted/measured; the ratio of each layer's weight-gradient
    variance to layer 1's, predicted and measured (eq. 14: 1 under the normalized init's assumptions);
    the mean-field χ and the depth scale ξ = −1/ln χ."""
    described = _names(report)
    out = []
    for row in (report.get("theory") or {}).get("at_init") or []:
        if not isinstance(row, Mapping):
            continue
        index = row.get("index")
        out.append(TheoryRow(
            index=index, name=str(described.get(index, {}).get("name", "")), applies=bool(row.get("applies")),
            activation=_triple(row, "activation_var"), backprop=_triple(row, "backprop_var"),
            weight_grad=_triple(row, "weight_grad_var", "weight_grad_var_predicted_over_measured"),
            ratio_to_layer1_predicted=cell(row.get("predicted_weight_grad_var_ratio_to_layer1")),
            ratio_to_layer1_measured=cell(row.get("weight_grad_var_ratio_to_layer1")),
            chi=cell(row.get("chi")), depth_scale=cell(row.get("depth_scale")),
        ))
    return out


def verdict_rows(report: Report) -> list[VerdictRow]:
    """Every verdict with the numbers it rests on (``values``), in the report's order."""
    rows = []
    for v in report.get("verdicts") or []:
        values = v.get("values") or {}
        rows.append(VerdictRow(
            code=str(v.get("code", "")), severity=str(v.get("severity", "")), layer=v.get("layer"),
            step=v.get("step"), message=str(v.get("message", "")),
            values=[(str(k), number_text(x)) for k, x in values.items()],
        ))
    return rows


def _pairs(items: Iterable[tuple[str, Any]]) -> list[tuple[str, str]]:
    return [(k, number_text(v)) for k, v in items if v is not None]


def summary(report: Report) -> list[tuple[str, str]]:
    """The run in a few facts: network, init, data, training, how it ended."""
    spec = report.get("spec") or {}
    model, train, data = spec.get("model") or {}, spec.get("train") or {}, spec.get("data") or {}
    resolved, end = report.get("resolved") or {}, report.get("end") or {}
    snaps = report.get("snapshots") or []
    widths = [model.get("input_dim"), *(model.get("hidden") or []), model.get("num_classes")]
    diverged = end.get("diverged_at") if end.get("diverged") else None
    return _pairs([
        ("network", " – ".join(str(w) for w in widths if w is not None) or None),
        ("activation", model.get("activation")),
        ("initialisation", (resolved.get("init") or {}).get("scheme") or model.get("init")),
        ("data set", data.get("dataset")),
        ("learning rate", train.get("lr")),
        ("updates done", end.get("steps_done")),
        ("examples seen", end.get("examples_seen")),
        ("diverged", f"at step {diverged.get('step')}: {diverged.get('reason')}" if diverged else
         (False if end else None)),
        ("final test error", number_text(snaps[-1].get("test_error"), percent=True) if snaps else None),
        ("majority-class error", number_text(resolved.get("majority_class_error"), percent=True)
         if resolved.get("majority_class_error") is not None else None),
        ("snapshots", len(snaps)),
        ("run time (s)", end.get("elapsed_s")),
    ])


def run_facts(report: Report) -> list[tuple[str, str]]:
    """Where and how it ran, and the report's conventions (what each gradient is of)."""
    resolved = report.get("resolved") or {}
    facts = _pairs((k, resolved.get(k)) for k in ("glorot_version", "torch_version", "python", "device", "dtype",
                                                   "saturation_rule"))
    conventions = resolved.get("conventions") or {}
    facts += [(f"convention: {k}", str(v)) for k, v in conventions.items()]
    return facts


def pretty_json(value: Any) -> str:
    """JSON indented for reading (the spec as the run resolved it)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def title(report: Report) -> str:
    return str((report.get("spec") or {}).get("name") or "experiment")
