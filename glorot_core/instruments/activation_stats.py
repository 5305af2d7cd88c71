"""Activation statistics of one hidden layer on the monitor set (paper Figs 2, 3, 4, 6, 10).

Mean and standard deviation (Fig 2's line and bars), 2nd and 98th percentiles (Fig 3's markers), and
a fixed-edge histogram (Figs 4 and 6), all pooled over every unit and monitor example.
"""

from __future__ import annotations

import math

import torch

from glorot_core.instruments.histogram import Bins
from glorot_core.instruments.summary import tensor_summary

Tensor = torch.Tensor

PERCENTILES = (0.02, 0.98)


def percentiles(v: Tensor, ps: tuple[float, ...] = PERCENTILES) -> list[Tensor]:
    """Nearest-rank percentiles (value of rank ⌈p·n⌉) of a flat tensor, by partial selection.

    ``torch.topk`` of the tail (2 % of the values for p2 and p98) is several times cheaper than the
    full sort that ``torch.quantile`` does (Fig 3 needs the 98th percentile at every snapshot).
    """
    n = v.numel()
    out = []
    for p in ps:
        rank = min(max(math.ceil(p * n), 1), n)
        if rank <= n - rank + 1:
            out.append(torch.topk(v, rank, largest=False, sorted=False).values.max())
        else:
            out.append(torch.topk(v, n - rank + 1, largest=True, sorted=False).values.min())
    return out


def activation_stats(z: Tensor, bins: Bins) -> dict[str, object]:
    """Statistics of a layer's outputs ``z`` (examples × units), as device tensors.

    Percentiles are taken with non-finite values replaced by 0 (they are counted in ``nonfinite``).
    """
    summary = tensor_summary(z, bins)
    v = torch.nan_to_num(z.detach().reshape(-1), nan=0.0, posinf=0.0, neginf=0.0)
    p2, p98 = percentiles(v)
    return {"mean": summary["mean"], "std": summary["std"], "p2": p2, "p98": p98,
            "nonfinite": summary["nonfinite"], "histogram": summary["histogram"]}
