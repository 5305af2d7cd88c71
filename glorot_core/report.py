"""The JSON report (schema_version 1): snapshots built from host-side instrument readings, the whole
report around them, and its flattening into metric rows for the service's time series.

Nothing here knows the individual statistics: each snapshot's layer entries get one section per
registered instrument (``glorot_core.instruments.registry``), and ``metric_rows`` emits the scalars
each instrument declares. A new instrument therefore appears in reports and metric series without an
edit here.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator
from typing import Any

import torch

import glorot_core
from glorot_core.activations import Activation
from glorot_core.instruments.base import Registry
from glorot_core.instruments.probe import ProbePoint
from glorot_core.instruments.registry import DEFAULT
from glorot_core.instruments.saturation import saturation_rule
from glorot_core.json_numbers import json_safe
from glorot_core.spec import ExperimentSpec
from glorot_core.verdicts import diagnose

SCHEMA_VERSION = 1

NETWORK_SCALARS = ("test_error", "train_loss", "monitor_loss", "monitor_error")
"""Whole-network statistics of a snapshot, stored as series of layer 0."""

CONVENTIONS = {
    "layers": "hidden layer i = 1..L: s_i = z_{i-1} W_i + b_i, z_i = f(s_i), z_0 = x",
    "jacobian": "layer i: J^i = dz_{i+1}/dz_i = diag(f'(s_{i+1})) W_{i+1}^T; none for the last hidden",
    "backprop_grad": "dC/ds_i per monitor example (cost summed over examples)",
    "weight_grad": "dC/dW_i of the mean cost over the monitor set: mean, std and nonfinite exact over every entry; "
                   "where histogram_sample is given, the histogram counts that fixed balanced sample of the entries "
                   "(the same rows and columns at every snapshot), otherwise every entry",
    "theory": "per example: Var[z_i] and Var[dC/ds_i] as in activation and backprop_grad; Var[dC/dW_i] of "
              "every example's own gradient (dC/ds_i)_n^T z_{i-1,n}, pooled over examples and entries "
              "(eq. 7's basis, whatever gradient_basis is)",
    "train_loss": "mean mini-batch cost since the previous snapshot",
    "non_finite_numbers": "written as the strings NaN, Infinity, -Infinity",
}
"""The report's ``resolved.conventions`` under the default ``diagnostics.gradient_basis`` (see :func:`conventions`)."""

WEIGHT_GRAD_BASIS = {
    "mean_cost": CONVENTIONS["weight_grad"],
    "per_example": "dC/dW_i of each monitor example, (dC/ds_i)_n^T z_{i-1,n}, pooled over examples and entries: "
                   "mean, std and nonfinite exact over all of them, histogram of a fixed uniform sample of "
                   "histogram_sample entries",
}
"""``conventions["weight_grad"]`` (and the output layer's ``output.weight_grad``) per gradient basis."""


def conventions(gradient_basis: str = "mean_cost") -> dict[str, str]:
    """The report's ``resolved.conventions``: indexing and the basis of every gradient it holds."""
    return {**CONVENTIONS, "weight_grad": WEIGHT_GRAD_BASIS[gradient_basis]}


def layer_descriptions(points: list[ProbePoint]) -> list[dict[str, Any]]:
    """The ``layers`` list: one entry per probe point, 1-based, with its units, fan-in and fan-out."""
    out = []
    for p in points:
        d = p.describe()
        out.append({k: d[k] for k in ("index", "name", "units", "activation", "fan_in", "fan_out")})
    return out


