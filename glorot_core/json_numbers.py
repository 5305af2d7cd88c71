"""JSON-safe numbers, without importing torch (the API process uses it too)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np


def json_safe(tree: Any) -> Any:
    """Copy of ``tree`` where NaN/±Inf floats become the strings "NaN", "Infinity", "-Infinity".

    JSON has no non-finite numbers; reports must stay parseable by every client and by PostgreSQL's
    JSONB, and a non-finite value is information we must not drop.
    """
    if isinstance(tree, float) and not math.isfinite(tree):
        return "NaN" if math.isnan(tree) else ("Infinity" if tree > 0 else "-Infinity")
    if isinstance(tree, dict):
        return {k: json_safe(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [json_safe(v) for v in tree]
    return tree


def float32_numbers(values: Iterable[float]) -> list[float]:
    """Python floats that print as the shortest decimal that round-trips each value *as a float32*.

    A float32 quantity widened to a double prints with 17 significant digits of noise (0.0002 becomes
    0.00019999999494757503). numpy's float32 ``str`` is the shortest form that reads back to the same
    float32 (Dragon4/Ryu), and the double parsed from it prints the same way, so the JSON carries
    ≤ 9 significant digits and no information is lost: ``np.float32(written) == measured``.
    Non-finite values stay non-finite (``json_safe`` names them).
    """
    arr = values if isinstance(values, np.ndarray) else np.asarray(list(values), dtype=np.float64)
    return [float(str(v)) for v in arr.astype(np.float32)]
