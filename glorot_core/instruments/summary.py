"""The summary every per-tensor instrument shares: moments over the finite entries, the count of
non-finite ones, and a fixed-edge histogram, in about six passes over the data on the device.

The straightforward version (masks, ``where``, float64 copies, one comparison per kind of non-finite
value) made the snapshot an order of magnitude more expensive than the forward and backward passes it
summarises; this one replaces non-finite values by 0 once, takes two-pass moments (stable when std ≪ mean,
as in sigmoid layers) and one bucketize + bincount, then corrects moments and
the zero bin for the m replaced entries with scalar arithmetic. Bin indices are computed arithmetically
(``LinearBins`` / ``OctaveBins``), several times cheaper than a binary search per value.
"""

from __future__ import annotations

import torch

from glorot_core.instruments.histogram import Bins

Tensor = torch.Tensor


def tensor_summary(v: Tensor, bins: Bins, scale: float = 1.0) -> dict[str, object]:
    """Summary of ``v * scale`` (scale > 0): moments are scaled after the fact; the histogram indexes ``v * scale``.

    Returns device tensors: ``mean`` and ``std`` (unbiased) over the finite entries, ``nonfinite``
    (NaN and ±Inf count) and ``histogram`` = {edges, counts, underflow, overflow, nonfinite} with
    sum(counts) + underflow + overflow + nonfinite == v.numel(). Bins are [e_j, e_{j+1}), the last
    one closed, so a saturated output of exactly ±1.0 falls in the outer bins.
    """
    v = v.detach().reshape(-1)
    n_all = v.numel()
    clean = torch.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)
    m = torch.count_nonzero(clean != v)  # NaN != 0 and ±Inf != 0: the entries just replaced by 0
    finite = n_all - m
    nf = finite.double().clamp_min(1)
    mean = clean.sum(dtype=torch.float64) / nf  # the replaced zeros add nothing to the sum
    dev = clean - mean.to(clean.dtype)
    # Two-pass variance (no E[x²] − E[x]² cancellation when std ≪ mean, as in sigmoid layers); each
    # replaced zero contributed mean² to the sum of squares, which is taken back out.
    ss = torch.dot(dev, dev).double() - m.double() * mean * mean
    std = (ss.clamp_min(0) / (nf - 1).clamp_min(1)).sqrt()
    k = bins.bins
    full = bins.count(clean if scale == 1.0 else clean * scale)
    full[bins.zero_slot] -= m  # the replaced entries were counted as zeros
    return {
        "mean": mean * scale,
        "std": std * scale,
        "nonfinite": m,
        "histogram": {"edges": bins.edges(v.device), "counts": full[1:k + 1], "underflow": full[0],
                      "overflow": full[k + 1], "nonfinite": m},
    }
