"""Back-propagated gradients ∂C/∂s and weight gradients ∂C/∂W per layer (paper Figs 7, 8, 9; eqs 6, 7).

On the monitor set, the cost is summed over examples so that row n of ∂C/∂s is example n's own
back-propagated gradient; the weight gradient is that of the *mean* cost (the quantity SGD follows,
up to the batch average). Neither touches the model's ``.grad`` fields, so training is not disturbed.
"""

from __future__ import annotations

import torch

from glorot_core.instruments.histogram import Bins
from glorot_core.instruments.summary import tensor_summary

Tensor = torch.Tensor


def gradient_stats(g: Tensor, bins: Bins, scale: float = 1.0) -> dict[str, object]:
    """Mean, std (over finite entries), non-finite count and fixed-edge histogram of ``g * scale``."""
    return tensor_summary(g, bins, scale)
