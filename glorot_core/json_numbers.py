"""JSON-safe numbers, without importing torch (the API process uses it too)."""

from __future__ import annotations

import math
from typing import Any


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
