"""Jacobian spectra of an uploaded model: per block (between consecutive probe points) and end to end.

Block i (in probe point i's ``jacobian`` section) is J^i = ∂z_{i+1}/∂z_i for one example: probe point
i+1's value as a function of probe point i's, everything not downstream of z_i held fixed
(:class:`glorot_core.uploads.segments.Segment`); the paper's J^i (eq. 17, §4.2.2) for any graph. The
end-to-end Jacobian (the snapshot's ``end_to_end``) maps the input, or for a token model the
embedding output, to the model's output (the logits). The last probe point has no block, nor has a
point whose successor is not downstream of it (parallel branches: the Jacobian is 0).

Products come from torch.func on the graph itself: J v by ``jvp`` (forward mode), Jᵀ u by ``vjp``
(reverse mode; the linearisation is computed once per chunk and reused), vectorised over the probe
vectors with ``vmap`` (a probe at a time where an op has no batching rule). Every example of a chunk
is handled by one product because the chunk's Jacobian is block diagonal over examples (segments.py).
The mathematics is the built-in MLP's (:mod:`glorot_core.instruments.jacobian`), given these
products instead of the MLP's layer structure:

* **exact**: J is formed from identity probes on its smaller side (min(n_in, n_out) products, one
  per singular value), then its smaller Gram's eigenvalues in ``diagnostics.jacobian.precision``:
  every singular value of every example.
* **estimate**: matrix-free Lanczos with full reorthogonalisation from 4 Gaussian probes per example,
  ``estimate_iterations`` steps: λ_max bracketed (top Ritz value below, Kuczyński–Woźniakowski above),
  mean σ² by Hutchinson (± 3 standard errors), mean σ and the spectral density by stochastic Lanczos
  quadrature (Gauss / Gauss–Radau brackets ± 3 standard errors). Products of a float32 model carry
  their own rounding, δ ≈ depth·√n·ε₃₂ relative (depth: ops re-run, n: the larger side); the bounds
  are widened by it (Weyl: σ moves by at most δ·σ_max).
* **auto** (the default for uploaded models): exact where the smaller side of J is at most
  ``diagnostics.jacobian.exact_max_dim`` (J then costs that many products and a Gram of that size),
  matrix-free otherwise: dense blocks and the end-to-end map to a few logits are exact, wide
  convolutions estimated. Each section's ``mode`` says which ran.

Cost control: the first ``diagnostics.jacobian.examples`` monitor examples, in chunks bounded in memory
(a program traced with a fixed batch size runs on chunks of that size, the last padded).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from glorot_core.errors import SpecNotRunnable
from glorot_core.instruments.jacobian import (
    DEFAULT_MAX_CHUNK_BYTES,
    JacobianOperator,
    LanczosRun,
    lanczos_run,
    lanczos_statistics,
    operator_singular_values,
    spectrum_summary,
    sv_resolution,
)
from glorot_core.spec import JacobianSpec
from glorot_core.uploads.segments import GraphView, Segment, record

Tensor = torch.Tensor

PROBES = 4
"""Gaussian probe vectors per example in estimate mode (as the built-in MLP's)."""

EXACT_MAX_BYTES = 2**30
"""Largest per-example J that mode "exact" forms (1 GiB); beyond it the job fails and says to use "auto"."""


def _probes(fn: Callable[[Tensor], Tensor], t: Tensor, state: dict[str, bool]) -> Tensor:
    """``fn`` on each of the P probes of t (B, P, …), vectorised by vmap where the graph's ops allow."""
    if state.get("vmap", True):
        try:
            return torch.func.vmap(fn, in_dims=1, out_dims=1)(t)
        except (RuntimeError, NotImplementedError):
            state["vmap"] = False  # an op without a batching rule: one probe at a time from now on
    return torch.stack([fn(t[:, p]) for p in range(t.shape[1])], dim=1)


class SegmentOperator(JacobianOperator):
    """The per-example Jacobians of g at z0 (a chunk of examples) as torch.func products."""

    def __init__(self, g: Callable[[Tensor], Tensor], z0: Tensor, out_shape: tuple[int, ...]) -> None:
        self.g, self.z0 = g, z0
        self.in_shape, self.out_shape = tuple(z0.shape[1:]), out_shape
        self.n_in, self.n_out = math.prod(self.in_shape), math.prod(out_shape)
        self.batch, self.device = int(z0.shape[0]), z0.device
        self._pullback: Callable[..., Any] | None = None
        self._vmap: dict[str, bool] = {}

    def mv(self, v: Tensor) -> Tensor:
        b, p = v.shape[:2]
        t = v.reshape(b, p, *self.in_shape).to(self.z0.dtype)
        out = _probes(lambda tv: torch.func.jvp(self.g, (self.z0,), (tv,))[1], t, self._vmap)
        return out.reshape(b, p, self.n_out).to(v.dtype)

    def rmv(self, u: Tensor) -> Tensor:
        if self._pullback is None:
            _, self._pullback = torch.func.vjp(self.g, self.z0)
        pullback = self._pullback
        b, p = u.shape[:2]
        c = u.reshape(b, p, *self.out_shape).to(self.z0.dtype)
        out = _probes(lambda cv: pullback(cv)[0], c, self._vmap)
        return out.reshape(b, p, self.n_in).to(u.dtype)


@dataclass
class _Job:
    """One Jacobian to compute: its segment, labels, sizes, mode and what the chunks gave so far."""

    segment: Segment
    labels: dict[str, str]
    n_in: int = 0
    n_out: int = 0
    mode: str = "exact"  # "exact", "estimate", or "none" (not differentiable: no section)
    dtype: torch.dtype = torch.float32  # of the model's values at the segment's start
    svals: list[Tensor] | None = None
    runs: list[LanczosRun] | None = None

    @property
    def label(self) -> str:
        return f"{self.labels['from']} → {self.labels['to']}"


def uploaded_jacobian_spectra(
    view: GraphView,
    x: Tensor,
    names: list[str],
    spec: JacobianSpec,
    bins: int,
    *,
    static_batch: int | None = None,
    seed: int = 0,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
) -> dict[str, Any]:
    """{"layers": [block i's section or None, one per probe point in ``names``], "end_to_end": … | None}.

    ``x``: the monitor inputs (the first ``spec.examples`` are used); ``names``: the report's probe
    points in order; ``static_batch``: the batch size a program was traced with, if fixed. Sections have
    the built-in MLP's fields (exact or estimate, with bounds) plus ``from``, ``to`` (probe-point names;
    ``input`` / ``embedding`` and ``output`` end to end) and ``size`` ([n_out, n_in] per example).
    """
    if spec.mode == "off":
        return {"layers": [], "end_to_end": None}
    x = x[: spec.examples]
    blocks: list[_Job | None] = []
    for a, b in itertools.pairwise(names):
        na, nb = view.points.get(a), view.points.get(b)
        seg = Segment(view.gm, na, nb) if na is not None and nb is not None else None
        blocks.append(_Job(seg, {"from": a, "to": b}) if seg is not None and seg.connected else None)
    e2e = None
    if spec.end_to_end and view.output is not None:
        seg = Segment(view.gm, view.source, view.output)
        if seg.connected:
            e2e = _Job(seg, {"from": "embedding" if view.embedding is not None else "input", "to": "output"})
    jobs = [j for j in [*blocks, e2e] if j is not None]
    if jobs:
        with torch.no_grad():
            _run(view, x, jobs, spec, static_batch, seed, max_chunk_bytes)
    precision = torch.float64 if spec.precision == "float64" else torch.float32
    layers = [_section(j, bins, precision) for j in blocks]
    return {"layers": layers + [None] * (len(names) - len(layers)), "end_to_end": _section(e2e, bins, precision)}


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(size, n - start)) for start in range(0, n, size)]


