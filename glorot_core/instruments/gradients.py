"""Back-propagated gradients ∂C/∂s and weight gradients ∂C/∂W per probe point (paper Figs 7, 8, 9;
eqs 2, 3, 6, 7).

On the monitor set, the cost is summed over examples so that row n of ∂C/∂s is example n's own
back-propagated gradient (the paper's basis, whatever ``diagnostics.gradient_basis`` says). The
weight gradient has two bases (``Monitor.gradient_basis``):

* ``mean_cost`` (default): ∂C/∂W of the *mean* cost over the monitor set, (∂C/∂s)ᵀ z_in / N, the
  direction a full-batch SGD step on the monitor set would follow (moments exact from two Gram matrices,
  histogram of a fixed balanced sample of its entries for large layers: ``instruments.mean_cost``);
* ``per_example``: every example's own ∂C_n/∂W = g_n z_nᵀ pooled over examples and entries, the basis
  of the paper's Figs 8–9 and of eq. 7 (moments exact in closed form, histogram of a fixed sample:
  ``glorot_core.instruments.per_example``). Its std is ≈√N times the mean-cost one when examples'
  gradients are weakly correlated.

Neither touches the model's ``.grad`` fields, so training is not disturbed.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from glorot_core.instruments.base import Instrument
from glorot_core.instruments.histogram import Bins, OctaveBins
from glorot_core.instruments.mean_cost import mean_cost_summary
from glorot_core.instruments.monitor import Monitor
from glorot_core.instruments.per_example import per_example_summary
from glorot_core.instruments.probe import Capture
from glorot_core.instruments.summary import tensor_summary

Tensor = torch.Tensor
GRADIENT_SCALARS = ("mean", "std", "nonfinite")
GradientBasis = Literal["mean_cost", "per_example"]
GRADIENT_BASES: tuple[str, ...] = ("mean_cost", "per_example")


def gradient_stats(g: Tensor, bins: Bins, scale: float = 1.0) -> dict[str, Any]:
    """Mean, std (over finite entries), non-finite count and fixed-edge histogram of ``g * scale``.

    Gradients are centred (their mean is at most of the order of their spread), so the moments are
    taken in one pass (``tensor_summary(centred=True)``; error ε·(1 + mean²/var))."""
    return tensor_summary(g, bins, scale, centred=True)


def weight_grad_stats(grad_s: Tensor, z_in: Tensor, bins: OctaveBins, basis: str,
                      mean_cost_grad: Tensor | None = None) -> dict[str, Any]:
    """Summary of the weight gradient fed by ``z_in`` with per-example ∂C/∂s ``grad_s``, on ``basis``.

    ``mean_cost_grad`` may pass an already computed (∂C/∂s)ᵀ z_in / N (the capture's shared GEMM).
    """
    if basis == "per_example":
        return per_example_summary(grad_s, z_in, bins)
    if basis != "mean_cost":
        raise ValueError(f"unknown gradient basis {basis!r}; expected one of {GRADIENT_BASES}")
    if mean_cost_grad is None:
        return mean_cost_summary(grad_s, z_in, bins)
    return gradient_stats(mean_cost_grad, bins)


class BackpropGradient(Instrument):
    """Section ``backprop_grad``: ∂C/∂s per example (cost summed over the monitor set; eq. 6, Fig 7)."""

    section = "backprop_grad"
    scalars = GRADIENT_SCALARS

    def measure_point(self, capture: Capture, monitor: Monitor) -> dict[str, Any]:
        return gradient_stats(capture.grad_s, monitor.gradient_bins)


class WeightGradient(Instrument):
    """Section ``weight_grad``: ∂C/∂W on the monitor's basis (eqs 3, 7; Figs 8–9): of the mean cost, or
    every example's own g_n z_nᵀ pooled (``per_example``: adds ``histogram_sample``)."""

    section = "weight_grad"
    scalars = GRADIENT_SCALARS

    def measure_point(self, capture: Capture, monitor: Monitor) -> dict[str, Any] | None:
        if monitor.gradient_basis == "per_example":
            # g_n z_nᵀ needs the dense input of the weight; points without one (convolutions) get null
            if capture.z_in is None or capture.weight is None:
                return None
            return per_example_summary(capture.grad_s, capture.z_in, monitor.gradient_bins)
        factors = capture.weight_grad_factors
        if factors is not None:  # moments from Grams, histogram of a balanced sample (mean_cost.py)
            return mean_cost_summary(*factors, monitor.gradient_bins)
        g = capture.weight_grad  # of the mean cost, as the capture supplies it (an uploaded model's)
        return None if g is None else gradient_stats(g, monitor.gradient_bins)