def snapshot_entry(
    host: dict[str, Any],
    *,
    step: int,
    examples_seen: int,
    test_error: float | None,
    train_loss: float | None,
    elapsed_s: float,
    registry: Registry | None = None,
) -> dict[str, Any]:
    """Turn one host-side ``measure`` tree into a report snapshot.

    Each layer entry has the probe point's ``index`` and ``name`` and one section per instrument
    (null where the instrument did not run at this snapshot); whole-network sections (the Jacobian's
    ``end_to_end``) sit at the snapshot's top level. Instruments' ``finish`` steps then run in
    registry order.
    """
    registry = DEFAULT if registry is None else registry
    network = host["network"]
    layers: list[dict[str, Any]] = [{"index": p.index, "name": p.name} for p in host["points"]]
    network_sections: dict[str, Any] = {}
    for section, readings in host["sections"].items():
        for i, lay in enumerate(layers):
            lay[section] = readings["layers"][i] if readings is not None else None
        inst = registry.get(section)
        if inst is not None and inst.network_section:
            network_sections[inst.network_section] = readings["network"] if readings is not None else None
    for section in host["sections"]:
        inst = registry.get(section)
        if inst is not None:
            inst.finish(layers, network)
    return {
        "step": step,
        "examples_seen": examples_seen,
        "test_error": test_error,
        "train_loss": train_loss,
        "monitor_loss": network["monitor_loss"],
        "monitor_error": network["monitor_error"],
        "elapsed_s": elapsed_s,
        "layers": layers,
        "output": {"weight_grad": network["output_weight_grad"], "grad_var": network["output_grad_var"]},
        **network_sections,
    }


def build_report(
    spec: ExperimentSpec,
    *,
    device: torch.device,
    activation: Activation,
    points: list[ProbePoint],
    init_info: dict[str, Any],
    data_root: str | None,
    majority_error: float,
    snapshots: list[dict[str, Any]],
    end: dict[str, Any],
    started: float,
    registry: Registry | None = None,
) -> dict[str, Any]:
    """The whole report around the (already JSON-safe) snapshots, with its verdicts.

    ``end`` holds steps_done, examples_seen, diverged (and diverged_at); ``started`` is the run's
    ``time.monotonic()`` at its start, for ``end.elapsed_s``.
    """
    registry = DEFAULT if registry is None else registry
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "spec": spec.model_dump(mode="json"),
        "resolved": {
            "glorot_version": glorot_core.__version__,
            "torch_version": torch.__version__,
            "python": platform.python_version(),
            "device": str(device),
            "dtype": "float32",
            "init": init_info,
            "data_root": data_root,
            "majority_class_error": majority_error,
            "saturation_rule": saturation_rule(activation),
            "saturation_threshold": activation.saturation_threshold,
            "conventions": conventions(spec.diagnostics.gradient_basis),
            "instruments": [inst.describe() for inst in registry],
        },
        "layers": layer_descriptions(points),
        "snapshots": snapshots,
        "end": {**end, "elapsed_s": time.monotonic() - started},
        "theory": {
            "equations": "paper §4.2 eqs 5-7 (linear regime) and mean-field chi = n_in Var[W] E[f'(s)^2]",
            "at_init": [lay.get("theory") for lay in snapshots[0]["layers"]] if snapshots else [],
        },
    }
    report["verdicts"] = diagnose(report, majority_error)
    # Snapshots were made JSON-safe as they were taken; the rest (e.g. a diverged loss of inf) here.
    return {k: v if k == "snapshots" else json_safe(v) for k, v in report.items()}


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def metric_rows(report: dict[str, Any], registry: Registry | None = None) -> Iterator[tuple[int, int, str, float]]:
    """Yield (step, layer, statistic, value) for every scalar of every snapshot.

    Layer 0 holds whole-network statistics (test_error, train_loss, monitor_loss, monitor_error, and
    each instrument's whole-network scalars, e.g. ``end_to_end.mean_sv``); per-layer statistics are
    named ``section.field`` (``activation.std``) after the scalars each registered instrument
    declares. Non-finite values (strings in the JSON) are skipped here; the report keeps them.
    """
    instruments = list(DEFAULT if registry is None else registry)
    for snap in report.get("snapshots", []):
        step = snap["step"]
        for name in NETWORK_SCALARS:
            v = snap.get(name)
            if _number(v):
                yield step, 0, name, float(v)
        for inst in instruments:
            if inst.network_section:
                block = snap.get(inst.network_section) or {}
                for field in inst.network_scalars:
                    v = block.get(field)
                    if _number(v):
                        yield step, 0, f"{inst.network_section}.{field}", float(v)
        for lay in snap.get("layers", []):
            for inst in instruments:
                block = lay.get(inst.section) or {}
                for field in inst.scalars:
                    v = block.get(field)
                    if _number(v):
                        yield step, lay["index"], f"{inst.section}.{field}", float(v)
