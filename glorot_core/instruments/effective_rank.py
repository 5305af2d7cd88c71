"""Section ``effective_rank``: how many dimensions a layer's representation actually uses.

For a probe point's activations Z (n monitor examples × m units), centred over the examples
(Z_c = Z − 1·μᵀ, so a constant offset does not count as a direction), with singular values
σ_1 ≥ … ≥ σ_k ≥ 0 (k = min(n, m)):

* ``entropy``: the effective rank of Roy & Vetterli (2007), erank = exp(H(p)), H(p) = −Σ_j p_j ln p_j,
  p_j = σ_j / Σ_i σ_i. It lies in [1, rank Z_c]: equal to r when Z_c has r equal non-zero singular
  values, near 1 when one direction dominates (a layer whose units all encode the same feature);
* ``participation_ratio``: (Σ_j σ_j²)² / Σ_j σ_j⁴ = (tr C)² / tr C², C = Z_cᵀZ_c, the other usual
  "effective dimensionality" (also r for r equal singular values; weights large directions more);
* ``fraction``: erank / min(n − 1, m), the share of the dimensions the centred monitor set allows.

Follow-ups of the paper track a collapse of this rank with depth at poor initialisations (rank
collapse), the geometric counterpart of the shrinking activation variances of Fig 6. The singular
values come from the eigenvalues of the smaller Gram matrix of Z_c in float64, all layers of the same
size in one batched eigen-solve (on the CPU one single-threaded solve per core). The eigen-solve is
the expensive part (a 300×300 problem per layer), so by default this instrument runs at the first and
last snapshot and every 4th one (its :class:`~glorot_core.instruments.base.Schedule`).
"""

from __future__ import annotations

from typing import Any

import torch

from glorot_core.instruments import lapack
from glorot_core.instruments.base import Instrument, Readings, Schedule, SnapshotCapture
from glorot_core.instruments.monitor import Monitor
from glorot_core.instruments.probe import Capture

Tensor = torch.Tensor

DEFAULT_SCHEDULE = Schedule(every=4)


def _gram(z: Tensor) -> Tensor:
    """The smaller Gram matrix of the example-centred ``z`` (examples × units), in float64."""
    x = z.detach().reshape(z.shape[0], -1).to(torch.float64)
    x = x - x.mean(dim=0, keepdim=True)
    return x @ x.T if x.shape[0] <= x.shape[1] else x.T @ x


def singular_values(grams: Tensor) -> Tensor:
    """Singular values (ascending, ≥ 0) from a batch of Gram matrices (destroyed)."""
    eig = lapack.eigvalsh(grams, overwrite=True)
    if eig is None:
        eig = torch.linalg.eigvalsh(grams)
    return eig.clamp_min(0).sqrt()


def effective_rank(z: Tensor) -> dict[str, Tensor]:
    """Roy–Vetterli effective rank, participation ratio and rank fraction of ``z`` (device tensors)."""
    return rank_statistics(singular_values(_gram(z)), z)


def rank_statistics(sv: Tensor, z: Tensor) -> dict[str, Tensor]:
    """The section from the singular values ``sv`` of the centred ``z``.

    Singular values below float64 rounding of the largest (k·ε·σ_max) are treated as 0, so an exactly
    rank-deficient Z_c is not credited with round-off directions. An all-zero Z_c has effective rank 0.
    """
    k = sv.numel()
    floor = sv.max() * (k * torch.finfo(torch.float64).eps) if k else sv.new_zeros(())
    sv = torch.where(sv > floor, sv, torch.zeros_like(sv))
    total = sv.sum()
    p = sv / total.clamp_min(torch.finfo(torch.float64).tiny)
    entropy = -(torch.where(p > 0, p * p.log(), torch.zeros_like(p))).sum()
    erank = torch.where(total > 0, entropy.exp(), torch.zeros_like(entropy))
    sq = sv * sv
    pr = torch.where(total > 0, sq.sum() ** 2 / (sq * sq).sum().clamp_min(torch.finfo(torch.float64).tiny),
                     torch.zeros_like(total))
    most = max(min(z.shape[0] - 1, z[0].numel()), 1)
    return {"entropy": erank, "participation_ratio": pr, "fraction": erank / most}


class EffectiveRank(Instrument):
    """Effective rank (Roy & Vetterli 2007) and participation ratio of each layer's activations."""

    section = "effective_rank"
    scalars = ("entropy", "participation_ratio", "fraction")

    def __init__(self, schedule: Schedule = DEFAULT_SCHEDULE) -> None:
        self.schedule = schedule

    def measure_point(self, capture: Capture, monitor: Monitor) -> dict[str, Any]:
        return effective_rank(capture.z)

    def measure(self, snap: SnapshotCapture, monitor: Monitor) -> Readings:
        """Probe points whose Grams have the same size share one batched eigen-solve."""
        grams = [_gram(c.z) for c in snap.points]
        out: list[Any] = [None] * len(grams)
        by_size: dict[int, list[int]] = {}
        for i, g in enumerate(grams):
            by_size.setdefault(g.shape[0], []).append(i)
        for members in by_size.values():
            svs = singular_values(torch.stack([grams[i] for i in members]))
            for row, i in enumerate(members):
                out[i] = rank_statistics(svs[row], snap.points[i].z)
        return Readings(out)
