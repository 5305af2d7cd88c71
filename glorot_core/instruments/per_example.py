"""Per-example weight gradients ∂C_n/∂W_i = g_n z_nᵀ (paper eq. 3), summarised without forming them.

With the cost summed over the monitor examples, row n of ∂C/∂s_i is example n's own gradient g_n
(``Capture.grad_s``), and example n's weight gradient is the outer product of g_n (J units) with the
layer's input z_n = z_{i−1} (K units): N·J·K numbers, 3·10⁸ for the paper's 5×1000 network on 300
examples, too many to form at every snapshot. Their pooled moments have closed forms in O(N·(J+K)):

    mean  = (1/M) Σ_n (Σ_j g_nj)(Σ_k z_nk)        E[(g z)²] = (1/M) Σ_n (Σ_j g_nj²)(Σ_k z_nk²)

with M = N·J·K (over finite entries: a product is finite when both factors are, so example n has
(finite g_n)·(finite z_n) finite products). The histogram counts a fixed uniform sample of
``SAMPLE`` (example, row, column) triples, the same triples at every snapshot of a run, so snapshots
compare bin by bin; when N·J·K ≤ ``SAMPLE`` every product is counted.

This is the basis of the paper's Figs 8–9 and of eq. 7's prediction; the gradient of the mean cost
(``probe.weight_gradient``) averages the N per-example gradients and is ≈√N narrower when they are
weakly correlated (docs/science.md, "Gradient bases").
"""

from __future__ import annotations

from typing import Any

import torch

from glorot_core.instruments.histogram import OctaveBins
from glorot_core.instruments.summary import octave_counts

Tensor = torch.Tensor

SAMPLE = 1 << 18
"""Per-example products counted by a histogram. Drawn uniformly with replacement, a bin holding a fraction
p of the N·J·K products gets Binomial(SAMPLE, p) counts: relative error √((1−p)/(SAMPLE·p)), 2 % for
p = 1 %, 6 % for p = 0.1 % (octave bins: the central ones hold ~10 % each). 2^18 random gathers cost
≈1.5 ms per 1000×1000 layer on two CPU cores, 2^20 four times that (benchmarks/README.md)."""
_SEED = 20100513
_SAMPLES: dict[tuple[int, int, int, int, str], tuple[Tensor, Tensor]] = {}


def outer_moments(g: Tensor, z: Tensor, *, finite_only: bool = True) -> tuple[Tensor, Tensor, Tensor | None]:
    """(mean, unbiased std, non-finite count) over every entry of every example's g_n z_nᵀ.

    ``g`` is (N, J…) and ``z`` is (N, K…); row sums in float32, their products summed in float64, on
    the device (no host sync): relative accuracy ~1e-6. ``finite_only=False`` skips the masking of
    non-finite entries (a quarter of the cost): any non-finite factor then makes the moments
    non-finite, and the count is None.
    """
    g2, z2 = g.detach().reshape(g.shape[0], -1), z.detach().reshape(z.shape[0], -1)
    n, j, k = g2.shape[0], g2.shape[1], z2.shape[1]
    a1, a2, ca = _row_sums(g2, finite_only)
    b1, b2, cb = _row_sums(z2, finite_only)
    finite = (ca * cb).sum() if finite_only else torch.tensor(float(n * j * k), dtype=torch.float64,
                                                                 device=g2.device)
    s1 = (a1 * b1).sum()
    s2 = (a2 * b2).sum()
    m = finite.clamp_min(1)
    var = (s2 - s1 * s1 / m).clamp_min(0) / (m - 1).clamp_min(1)
    nonfinite = (float(n * j * k) - finite).round().to(torch.int64) if finite_only else None
    return s1 / m, var.sqrt(), nonfinite


def _row_sums(v: Tensor, finite_only: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """Per-row Σv, Σv² (as float64) and, when ``finite_only``, the finite count, over the finite entries."""
    if finite_only:
        c = torch.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)
        count = (v.shape[1] - (c != v).sum(dim=1)).to(torch.float64)  # NaN, ±Inf differ from their 0
    else:
        c, count = v, None
    # float32 row sums of J entries (relative error ~1e-7·√J), then float64 across rows: ~5× faster than
    # float64 row sums, and the report's numbers are float32 anyway
    return c.sum(dim=1).to(torch.float64), torch.linalg.vector_norm(c, dim=1).to(torch.float64).square(), count


def sampled_products(g: Tensor, z: Tensor, size: int = SAMPLE) -> Tensor:
    """A fixed uniform sample (with replacement) of ``size`` per-example products g[n, j]·z[n, k], or
    all N·J·K of them when there are no more than ``size``. Flat, in ``g``'s dtype."""
    g2, z2 = g.detach().reshape(g.shape[0], -1), z.detach().reshape(z.shape[0], -1)
    n, j, k = g2.shape[0], g2.shape[1], z2.shape[1]
    if n * j * k <= size:
        return (g2.unsqueeze(2) * z2.unsqueeze(1).to(g2.dtype)).reshape(-1)
    ig, iz = _sample_indices(n, j, k, size, g2.device)
    return torch.index_select(g2.reshape(-1), 0, ig) * torch.index_select(z2.reshape(-1), 0, iz).to(g2.dtype)


def _sample_indices(n: int, j: int, k: int, size: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Flat indices into g (N×J) and z (N×K) of ``size`` triples (n, j, k), drawn once per shape from a
    fixed seed: every snapshot and every run of the same shapes counts the same triples."""
    key = (n, j, k, size, str(device))
    got = _SAMPLES.get(key)
    if got is None:
        gen = torch.Generator().manual_seed(_SEED)
        rows = torch.randint(n, (size,), generator=gen)
        ig = rows * j + torch.randint(j, (size,), generator=gen)
        iz = rows * k + torch.randint(k, (size,), generator=gen)
        small = n * max(j, k) < 2**31  # int32 indices: half the index traffic of the gather
        dtype = torch.int32 if small else torch.int64
        got = _SAMPLES[key] = (ig.to(device, dtype), iz.to(device, dtype))
    return got


def per_example_summary(g: Tensor, z: Tensor, bins: OctaveBins, size: int = SAMPLE) -> dict[str, Any]:
    """The gradient summary of every example's g_n z_nᵀ: exact ``mean``, ``std``, ``nonfinite`` over all
    N·J·K entries (closed form) and the octave ``histogram`` of a fixed sample of them
    (``histogram_sample`` entries: its counts, under/overflow and non-finite count add up to that)."""
    mean, std, nonfinite = outer_moments(g, z)
    sample = sampled_products(g, z, size)
    # float32 bit patterns give the octave in one pass; octave bins end far inside float32's range
    full, bad = octave_counts(sample if sample.dtype == torch.float32 else sample.float(), bins)
    k = bins.bins
    return {
        "mean": mean,
        "std": std,
        "nonfinite": nonfinite,
        "histogram": {"edges": bins.host_edges(), "counts": full[1:k + 1], "underflow": full[0],
                      "overflow": full[k + 1], "nonfinite": bad},
        "histogram_sample": int(sample.numel()),
    }
