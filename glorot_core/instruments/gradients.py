"""Back-propagated gradients ∂C/∂s and weight gradients ∂C/∂W per probe point (paper Figs 7, 8, 9;
eqs 6, 7).

On the monitor set, the cost is summed over examples so that row n of ∂C/∂s is example n's own
back-propagated gradient; the weight gradient is that of the *mean* cost (the quantity SGD follows,
up to the batch average). Neither touches the model's ``.grad`` fields, so training is not disturbed.
"""

from __future__ import annotations

from typing import Any

import torch

from glorot_core.instruments.base import Instrument
from glorot_core.instruments.histogram import Bins
from glorot_core.instruments.monitor import Monitor
from glorot_core.instruments.probe import Capture
from glorot_core.instruments.summary import tensor_summary

Tensor = torch.Tensor
GRADIENT_SCALARS = ("mean", "std", "nonfinite")


def gradient_stats(g: Tensor, bins: Bins, scale: float = 1.0) -> dict[str, Any]:
    """Mean, std (over finite entries), non-finite count and fixed-edge histogram of ``g * scale``.

    Gradients are centred (their mean is at most of the order of their spread), so the moments are
    taken in one pass (``tensor_summary(centred=True)``)."""
    return tensor_summary(g, bins, scale, centred=True)


class BackpropGradient(Instrument):
    """Section ``backprop_grad``: ∂C/∂s per example (cost summed over the monitor set; eq. 6, Fig 7)."""

    section = "backprop_grad"
    scalars = GRADIENT_SCALARS

    def measure_point(self, capture: Capture, monitor: Monitor) -> dict[str, Any]:
        return gradient_stats(capture.grad_s, monitor.gradient_bins)


class WeightGradient(Instrument):
    """Section ``weight_grad``: ∂C/∂W of the mean cost over the monitor set (eq. 7, Figs 8–9)."""

    section = "weight_grad"
    scalars = GRADIENT_SCALARS

    def measure_point(self, capture: Capture, monitor: Monitor) -> dict[str, Any] | None:
        g = capture.weight_grad
        return None if g is None else gradient_stats(g, monitor.gradient_bins)
