"""Activation statistics of one probe point on the monitor set (paper Figs 2, 3, 4, 6, 10).

Mean and standard deviation (Fig 2's line and bars), 2nd and 98th percentiles (Fig 3's markers), and
a fixed-edge histogram (Figs 4 and 6), all pooled over every unit and monitor example.

Percentiles are exact nearest-rank values (rank ⌈p·n⌉). On the CPU they are read through the
histogram already computed: the cumulative counts name the bin holding the rank, and only that
bin's entries are searched (``kthvalue``), a few percent of the layer where a full selection
(``topk``) reads it all. On CUDA, where selecting a bin's entries would need their count on the host
(a synchronisation), one batched ``topk`` per tail is used instead.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from glorot_core.instruments.base import Instrument
from glorot_core.instruments.histogram import Bins
from glorot_core.instruments.monitor import Monitor
from glorot_core.instruments.probe import Capture
from glorot_core.instruments.summary import linear_counts, shifted_moments, summary_dict

Tensor = torch.Tensor

PERCENTILES = (0.02, 0.98)


def _ranks(n: int, ps: tuple[float, ...]) -> list[int]:
    return [min(max(math.ceil(p * n), 1), n) for p in ps]


def percentiles(v: Tensor, ps: tuple[float, ...] = PERCENTILES) -> list[Tensor]:
    """Nearest-rank percentiles (value of rank ⌈p·n⌉) of a flat tensor, by partial selection.

    One ``topk`` over [v; −v] takes both tails at once (its rows run in parallel); the rank's value is
    then read from the sorted tail. Several times cheaper than ``torch.quantile``'s full sort.
    """
    n = v.numel()
    ranks = _ranks(n, ps)
    tails = [(r, True) if r <= n - r + 1 else (n - r + 1, False) for r in ranks]
    k = max(t for t, _ in tails)
    rows = [v] if all(low for _, low in tails) else [-v] if not any(low for _, low in tails) else [v, -v]
    top = torch.topk(torch.stack(rows), k, dim=1, largest=False, sorted=True).values
    out = []
    for t, low in tails:
        if len(rows) == 1:
            out.append(top[0, t - 1] if low else -top[0, t - 1])
        else:
            out.append(top[0, t - 1] if low else -top[1, t - 1])
    return out


def binned_percentiles(v: Tensor, idx: Tensor, counts: Tensor, ps: tuple[float, ...] = PERCENTILES) -> list[Tensor]:
    """The same nearest-rank percentiles, searched only in the bin that holds each rank (CPU).

    ``idx`` is every entry's slot and ``counts`` the slot counts, from the same indexing (so a value
    on a bin edge is found in the bin it was counted in); slots are ordered like the values.
    """
    n = v.numel()
    cum = torch.cumsum(counts, 0).tolist()  # a CPU read, no device synchronisation involved
    wanted = []
    for r in _ranks(n, ps):
        slot = next(j for j, c in enumerate(cum) if c >= r)
        wanted.append((slot, r - (cum[slot - 1] if slot else 0)))
    slots = sorted({slot for slot, _ in wanted})
    # every entry of a lower slot is below every entry of a higher one, so the selected slots' entries,
    # gathered in one pass, hold rank k of slot j at k + (entries of the selected slots below j)
    mask = idx == slots[0]
    for slot in slots[1:]:
        mask |= idx == slot
    members = v[mask]
    offset = {slot: sum(cum[s] - (cum[s - 1] if s else 0) for s in slots if s < slot) for slot in slots}
    return [torch.kthvalue(members, k + offset[slot]).values for slot, k in wanted]


def activation_stats(z: Tensor, bins: Bins) -> dict[str, Any]:
    """Statistics of a layer's outputs ``z`` (examples × units), as device tensors.

    Percentiles are taken with non-finite values replaced by 0 (they are counted in ``nonfinite``).
    """
    v = z.detach().reshape(-1)
    counts, m, idx, clean = linear_counts(v, bins)
    mean, std, _ = shifted_moments(v, m)
    full = counts.clone()
    full[bins.zero_slot] -= m  # the replaced entries were counted as zeros
    summary = summary_dict(mean, std, m, full, bins)
    if v.device.type == "cpu" and v.numel():
        p2, p98 = binned_percentiles(clean, idx, counts)
    else:
        p2, p98 = percentiles(clean)
    return {"mean": summary["mean"], "std": summary["std"], "p2": p2, "p98": p98,
            "nonfinite": summary["nonfinite"], "histogram": summary["histogram"]}


class ActivationStats(Instrument):
    """Section ``activation``: moments, percentiles and fixed-edge histogram of z (Figs 2–4, 6)."""

    section = "activation"
    scalars = ("mean", "std", "p2", "p98", "nonfinite")

    def measure_point(self, capture: Capture, monitor: Monitor) -> dict[str, Any]:
        return activation_stats(capture.z, monitor.bins_for(capture.point.activation))
