"""Activation statistics of one hidden layer on the monitor set (paper Figs 2, 3, 4, 6, 10).

Mean and standard deviation (Fig 2's line and bars), 2nd and 98th percentiles (Fig 3's markers), and
a fixed-edge histogram (Figs 4 and 6), all pooled over every unit and monitor example.
"""

from __future__ import annotations

import math

import torch

from glorot_core.instruments.histogram import fixed_histogram

Tensor = torch.Tensor

PERCENTILES = (0.02, 0.98)


def finite_moments(v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Mean and standard deviation over the finite entries of ``v``, and the count of non-finite ones.

    Non-finite values are counted, never folded into the moments (so one Inf does not hide the rest).
    Sums are accumulated in float64: sigmoid layers have std ≪ mean, where float32 would cancel.
    """
    v = v.detach().reshape(-1)
    finite = torch.isfinite(v)
    n = finite.sum()
    clean = torch.where(finite, v, torch.zeros((), dtype=v.dtype, device=v.device)).to(torch.float64)
    nf = n.clamp_min(1).to(torch.float64)
    mean = clean.sum() / nf
    var = (torch.dot(clean, clean) - nf * mean * mean).clamp_min(0) / (nf - 1).clamp_min(1)
    return mean, var.sqrt(), v.numel() - n


def percentiles(v: Tensor, ps: tuple[float, ...] = PERCENTILES) -> list[Tensor]:
    """Nearest-rank percentiles (value of rank ⌈p·n⌉) of a flat tensor, by partial selection.

    ``torch.topk`` selects only the tails, several times faster than the full sort ``torch.quantile``
    does (Fig 3 needs the 98th percentile at every snapshot).
    """
    n = v.numel()
    out = []
    for p in ps:
        rank = min(max(math.ceil(p * n), 1), n)
        if rank <= n // 2:
            out.append(torch.topk(v, rank, largest=False, sorted=False).values.max())
        else:
            out.append(torch.topk(v, n - rank + 1, largest=True, sorted=False).values.min())
    return out


def activation_stats(z: Tensor, edges: Tensor) -> dict[str, object]:
    """Statistics of a layer's outputs ``z`` (examples × units), as device tensors.

    Percentiles are taken with non-finite values replaced by 0 (they are counted in ``nonfinite``).
    """
    mean, std, nonfinite = finite_moments(z)
    v = z.detach().reshape(-1)
    v = torch.where(torch.isfinite(v), v, torch.zeros((), dtype=v.dtype, device=v.device))
    p2, p98 = percentiles(v)
    return {
        "mean": mean,
        "std": std,
        "p2": p2,
        "p98": p98,
        "nonfinite": nonfinite,
        "histogram": {"edges": edges, **fixed_histogram(z, edges)},
    }
