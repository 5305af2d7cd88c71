"""Fixed-edge histograms computed on the device, with non-finite values counted, never dropped.

Edges are fixed per quantity (per activation for activations, a signed log scale for gradients), so
snapshots and runs compare bin by bin (W&B's per-call min/max edges cannot, see PITFALLS.md).
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def fixed_histogram(values: Tensor, edges: Tensor) -> dict[str, Tensor]:
    """Histogram of ``values`` over ``edges`` (ascending, k+1 of them) without leaving the device.

    Returns device tensors: ``counts`` (k bins, the last one closed on the right), ``underflow`` and
    ``overflow`` (finite values outside the edges) and ``nonfinite`` (NaN and ±Inf), so that
    sum(counts) + underflow + overflow + nonfinite == values.numel().
    """
    v = values.detach().reshape(-1)
    edges = edges.to(device=v.device, dtype=v.dtype)
    finite = torch.isfinite(v)
    k = edges.numel() - 1
    # bucketize(right=True) gives i such that edges[i-1] <= v < edges[i]; value == last edge goes to bin k-1.
    idx = torch.bucketize(v, edges, right=True) - 1
    idx = torch.where(v == edges[-1], torch.full_like(idx, k - 1), idx)
    under = finite & (idx < 0)
    over = finite & (idx >= k)
    inside = finite & ~under & ~over
    counts = torch.bincount(torch.where(inside, idx, torch.full_like(idx, k)), minlength=k + 1)[:k]
    return {
        "counts": counts,
        "underflow": under.sum(),
        "overflow": over.sum(),
        "nonfinite": (~finite).sum(),
    }


def signed_log_edges(
    decades: tuple[int, int] = (-10, 1), per_decade: int = 4, device: torch.device | str = "cpu"
) -> Tensor:
    """Symmetric log-spaced edges −10^hi … −10^lo, 0, 10^lo … 10^hi for gradients of any scale.

    Gradients span many orders of magnitude (paper Figs 7–9), so linear fixed edges would put most
    values in one bin; these fixed edges keep runs comparable at any scale. |v| < 10^lo land in the
    two bins around 0.
    """
    lo, hi = decades
    pos = torch.logspace(lo, hi, (hi - lo) * per_decade + 1, device=device)
    return torch.cat([-pos.flip(0), torch.zeros(1, device=device), pos])


def linear_edges(low: float, high: float, bins: int, device: torch.device | str = "cpu") -> Tensor:
    """Evenly spaced fixed edges."""
    return torch.linspace(low, high, bins + 1, device=device)
