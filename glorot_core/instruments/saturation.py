"""Saturation of one probe point under its activation's rule (paper §3).

A unit's output is saturated when it lies within the activation's threshold of an asymptote (sigmoid
near 0 or 1, tanh and softsign near ±1) or, for relu, is exactly 0. ``fraction`` counts saturated
outputs over all units and monitor examples (``low`` and ``high`` split it by side); ``dead_units``
counts units saturated on *every* monitor example (they pass no gradient at all, paper §3.1's top
sigmoid layer).
"""

from __future__ import annotations

from typing import Any

import torch

from glorot_core.activations import Activation
from glorot_core.instruments.base import Instrument
from glorot_core.instruments.monitor import Monitor
from glorot_core.instruments.probe import Capture

Tensor = torch.Tensor


def saturation_stats(z: Tensor, activation: Activation) -> dict[str, Any]:
    """Saturated fractions (total, low, high) and the fraction of units saturated on every example."""
    z = z.detach()
    n = max(z.numel(), 1)
    units = z.reshape(z.shape[0], -1)
    bound = _symmetric_bound(activation)
    if bound is not None:  # |z| ≥ bound is either side at once: one comparison pass fewer, no OR pass
        size = units.abs()
        n_either = torch.count_nonzero(size >= bound)
        n_high = torch.count_nonzero(units >= bound)
        n_low = n_either - n_high
        # a unit is saturated on every example when its smallest |z| is (NaN propagates: not saturated)
        dead = torch.count_nonzero(size.amin(dim=0) >= bound) if units.shape[0] else torch.zeros((), dtype=torch.int64)
    else:
        low, high = activation.saturation_masks(units)
        n_low, n_high = torch.count_nonzero(low), torch.count_nonzero(high)
        dead = torch.count_nonzero((low | high).all(dim=0))
    return {
        "fraction": (n_low + n_high) / n,  # the two sides are disjoint
        "low": n_low / n,
        "high": n_high / n,
        "dead_units": dead / max(units.shape[-1], 1),
        "threshold": activation.saturation_threshold if not activation.dead_at_zero else 0.0,
        "rule": saturation_rule(activation),
    }


def _symmetric_bound(activation: Activation) -> float | None:
    """b when the rule is |z| ≥ b exactly (both sides saturate, lo + t == −(hi − t): tanh, softsign), else None."""
    t = activation.saturation_threshold
    if t is None or activation.dead_at_zero or not (activation.saturates_low and activation.saturates_high):
        return None
    lo, hi = activation.output_range
    return hi - t if lo + t == -(hi - t) else None


def saturation_rule(activation: Activation) -> str:
    """Human-readable rule, reported beside the numbers."""
    if activation.dead_at_zero:
        return "output == 0 (dead)"
    if activation.saturation_threshold is None:
        return "never saturates"
    lo, hi = activation.output_range
    t = activation.saturation_threshold
    return f"output <= {lo + t:g} (low) or >= {hi - t:g} (high)"


class Saturation(Instrument):
    """Section ``saturation``: saturated fractions and dead units under the activation's rule."""

    section = "saturation"
    scalars = ("fraction", "low", "high", "dead_units")

    def measure_point(self, capture: Capture, monitor: Monitor) -> dict[str, Any] | None:
        if capture.point.role != "activation":
            return None  # a residual sum or a norm output: no activation, so no saturation rule
        return saturation_stats(capture.z, capture.point.activation)
