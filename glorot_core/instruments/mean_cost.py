"""The weight gradient of the mean cost, G = (∂C/∂s)ᵀ z_in / N, summarised without forming it (paper
eq. 3 averaged over the N monitor examples: the ``mean_cost`` basis of ``instruments.gradients``).

G has J·K entries, a million for each of the paper's 1000×1000 layers. Forming it is an N·J·K GEMM
and summarising it one more pass over a million numbers: together more than every other statistic of
the layer. Its moments need neither. With g = ∂C/∂s (N×J, row n example n's gradient) and z = z_in
(N×K):

    Σ_jk G_jk  = (1/N)  Σ_n (Σ_j g_nj)(Σ_k z_nk)
    Σ_jk G_jk² = ‖gᵀz‖²_F / N² = (1/N²) Σ_{n,m} (g gᵀ)_nm (z zᵀ)_nm

two N×N Gram matrices: N²·(J+K) multiply-adds against N·J·K (0.6× for N = 300, J = K = 1000), exact
up to the float32 rounding of the Grams (~1e-6 relative).

**Non-finite entries.** G_jk sums g_nj·z_nk over n, so it is non-finite exactly when column j of g or
column k of z holds a NaN or ±Inf (a finite sum overflowing float32, |G_jk| > 3·10³⁸, aside). Those
columns are zeroed: the moments are over the J_f·K_f finite entries and J·K − J_f·K_f is the count.

**Histogram.** It counts a fixed sample of G's entries, a *balanced* one: rows and columns are
permuted once (a fixed seed) and cut into B bands each, and the sample is the B diagonal blocks, band
b of the rows against band b of the columns, ≈ ``SAMPLE`` entries in all. Every row and every column
of G (but the J mod B and K mod B left over) gives the same number of entries, so rows or columns of
very different scale (saturated units, constant input pixels) cannot make the sample drift from the
whole: a bin holding a fraction p of G is estimated about as well as by an independent uniform
sample, within √(p(1−p)/S) (S entries; ``tests/test_mean_cost_gradient.py``). The same entries are
counted at every snapshot of a run, so snapshots compare bin by bin. Where G is small (J·K ≤ SAMPLE)
or the Grams would cost more than G (N·(J+K) ≥ J·K), G is formed and every entry counted.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from glorot_core.instruments.histogram import OctaveBins
from glorot_core.instruments.probe import weight_gradient
from glorot_core.instruments.summary import all_finite_on_cpu, octave_counts, summary_dict, tensor_summary

Tensor = torch.Tensor

SAMPLE = 1 << 16
"""Entries of G a histogram counts (≈: whole diagonal blocks). A bin holding a fraction p of G is known
to √((1−p)/(S·p)) relative: 1.2 % for the central octave bins (p ≈ 10 %), 4 % for p = 1 %."""
_SEED = 20100514
_BANDS: dict[tuple[int, int, int, str], tuple[Tensor, Tensor, int]] = {}


def mean_cost_summary(grad_s: Tensor, z_in: Tensor, bins: OctaveBins, size: int = SAMPLE) -> dict[str, Any]:
    """The gradient summary (``gradients.gradient_stats``'s layout) of G = grad_sᵀ z_in / N: exact
    ``mean``, ``std``, ``nonfinite`` over all J·K entries, and the octave ``histogram`` of the balanced
    sample (adding ``histogram_sample``, its size) or, for a small G, of every entry."""
    g = grad_s.detach().reshape(grad_s.shape[0], -1)
    z = z_in.detach().reshape(z_in.shape[0], -1).to(g.dtype)
    n, j, k = g.shape[0], g.shape[1], z.shape[1]
    if j * k <= size or n * (j + k) >= j * k or g.dtype != torch.float32:
        return tensor_summary(weight_gradient(g, z), bins, centred=True)
    sample = sampled_entries(g, z, size)  # before the masking: an entry of a non-finite column stays non-finite
    g, j_finite = _zero_nonfinite_columns(g)
    z, k_finite = _zero_nonfinite_columns(z)
    finite = (j_finite * k_finite).to(torch.float64)
    s1 = (g.sum(dim=1).to(torch.float64) * z.sum(dim=1).to(torch.float64)).sum() / n
    gram_g, gram_z = torch.mm(g, g.T), torch.mm(z, z.T)
    s2 = torch.dot(gram_g.reshape(-1).to(torch.float64), gram_z.reshape(-1).to(torch.float64)) / (n * n)
    m = finite.clamp_min(1)
    var = (s2 - s1 * s1 / m).clamp_min(0) / (m - 1).clamp_min(1)
    nonfinite = (j * k - finite).round().to(torch.int64)
    full, bad = octave_counts(sample, bins)
    out = summary_dict(s1 / m, var.sqrt(), nonfinite, full, bins)
    out["histogram"]["nonfinite"] = bad  # of the sample, as its counts are
    out["histogram_sample"] = int(sample.numel())
    return out


def sampled_entries(g: Tensor, z: Tensor, size: int = SAMPLE) -> Tensor:
    """The balanced sample's entries of gᵀz / N (flat): B diagonal blocks of the row- and
    column-permuted G, one batched GEMM of N·(J·K/B) multiply-adds."""
    n, j, k = g.shape[0], g.shape[1], z.shape[1]
    rows, cols, bands = _balanced_bands(j, k, size, g.device)
    gb = torch.index_select(g, 1, rows).view(n, bands, -1).transpose(0, 1)  # (B, N, J/B), strided: BLAS reads it
    zb = torch.index_select(z, 1, cols).view(n, bands, -1).transpose(0, 1)  # (B, N, K/B)
    return torch.bmm(gb.transpose(1, 2), zb).reshape(-1).div_(n)


def _zero_nonfinite_columns(v: Tensor) -> tuple[Tensor, Tensor]:
    """``v`` with every column holding a non-finite entry set to 0, and the count of the other columns."""
    if all_finite_on_cpu(v):
        return v, torch.tensor(v.shape[1], dtype=torch.int64)
    ok = torch.isfinite(v).all(dim=0)
    return torch.where(ok, v, torch.zeros((), dtype=v.dtype, device=v.device)), ok.sum()


def _balanced_bands(j: int, k: int, size: int, device: torch.device) -> tuple[Tensor, Tensor, int]:
    """(row order, column order, B): fixed permutations of J rows and K columns, each cut to B equal
    bands (the J mod B and K mod B left over are not sampled), B the fewest with ≤ ``size`` entries."""
    key = (j, k, size, str(device))
    got = _BANDS.get(key)
    if got is None:
        bands = min(max(math.ceil(j * k / size), 1), j, k)
        gen = torch.Generator().manual_seed(_SEED)
        rows = torch.randperm(j, generator=gen)[: bands * (j // bands)]
        cols = torch.randperm(k, generator=gen)[: bands * (k // bands)]
        got = _BANDS[key] = (rows.to(device), cols.to(device), bands)
    return got
