"""The summary every per-tensor instrument shares: moments over the finite entries, the count of
non-finite ones, and a fixed-edge histogram, in a few passes over the data on the device.

A snapshot summarises ~6.5 million numbers for the paper's 5×1000 network (each layer's 1000×1000
weight gradient, 300×1000 activations and ∂C/∂s), so the number of passes over memory is what
costs. The moments use a *shifted* two-pass scheme: d = v − c with c the mean of a strided sample of
1024 entries (so |c − mean| is a fraction of the standard deviation and Σd² − (Σd)²/n does not
cancel, even when std ≪ |mean| as in sigmoid layers); non-finite entries of d are then replaced by 0
in place, which removes them from both sums exactly. The sums are float32 per row of 1024 entries,
then float64 over rows: the mean agrees with a float64 computation to ~1e-10 relative.

Histograms: ``OctaveBins`` on float32 values are counted from the raw bit pattern (sign and biased
exponent, one shift), into 512 keys folded to the octave slots; NaN and ±Inf have exponent 255, so
the same count gives the number of non-finite entries without another pass. ``LinearBins`` index
the finite values arithmetically. Either way sum(counts) + underflow + overflow + nonfinite ==
v.numel().
"""

from __future__ import annotations

from typing import Any

import torch

from glorot_core.instruments.histogram import Bins, OctaveBins

Tensor = torch.Tensor

_SAMPLE = 1024
_ROW = 1024
_NONFINITE_KEYS = (255, 511)  # exponent 255 (NaN, ±Inf), sign bit set / clear