def _padded(x: Tensor, start: int, real: int, size: int) -> Tensor:
    """Rows start…start+real of x, padded to ``size`` rows with copies of its first (a fixed batch size)."""
    xb = x[start:start + real]
    return torch.cat([xb, xb[:1].expand(size - real, *x.shape[1:])]) if real < size else xb


def _run(view: GraphView, x: Tensor, jobs: list[_Job], spec: JacobianSpec, static_batch: int | None,
         seed: int, max_bytes: int) -> None:
    """Fill each job's singular values (exact) or Lanczos runs (estimate), a chunk of examples at a time."""
    first = record(view, _padded(x, 0, min(1, x.shape[0]), static_batch or 1), [j.segment for j in jobs])
    for j in jobs:  # only floating tensors have derivatives (token ids without an embedding found: none)
        ends = (first[j.segment.start], first[j.segment.end])
        if not all(isinstance(v, Tensor) and v.is_floating_point() for v in ends):
            j.mode = "none"
    jobs = [j for j in jobs if j.mode != "none"]
    segments = [j.segment for j in jobs]
    per_example = 1
    for j in jobs:
        j.n_in = math.prod(first[j.segment.start].shape[1:])
        j.n_out = math.prod(first[j.segment.end].shape[1:])
        j.dtype = first[j.segment.start].dtype
        k, wide = min(j.n_in, j.n_out), max(j.n_in, j.n_out)
        exact = spec.mode == "exact" or (spec.mode == "auto" and k <= spec.exact_max_dim)
        j.mode = "exact" if exact else "estimate"
        if exact and spec.mode == "exact" and j.n_in * j.n_out * 8 > EXACT_MAX_BYTES:
            raise SpecNotRunnable(f"the Jacobian of {j.label} is {j.n_out}×{j.n_in} per example, too large to "
                                  "form: use diagnostics.jacobian.mode \"auto\" or \"estimate\"")
        steps = min(spec.estimate_iterations, k)
        per_example = max(per_example, (2 * k * wide if exact else PROBES * (steps + 4) * wide) * 8)
        j.svals, j.runs = [], []
    size = static_batch or max(1, min(x.shape[0], max_bytes // per_example))
    gen = torch.Generator(device=x.device).manual_seed(seed)
    precision = torch.float64 if spec.precision == "float64" else torch.float32
    for start, real in _chunks(x.shape[0], size):
        values = record(view, _padded(x, start, real, size), segments)
        for j in jobs:
            seg = j.segment
            op = SegmentOperator(seg.bind(values), values[seg.start], tuple(values[seg.end].shape[1:]))
            try:
                if j.mode == "exact":
                    j.svals.append(operator_singular_values(op, precision, max_bytes=max_bytes)[:real])  # type: ignore[union-attr]
                else:
                    j.runs.append(lanczos_run(op, spec.estimate_iterations, PROBES, gen).rows(real))  # type: ignore[union-attr]
            except (RuntimeError, NotImplementedError) as e:
                first_line = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
                raise SpecNotRunnable(f"the Jacobian of {j.label} could not be computed ({first_line}); set "
                                      "diagnostics.jacobian.mode to \"off\" to diagnose without it") from None


def _section(job: _Job | None, bins: int, precision: torch.dtype) -> dict[str, Any] | None:
    """The report section of one Jacobian (the MLP's fields, plus from/to/size); None where none ran."""
    if job is None or job.mode == "none":
        return None
    seg = job.segment
    if job.mode == "exact":
        sv = torch.cat(job.svals or [])
        out = spectrum_summary(sv, bins, sv_resolution(min(job.n_in, job.n_out), precision, job.dtype, seg.depth))
    else:
        rounding = 0.0 if job.dtype == torch.float64 else \
            seg.depth * math.sqrt(max(job.n_in, job.n_out)) * torch.finfo(job.dtype).eps
        out = lanczos_statistics(job.runs or [], bins, rounding=rounding)
    return {**out, **job.labels, "size": [job.n_out, job.n_in]}
