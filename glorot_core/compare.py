"""Several runs side by side: per-layer statistics at one snapshot, their differences from the first run,
and the layers' histograms compared bin by bin (docs/figures.md, "Comparing runs").

A run here is a report's ``spec``, its ``layers`` and one of its ``snapshots`` (:class:`Run`); the
service reads just those parts of each stored report. :func:`compare` returns the JSON the service
answers ``GET /v1/compare`` with:

* per layer (matched by the report's 1-based index), each statistic of :data:`STATISTICS` for every
  run, and ``differences``: run k minus the first run (B − A, C − A, …), null where either is missing
  or not finite;
* per layer and histogram section (:data:`HISTOGRAMS`), the fraction of the layer's values in each
  bin for every run, and bin-by-bin differences from the first run **when every run has the same
  edges** (``same_bins: true``). Histogram edges are fixed per quantity (per activation function and
  bin count for activations, the same octaves for every gradient), so runs of the same activation
  always share them; runs whose edges differ (a sigmoid against a tanh network, another
  ``histogram_bins``) get ``same_bins: false``, each run's own edges, and no bin differences. The
  statistics are still compared: a mean or a std does not depend on bins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from glorot_core.figures.histograms import normalized
from glorot_core.json_numbers import json_safe

MAX_RUNS = 8
"""Runs one comparison may hold (every run's snapshot is read; an overlay figure needs a line style each)."""

STATISTICS: tuple[tuple[str, str], ...] = (
    ("activation", "mean"), ("activation", "std"), ("activation", "p98"), ("saturation", "fraction"),
    ("backprop_grad", "std"), ("weight_grad", "std"), ("jacobian", "mean_sv"),
)
"""(section, field) of each compared statistic: Figs 2, 3, 6 (activations), §3 (saturation), Figs 7–9
(gradients), §4.2.2 (the Jacobian's mean singular value)."""

HISTOGRAMS: tuple[str, ...] = ("activation", "backprop_grad", "weight_grad")
"""Sections whose histograms are compared bin by bin (Figs 6, 7, 8)."""

SNAPSHOT_WORDS = ("init", "final")


@dataclass(frozen=True)
class Run:
    """One run of a comparison: a label (the job id), its spec, its ``layers`` and the chosen snapshot
    (its position in the report's ``snapshots`` is ``snapshot_index``)."""

    label: str
    spec: dict[str, Any]
    layers: list[dict[str, Any]]
    snapshot: dict[str, Any]
    snapshot_index: int

    def describe(self) -> dict[str, Any]:
        model, train = self.spec.get("model", {}), self.spec.get("train", {})
        widths = [model.get("input_dim"), *model.get("hidden", []), model.get("num_classes")]
        return {"job_id": self.label, "name": self.spec.get("name"), "activation": model.get("activation"),
                "init": model.get("init"), "widths": widths if model.get("hidden") else None,
                "loss": train.get("loss"), "lr": train.get("lr"), "snapshot_index": self.snapshot_index,
                "step": self.snapshot.get("step")}


def parse_snapshot(text: str) -> str | int:
    """``init``, ``final`` or a 0-based snapshot index; ValueError otherwise."""
    if text in SNAPSHOT_WORDS:
        return text
    if text.isdigit():
        return int(text)
    raise ValueError(f"snapshot must be init, final or a 0-based index, not {text[:40]!r}")


def snapshot_index(choice: str | int, total: int) -> int:
    """The position ``choice`` names among ``total`` snapshots; IndexError when there is no such one."""
    index = 0 if choice == "init" else total - 1 if choice == "final" else int(choice)
    if not 0 <= index < total:
        raise IndexError(f"snapshot {choice} does not exist: the report has {total} snapshot(s)")
    return index


def _value(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, str):  # the report's names of non-finite values
        try:
            return float(v.replace("Infinity", "inf"))
        except ValueError:
            return None
    return float(v)


def _difference(b: float | None, a: float | None) -> float | None:
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return None
    return b - a


def _layer_entry(runs: list[Run], index: int) -> dict[str, Any]:
    layers = [next((lay for lay in r.snapshot.get("layers", []) if lay.get("index") == index), None) for r in runs]
    name = next((lay.get("name") for lay in layers if lay is not None), None)
    stats: dict[str, Any] = {}
    for section, field in STATISTICS:
        values = [_value(((lay or {}).get(section) or {}).get(field)) for lay in layers]
        stats[f"{section}.{field}"] = {"values": values,
                                       "differences": [_difference(v, values[0]) for v in values[1:]]}
    hists: dict[str, Any] = {}
    for section in HISTOGRAMS:
        found = [((lay or {}).get(section) or {}).get("histogram") for lay in layers]
        if not any(found):
            continue
        edges = [h["edges"] if h else None for h in found]
        fractions = [normalized(h)[1] if h else None for h in found]
        same = all(e is not None and e == edges[0] for e in edges)
        entry: dict[str, Any] = {"same_bins": same}
        if same:
            entry["edges"] = edges[0]
            entry["fractions"] = fractions
            entry["differences"] = [[b - a for a, b in zip(fractions[0], f, strict=True)]  # type: ignore[arg-type]
                                    for f in fractions[1:]]
        else:
            entry["edges"] = edges
            entry["fractions"] = fractions
            entry["differences"] = None
        hists[section] = entry
    return {"index": index, "name": name, "present": [lay is not None for lay in layers], "statistics": stats,
            "histograms": hists}


def compare(runs: list[Run], snapshot: str | int) -> dict[str, Any]:
    """The comparison of ``runs`` (2..:data:`MAX_RUNS`) at ``snapshot`` (module docstring); JSON-safe."""
    if not 2 <= len(runs) <= MAX_RUNS:
        raise ValueError(f"a comparison holds 2 to {MAX_RUNS} runs, not {len(runs)}")
    indices = sorted({lay["index"] for r in runs for lay in r.snapshot.get("layers", [])})
    layers = [_layer_entry(runs, i) for i in indices]
    same_bins = {section: all(lay["histograms"][section]["same_bins"] for lay in layers
                              if section in lay["histograms"])
                 for section in HISTOGRAMS if any(section in lay["histograms"] for lay in layers)}
    return json_safe({
        "snapshot": snapshot,
        "baseline": runs[0].label,
        "runs": [r.describe() for r in runs],
        "statistics": [f"{s}.{f}" for s, f in STATISTICS],
        "differences": "each run minus the first (baseline): B - A, C - A, ...",
        "same_bins": same_bins,
        "layers": layers,
    })
