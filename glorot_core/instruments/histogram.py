"""Fixed-edge histograms computed on the device, with non-finite values counted, never dropped.

Edges are fixed per quantity (per activation for activations, octaves for gradients), so snapshots
and runs compare bin by bin (W&B's per-call min/max edges cannot, see PITFALLS.md).

Two kinds of use:

* ``fixed_histogram(values, edges)``: any ascending edges, one binary search per value
  (``torch.bucketize``). Used for small tensors such as singular values.
* ``LinearBins`` / ``OctaveBins``: the per-layer instruments' bins, whose bin index is computed
  arithmetically (a floor, or the float exponent from ``torch.frexp``) in a few cheap passes; a
  binary search per value cost more than the forward pass being measured.

Every ``index(v)`` returns int32 slots: 0 = underflow, 1..k = the k bins, k+1 = overflow.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

Tensor = torch.Tensor


class Bins(Protocol):
    bins: int
    zero_slot: int

    def edges(self, device: torch.device | str = "cpu") -> Tensor: ...

    def index(self, v: Tensor) -> Tensor: ...


def fixed_histogram(values: Tensor, edges: Tensor) -> dict[str, Tensor]:
    """Histogram of ``values`` over ``edges`` (ascending, k+1 of them) without leaving the device.

    Bins are [e_j, e_{j+1}) except the last, [e_{k-1}, e_k], so a saturated tanh output of exactly
    ±1.0 lands in the outer bins. Returns device tensors: ``counts`` (k bins), ``underflow`` and
    ``overflow`` (finite values outside the edges) and ``nonfinite`` (NaN and ±Inf), so that
    sum(counts) + underflow + overflow + nonfinite == values.numel().
    """
    v = values.detach().reshape(-1)
    k = edges.numel() - 1
    e = edges.to(device=v.device, dtype=v.dtype).clone()
    e[-1] = torch.nextafter(e[-1], torch.tensor(float("inf"), dtype=e.dtype, device=e.device))
    # bucketize(right=True): 0 below e_0, j+1 in bin j, k+1 at or above the last edge; NaN and +Inf → k+1.
    full = torch.bincount(torch.bucketize(v, e, right=True), minlength=k + 2)
    nan = torch.isnan(v).sum()
    pos_inf = (v == float("inf")).sum()
    neg_inf = (v == float("-inf")).sum()
    return {
        "counts": full[1:k + 1],
        "underflow": full[0] - neg_inf,
        "overflow": full[k + 1] - nan - pos_inf,
        "nonfinite": nan + pos_inf + neg_inf,
    }


def linear_edges(low: float, high: float, bins: int, device: torch.device | str = "cpu") -> Tensor:
    """Evenly spaced fixed edges."""
    return torch.linspace(low, high, bins + 1, device=device)


class LinearBins:
    """``bins`` equal bins over [low, high], the last one closed, indexed arithmetically.

    Values within float rounding of an inner edge may land in either neighbour (bucketize would
    decide exactly); a value equal to ``high`` goes to the last bin, only values above it overflow.
    """

    def __init__(self, low: float, high: float, bins: int) -> None:
        self.low, self.high, self.bins = float(low), float(high), int(bins)
        self.scale = self.bins / (self.high - self.low)
        self.zero_slot = 0 if self.low > 0.0 else self.bins + 1 if self.high < 0.0 else \
            min(math.floor(-self.low * self.scale) + 1, self.bins)

    def edges(self, device: torch.device | str = "cpu") -> Tensor:
        return linear_edges(self.low, self.high, self.bins, device)

    def index(self, v: Tensor) -> Tensor:
        i = ((v - self.low) * self.scale).floor_().add_(1).clamp_(0, self.bins).to(torch.int32)
        return i.add_((v > self.high).to(torch.int32))  # k → k+1 above ``high``


class OctaveBins:
    """Sign-symmetric octave bins for gradients of any scale: edges −2^hi … −2^lo, 0, 2^lo … 2^hi.

    Gradients span many orders of magnitude (paper Figs 7–9), so linear fixed edges would put most
    values in one bin. The bin of |v| is read off its float exponent (``torch.frexp``), exactly, with
    no rounding at the edges; |v| < 2^lo falls in the two bins around 0. Negative values mirror the
    positive bins: [2^j, 2^{j+1}) for v > 0, (−2^{j+1}, −2^j] for v < 0. Defaults: 2^−34 ≈ 5.8e−11
    to 2^4 = 16, 78 bins.
    """

    def __init__(self, lo: int = -34, hi: int = 4) -> None:
        self.lo, self.hi = int(lo), int(hi)
        self.octaves = self.hi - self.lo
        self.bins = 2 * self.octaves + 2
        self.zero_slot = self.octaves + 2

    def edges(self, device: torch.device | str = "cpu") -> Tensor:
        pos = torch.pow(2.0, torch.arange(self.lo, self.hi + 1, dtype=torch.float64)).to(device)
        return torch.cat([-pos.flip(0), torch.zeros(1, dtype=pos.dtype, device=device), pos]).float()

    def index(self, v: Tensor) -> Tensor:
        d = self.octaves
        # e with |v| in [2^(e-1), 2^e): for float32 read straight from the exponent bits (two integer
        # ops; zeros and subnormals have biased exponent 0 and fall in the bins around 0), else frexp,
        # whose exponent for 0 is 0, so exact zeros are first lifted to the smallest normal float.
        if v.dtype == torch.float32:
            exp = torch.bitwise_right_shift(v.view(torch.int32), 23).bitwise_and_(0xFF).sub_(126)
        else:
            _, exp = torch.frexp(v.abs().add_(torch.finfo(v.dtype).tiny))
            exp = exp.to(torch.int32)
        pos = exp.sub_(1 + self.lo).clamp_(-1, d).add_(d + 3)  # zero bin d+2 … overflow 2d+3
        neg = (v < 0).to(torch.int32)
        return pos.add_(pos.mul(-2).add_(2 * d + 3).mul_(neg))  # mirror: slot ↦ 2d+3 − slot
