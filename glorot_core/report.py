"""The JSON report (schema_version 1, DESIGN.md) built from host-side snapshot trees, and its
flattening into metric rows for the service's time series."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from glorot_core.instruments.theory import theory_table

SCHEMA_VERSION = 1
LAYER_SECTIONS = ("activation", "saturation", "backprop_grad", "weight_grad", "jacobian")


def layer_descriptions(widths: list[int], activation: str) -> list[dict[str, Any]]:
    """The ``layers`` list: one entry per hidden layer, 1-based, with its fan-in and fan-out."""
    return [
        {"index": i, "name": f"hidden{i}", "units": widths[i], "activation": activation,
         "fan_in": widths[i - 1], "fan_out": widths[i + 1]}
        for i in range(1, len(widths) - 1)
    ]


def snapshot_entry(
    host: dict[str, Any],
    *,
    step: int,
    examples_seen: int,
    test_error: float | None,
    train_loss: float | None,
    elapsed_s: float,
    activation: Any,
) -> dict[str, Any]:
    """Turn one host-side ``measure`` tree into a report snapshot (per-layer sections + theory)."""
    jac = host.get("jacobian") or {}
    jac_layers = jac.get("layers", [])
    layers = []
    measured = []
    for i, lay in enumerate(host["layers"]):
        entry = {
            "index": i + 1,
            "activation": lay["activation"],
            "saturation": lay["saturation"],
            "backprop_grad": lay["backprop_grad"],
            "weight_grad": lay["weight_grad"],
            "jacobian": jac_layers[i] if i < len(jac_layers) else None,
        }
        layers.append(entry)
        measured.append({
            "activation_var": lay["activation"]["std"] ** 2,
            "backprop_var": lay["backprop_grad"]["std"] ** 2,
            "weight_grad_var": lay["weight_grad"]["std"] ** 2,
        })
    theory = theory_table(
        activation, host["input_var"], host["output_grad_var"], measured,
        [lay["mean_field"] for lay in host["layers"]], host["output_backward_gain"],
    )
    for entry, row in zip(layers, theory, strict=True):
        entry["theory"] = row
    return {
        "step": step,
        "examples_seen": examples_seen,
        "test_error": test_error,
        "train_loss": train_loss,
        "monitor_loss": host["monitor_loss"],
        "monitor_error": host["monitor_error"],
        "elapsed_s": elapsed_s,
        "layers": layers,
        "output": {"weight_grad": host["output_weight_grad"], "grad_var": host["output_grad_var"]},
        "end_to_end": jac.get("end_to_end"),
    }


_SCALARS = {
    "activation": ("mean", "std", "p2", "p98", "nonfinite"),
    "saturation": ("fraction", "low", "high", "dead_units"),
    "backprop_grad": ("mean", "std", "nonfinite"),
    "weight_grad": ("mean", "std", "nonfinite"),
    "jacobian": ("mean_sv", "mean_sq_sv", "max_sv", "min_sv"),
    "theory": ("chi", "linear_fraction"),
}


def metric_rows(report: dict[str, Any]) -> Iterator[tuple[int, int, str, float]]:
    """Yield (step, layer, statistic, value) for every scalar of every snapshot.

    Layer 0 holds whole-network statistics (test_error, train_loss, monitor_loss, and the end-to-end
    Jacobian as ``end_to_end.*``); statistics are named ``section.field`` (``activation.std``).
    Non-finite values (strings in the JSON) are skipped here; the report keeps them.
    """
    for snap in report.get("snapshots", []):
        step = snap["step"]
        for name in ("test_error", "train_loss", "monitor_loss", "monitor_error"):
            v = snap.get(name)
            if isinstance(v, (int, float)):
                yield step, 0, name, float(v)
        e2e = snap.get("end_to_end") or {}
        for field in _SCALARS["jacobian"]:
            v = e2e.get(field)
            if isinstance(v, (int, float)):
                yield step, 0, f"end_to_end.{field}", float(v)
        for lay in snap.get("layers", []):
            for section, fields in _SCALARS.items():
                block = lay.get(section) or {}
                for field in fields:
                    v = block.get(field)
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        yield step, lay["index"], f"{section}.{field}", float(v)