def shifted_moments(v: Tensor, nonfinite: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(mean, unbiased std, non-finite count) of the finite entries of flat ``v``, as device tensors.

    ``nonfinite`` may be passed when already known (the octave histogram counts it for free).
    """
    n_all = v.numel()
    step = max(n_all // _SAMPLE, 1)
    sample = torch.nan_to_num(v[::step][:_SAMPLE], nan=0.0, posinf=0.0, neginf=0.0)
    c = sample.mean(dtype=torch.float64).to(v.dtype) if n_all else torch.zeros((), dtype=v.dtype, device=v.device)
    d = v - c  # the shift exactly as subtracted, so mean = c + Σd/n below adds back the same number
    if nonfinite is None:
        nonfinite = _zero_count(v.device) if all_finite_on_cpu(d) else \
            torch.count_nonzero(torch.isnan(d)) + torch.count_nonzero(torch.isinf(d))
    if not _none_on_cpu(nonfinite):
        torch.nan_to_num_(d, nan=0.0, posinf=0.0, neginf=0.0)  # non-finite entries now add 0 to both sums
    s1 = _row_sum(d)
    s2 = torch.dot(d, d).to(torch.float64) if n_all else torch.zeros((), dtype=torch.float64, device=v.device)
    nf = (n_all - nonfinite).to(torch.float64).clamp_min(1)
    mean = c.to(torch.float64) + s1 / nf
    var = (s2 - s1 * s1 / nf).clamp_min(0) / (nf - 1).clamp_min(1)
    return mean, var.sqrt(), nonfinite


def centred_moments(v: Tensor, nonfinite: Tensor) -> tuple[Tensor, Tensor]:
    """(mean, unbiased std) of the finite entries of flat ``v`` in one pass over its non-finite-free
    copy, for data known to be centred (|mean| ≲ std: gradients). Relative error ε·(1 + mean²/var)
    against the shifted two-pass form, which costs one more pass over the data."""
    clean = v if _none_on_cpu(nonfinite) else torch.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)
    s1 = _row_sum(clean)
    s2 = torch.dot(clean, clean).to(torch.float64) if clean.numel() else s1
    nf = (v.numel() - nonfinite).to(torch.float64).clamp_min(1)
    var = (s2 - s1 * s1 / nf).clamp_min(0) / (nf - 1).clamp_min(1)
    return s1 / nf, var.sqrt()


def _none_on_cpu(nonfinite: Tensor) -> bool:
    """Whether a non-finite count known to be 0 lets a pass that zeroes non-finite entries be skipped: on
    the CPU only, where reading the count costs nothing; on an accelerator that read would be a host
    synchronisation, so the branch-free path is kept."""
    return nonfinite.device.type == "cpu" and int(nonfinite) == 0


def all_finite_on_cpu(v: Tensor) -> bool:
    """True when ``v`` is on the CPU and every entry is finite, from one float32 sum (a NaN or ±Inf entry
    makes the sum non-finite; a sum that overflows only sends the caller to its general path)."""
    return v.device.type == "cpu" and bool(torch.isfinite(v.sum()))


def _zero_count(device: torch.device) -> Tensor:
    return torch.zeros((), dtype=torch.int64, device=device)


def centred_variance(v: Tensor) -> Tensor:
    """Unbiased variance of ``v`` (float64, device) in one pass, (Σv² − (Σv)²/n)/(n − 1), for data known
    to be centred (|mean| ≲ std: a layer's weights). The cancellation error is ε·(1 + mean²/var); the
    two-pass form (:func:`shifted_moments`) costs one more pass over the data."""
    v = v.detach().reshape(-1)
    n = v.numel()
    s1 = _row_sum(v)
    s2 = torch.dot(v, v).to(torch.float64)
    return ((s2 - s1 * s1 / max(n, 1)) / max(n - 1, 1)).clamp_min(0)


def _row_sum(d: Tensor) -> Tensor:
    """Σd in float64 from float32 partial sums of 1024 entries (a float64 sum of every entry costs several
    times a float32 one on the CPU; the partial sums keep ~1e-10 relative accuracy)."""
    n = d.numel()
    body = n - n % _ROW
    total = d[:body].view(-1, _ROW).sum(dim=1).sum(dtype=torch.float64) if body else \
        torch.zeros((), dtype=torch.float64, device=d.device)
    if body < n:
        total = total + d[body:].sum(dtype=torch.float64)
    return total


def octave_counts(v: Tensor, bins: OctaveBins) -> tuple[Tensor, Tensor]:
    """(k+2 slot counts of the finite entries, non-finite count) of float32 ``v`` in one counting pass.

    The key (v's bits >> 23) + 256 is sign and biased exponent b; every value with the same key lies
    in the same octave bin, so each key's slot is that of one representative value ±2^(b−127)
    (±2^−126 for zeros and subnormals), found once through ``bins.index``. The two keys of exponent
    255 (NaN, ±Inf) go to a slot k+2 of their own: its count is the non-finite count.
    """
    key = torch.bitwise_right_shift(v.view(torch.int32), 23).add_(256)
    raw = torch.bincount(key, minlength=512)
    lut = _octave_lut(bins, raw.device)
    full = torch.zeros(bins.bins + 3, dtype=raw.dtype, device=raw.device).index_add_(0, lut, raw)
    return full[: bins.bins + 2], full[bins.bins + 2]


_LUTS: dict[tuple[int, int, torch.device], Tensor] = {}


def _octave_lut(bins: OctaveBins, device: torch.device) -> Tensor:
    key = (bins.lo, bins.hi, device)
    lut = _LUTS.get(key)
    if lut is None:
        b = torch.arange(256, dtype=torch.float64)
        mag = torch.pow(2.0, (b - 127).clamp_min(-126)).to(torch.float32)
        reps = torch.cat([-mag, mag])
        lut = bins.index(reps).to(torch.int64)
        lut[list(_NONFINITE_KEYS)] = bins.bins + 2
        lut = _LUTS[key] = lut.to(device)
    return lut


def tensor_summary(v: Tensor, bins: Bins, scale: float = 1.0, *, centred: bool = False) -> dict[str, Any]:
    """Summary of ``v * scale`` (scale > 0): moments are scaled after the fact; the histogram indexes ``v * scale``.

    ``centred=True`` declares |mean| ≲ std (gradients) and takes the moments in one pass
    (:func:`centred_moments`); otherwise the shifted two-pass form (:func:`shifted_moments`).

    Returns device tensors: ``mean`` and ``std`` (unbiased) over the finite entries, ``nonfinite``
    (NaN and ±Inf count) and ``histogram`` = {edges, counts, underflow, overflow, nonfinite} with
    sum(counts) + underflow + overflow + nonfinite == v.numel(). Bins are [e_j, e_{j+1}), the last
    one closed, so a saturated output of exactly ±1.0 falls in the outer bins.
    """
    v = v.detach().reshape(-1)
    if isinstance(bins, OctaveBins) and v.dtype == torch.float32:
        full, m = octave_counts(v if scale == 1.0 else v * scale, bins)
        mean, std = centred_moments(v, m) if centred else shifted_moments(v, m)[:2]
    else:
        counts, m, _, _ = linear_counts(v, bins, scale)
        full = counts.clone()
        full[bins.zero_slot] -= m  # the replaced entries were counted as zeros
        mean, std = centred_moments(v, m) if centred else shifted_moments(v, m)[:2]
    return summary_dict(mean * scale, std * scale, m, full, bins)


def linear_counts(v: Tensor, bins: Bins, scale: float = 1.0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Slot counts of flat ``v`` with non-finite entries replaced by 0, for bins indexed arithmetically.

    Returns (k+2 slot counts *including* the replaced entries in the zero slot, the non-finite count
    m, every entry's slot, the replaced values): the slots let a caller select one bin's entries
    (exact percentiles); subtract m from ``counts[bins.zero_slot]`` for the report's histogram.
    """
    if all_finite_on_cpu(v):
        clean, m = v, _zero_count(v.device)
    else:
        clean = torch.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)
        m = torch.count_nonzero(clean != v)  # NaN != 0 and ±Inf != 0: the entries just replaced by 0
    idx = bins.index(clean if scale == 1.0 else clean * scale)
    return torch.bincount(idx, minlength=bins.bins + 2), m, idx, clean


def summary_dict(mean: Tensor, std: Tensor, m: Tensor, full: Tensor, bins: Bins) -> dict[str, Any]:
    """The report's summary layout from moments and k+2 slot counts (the edges already as host numbers)."""
    k = bins.bins
    return {
        "mean": mean,
        "std": std,
        "nonfinite": m,
        "histogram": {"edges": bins.host_edges(), "counts": full[1:k + 1], "underflow": full[0],
                      "overflow": full[k + 1], "nonfinite": m},
    }
