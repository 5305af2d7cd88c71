"""Fixed-edge histograms computed on the device, with non-finite values counted, never dropped.

Edges are fixed per quantity (per activation for activations, octaves for gradients), so snapshots
and runs compare bin by bin (W&B's per-call min/max edges cannot; docs/science.md §4).

Two kinds of use:

* ``fixed_histogram(values, edges)``: any ascending edges, one binary search per value
  (``torch.bucketize``). Used for small tensors such as singular values.
* ``LinearBins`` / ``OctaveBins``: the per-layer instruments' bins, whose bin index is computed
  arithmetically (a floor, or the float exponent from ``torch.frexp``) in a few cheap passes; a
  binary search per value cost more than the forward pass being measured.

Every ``count(v)`` returns k+2 slot counts: 0 = underflow, 1..k = the k bins, k+1 = overflow.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

from glorot_core.instruments.host import HostNumbers
from glorot_core.json_numbers import float32_numbers

Tensor = torch.Tensor


class Bins(Protocol):
    bins: int
    zero_slot: int

    def edges(self, device: torch.device | str = "cpu") -> Tensor: ...

    def host_edges(self) -> list[float]:
        """The edges as the report writes them (float32 values), computed once per bins object."""
        ...

    def count(self, v: Tensor) -> Tensor:
        """Counts per slot (k+2 of them: underflow, the k bins, overflow) of finite values ``v``."""
        ...


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


class _HostEdges:
    """``host_edges``: the edges are constants, so their host form is made once, not at every snapshot
    (turning ~1,900 float32 edges into report numbers cost ~2 ms of each paper-sized snapshot)."""

    _host: list[float] | None = None

    def edges(self, device: torch.device | str = "cpu") -> Tensor:
        raise NotImplementedError

    def host_edges(self) -> list[float]:
        if self._host is None:
            self._host = float32_numbers(self.edges().tolist())
        return HostNumbers(self._host)


class LinearBins(_HostEdges):
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

    def count(self, v: Tensor) -> Tensor:
        return torch.bincount(self.index(v), minlength=self.bins + 2)


class OctaveBins(_HostEdges):
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
        self._luts: dict[torch.device, Tensor] = {}

    def edges(self, device: torch.device | str = "cpu") -> Tensor:
        pos = torch.pow(2.0, torch.arange(self.lo, self.hi + 1, dtype=torch.float64)).to(device)
        return torch.cat([-pos.flip(0), torch.zeros(1, dtype=pos.dtype, device=device), pos]).float()

    def index(self, v: Tensor) -> Tensor:
        """Slot of every value (any float dtype), from ``torch.frexp``: |v| in [2^(e-1), 2^e)."""
        d = self.octaves
        # frexp's exponent for 0 is 0, so exact zeros are first lifted to the smallest normal float,
        # which changes the bin of no value at or above 2^lo.
        _, exp = torch.frexp(v.abs().add_(torch.finfo(v.dtype).tiny))
        pos = exp.to(torch.int32).sub_(1 + self.lo).clamp_(-1, d).add_(d + 3)  # zero bin d+2 … overflow 2d+3
        neg = (v < 0).to(torch.int32)
        return pos.add_(pos.mul(-2).add_(2 * d + 3).mul_(neg))  # mirror: slot ↦ 2d+3 − slot

    def count(self, v: Tensor) -> Tensor:
        """Slot counts. For float32, one arithmetic shift of the bit pattern gives sign and biased
        exponent b together (b − 256 for negative values, b for positive), so a 512-bin bincount of
        that key, folded into the slots through a lookup table, replaces a dozen elementwise passes."""
        if v.dtype != torch.float32:
            return torch.bincount(self.index(v), minlength=self.bins + 2)
        key = torch.bitwise_right_shift(v.view(torch.int32), 23).add_(256)
        raw = torch.bincount(key, minlength=512)
        return torch.zeros(self.bins + 2, dtype=raw.dtype, device=raw.device).index_add_(0, self._lut(raw.device), raw)

    def _lut(self, device: torch.device) -> Tensor:
        """Slot of each 512-bin key: b = key mod 256, |v| in [2^(b-127), 2^(b-126)); key < 256 is negative.
        Zeros and subnormals (b = 0) land next to 0 (−0.0 just left of it)."""
        lut = self._luts.get(device)
        if lut is None:
            d = self.octaves
            b = torch.arange(256)
            pos = (b - 127 - self.lo).clamp(-1, d) + d + 3
            lut = torch.cat([2 * d + 3 - pos, pos]).to(device)
            self._luts[device] = lut
        return lut
