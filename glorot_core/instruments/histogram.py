"""Fixed-edge histograms computed on the device, with non-finite values counted, never dropped.

Edges are fixed per quantity (per activation for activations, a signed log scale for gradients), so
snapshots and runs compare bin by bin (W&B's per-call min/max edges cannot, see PITFALLS.md).
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def fixed_histogram(values: Tensor, edges: Tensor) -> dict[str, Tensor]:
    """Histogram of ``values`` over ``edges`` (ascending, k+1 of them) without leaving the device.

    Bins are [e_j, e_{j+1}) except the last, [e_{k-1}, e_k], so a saturated tanh output of exactly
    ±1.0 lands in the outer bins. Returns device tensors: ``counts`` (k bins), ``underflow`` and
    ``overflow`` (finite values outside the edges) and ``nonfinite`` (NaN and ±Inf), so that
    sum(counts) + underflow + overflow + nonfinite == values.numel().
    One bucketize and one bincount over the data, plus three cheap comparisons for non-finite values.
    """
    v = values.detach().reshape(-1)
    k = edges.numel() - 1
    e = edges.to(device=v.device, dtype=v.dtype).clone()
    e[-1] = torch.nextafter(e[-1], torch.tensor(float("inf"), dtype=e.dtype, device=e.device))
    # bucketize(right=True): 0 below e_0, j+1 in bin j, k+1 at or above the last edge; NaN and +Inf → k+1.
    idx = torch.bucketize(v, e, right=True)
    full = torch.bincount(idx, minlength=k + 2)
    nan = torch.isnan(v).sum()
    pos_inf = (v == float("inf")).sum()
    neg_inf = (v == float("-inf")).sum()
    return {
        "counts": full[1:k + 1],
        "underflow": full[0] - neg_inf,
        "overflow": full[k + 1] - nan - pos_inf,
        "nonfinite": nan + pos_inf + neg_inf,
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
