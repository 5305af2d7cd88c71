"""Jacobian singular-value spectra: per layer J^i = ∂z_{i+1}/∂z_i and end to end (input → last hidden).

Paper §4.2.2: J^i = diag(f'(s_{i+1})) W_{i+1}ᵀ per example (row-vector convention; with torch's
(fan_out, fan_in) weights it is ``diag(f'(s_{i+1})) · linears[i].weight``). "With our normalized
initialization, this ratio [the average singular value] is around 0.8 whereas with the standard
initialization, it drops down to 0.5." The layer-to-layer variance ratio follows the *mean squared*
singular value (tr JᵀJ / k, Pennington et al. 2017's χ), so both are reported. The end-to-end
Jacobian J = D_L W_L ⋯ D_1 W_1 (D_i = diag f'(s_i)) is the one whose spectrum defines dynamical
isometry.

Two modes (``JacobianSpec.mode``):

* **exact**: every singular value of every example's Jacobian. Like BackPACK's per-layer-type
  Jacobians, the layer's structure is used instead of autograd: for J = D W (m×n),
  J Jᵀ = D (W Wᵀ) D = G ⊙ d dᵀ with G = W Wᵀ computed once per layer, so the per-example work is one
  Hadamard product and one batched symmetric eigen-solve (of the smaller of J Jᵀ / JᵀJ; when m > n,
  JᵀJ = Wᵀ D² W by one batched matmul). σ = √max(λ, 0). The end-to-end J is formed by a batched chain
  of matmuls in the cheaper association, then Gram + eigen-solve (faster than ``svdvals`` at the
  paper's sizes; timings in benchmarks/README.md).
* **estimate**: matrix-free (J or its Gram is never formed): J v and Jᵀ u are applied through the
  layer structure (v ↦ d ⊙ (v Wᵀ), u ↦ (d ⊙ u) W), batched over examples × probes. Lanczos with full
  reorthogonalisation on A = JᵀJ (or J Jᵀ, the smaller) from Gaussian probes gives: Hutchinson's trace
  (mean squared σ, ± 3 standard errors over probes), stochastic Lanczos quadrature of √ (mean σ,
  bracketed per probe by the Gauss rule, an upper bound because √'s even derivatives are negative,
  and the Gauss–Radau rule with a node at 0, a lower bound; plus 3 standard errors), and λ_max
  (the top Ritz value is a lower bound; the upper bound is Kuczyński–Woźniakowski's: with a random
  start, P[θ_max < (1−ε) λ_max] ≤ 1.648 √N e^{−√ε (2k−1)}, at failure probability 10⁻³ per example,
  combined with the residual θ + β_k |s_k|).

Precision (exact mode). Forming a Gram squares the condition number, so Grams and eigen-solves run in
``dtype`` = float64 by default: eigenvalue errors are ~N·ε₆₄·λ_max, so σ is resolved down to
``sv_floor`` ≈ √(N ε₆₄) σ_max ≈ 3·10⁻⁷ σ_max at N = 1000. ``dtype=torch.float32`` is cheaper (the cost
ratio is in benchmarks/README.md) and keeps the mean σ within ~1e-6 (layers) / ~1.3e-5 (end to end)
relative of a float64 SVD at the paper's sizes (measured), but resolves σ only down to ≈ 10⁻³ σ_max,
which makes min_sv and the condition number of the paper's square layers meaningless: hence float64 as
these functions' default. A run picks with ``diagnostics.jacobian.precision``, float32 by default there:
the paper's quantities are the mean σ and mean σ², and float32 is what makes the per-snapshot cost
bearable; ``sv_floor`` says below which σ a reported ``min_sv`` is noise. The
end-to-end chain product runs in the model's own dtype (a float32 model's Jacobian is only
float32-accurate anyway, as is autograd's); its rounding is added to ``sv_floor``. The eigen-solve is
``torch.linalg.eigvalsh`` (cuSOLVER) on CUDA; on the CPU it is OpenBLAS's ``?syevd`` from numpy's wheel,
one single-threaded solve per core with OpenBLAS's own pool held at one thread (its spinning threads
would fight torch's OpenMP threads), the per-example Gram formed in each worker's cache-resident
scratch buffer (:mod:`glorot_core.instruments.lapack`; compared with torch's solver in
benchmarks/README.md), with ``torch.linalg.eigvalsh`` as the fallback where that LAPACK is not found.

Outputs are dicts of device tensors; nothing here synchronises with the host (no ``.item()``, no
Python branch on tensor values), the snapshot copies everything at once. Statistics over examples:
``mean_sv`` / ``mean_sq_sv`` are means over examples of per-example means (equal to the mean over all
singular values, each example having the same count); ``max_sv`` / ``min_sv`` are the extremes over
all examples; ``condition_number`` is the worst (largest) per-example σ_max/σ_min (inf where σ_min is
0), not max_sv/min_sv, which would mix examples. Histograms use fixed log-spaced edges
(:func:`singular_value_edges`, 10⁻⁵…10², zero and tiny σ counted as underflow) so layers, snapshots
and runs compare bin by bin.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from glorot_core.instruments import lapack
from glorot_core.instruments.histogram import fixed_histogram
from glorot_core.models import MLP, Trace
from glorot_core.spec import JacobianSpec

Tensor = torch.Tensor

SV_DECADES = (-5, 2)
"""Histogram range of singular values: 10^-5 … 10^2 (log-spaced), under/overflow counted."""

DEFAULT_MAX_CHUNK_BYTES = 256 * 2**20
"""Per-chunk memory bound for the batched Grams / chain products (64 × 1000² float64 is 512 MB)."""

KW_FAILURE = 1e-3
"""Failure probability per example of the Kuczyński–Woźniakowski upper bound on λ_max."""

_SIGMAS = 3.0  # stochastic error bars: ± 3 standard errors of the probe mean
_ROUNDING_SLACK = 1e-10  # relative widening of the deterministic λ_max bounds for float64 rounding


def singular_value_edges(bins: int, device: torch.device | str = "cpu") -> Tensor:
    """Fixed log-spaced edges 10^-5 … 10^2 (``bins`` bins): Jacobian spectra span decades end to end."""
    lo, hi = SV_DECADES
    return torch.logspace(lo, hi, bins + 1, device=device, dtype=torch.float64)


# ----------------------------------------------------------------------------------------- helpers

def _as_trace(model: MLP, x_or_trace: Tensor | Trace, examples: int | None) -> Trace:
    """A Trace of the first ``examples`` rows (computed without autograd when given inputs)."""
    if isinstance(x_or_trace, Trace):
        tr = x_or_trace
    else:
        with torch.no_grad():
            x = x_or_trace if examples is None else x_or_trace[:examples]
            tr = model.trace(x)
    if examples is None:
        return Trace([s.detach() for s in tr.pre], [z.detach() for z in tr.post], tr.logits.detach())
    return Trace([s[:examples].detach() for s in tr.pre], [z[:examples].detach() for z in tr.post],
                 tr.logits[:examples].detach())


def _derivatives(model: MLP, trace: Trace, dtype: torch.dtype | None = None) -> list[Tensor]:
    """d_i = f'(s_i) for hidden layers i = 1..L (index i-1), optionally cast."""
    ds = [model.activation.derivative(s) for s in trace.pre]
    return ds if dtype is None else [d.to(dtype) for d in ds]


def _chunk_size(batch: int, per_example_bytes: int, max_bytes: int) -> int:
    return max(1, min(batch, max_bytes // max(per_example_bytes, 1)))


def _gram_svals(k: Tensor) -> Tensor:
    """σ = √max(λ, 0) of batched Grams ``k`` (destroyed), ascending (OpenBLAS/MKL syevd, cuSOLVER)."""
    return _batched_eigvalsh(k).clamp_min(0).sqrt()


def _batched_eigvalsh(k: Tensor) -> Tensor:
    """Eigenvalues of a batch of symmetric matrices; ``k`` is scratch (its storage may be overwritten).

    On the CPU, :func:`glorot_core.instruments.lapack.eigvalsh` (OpenBLAS ``?syevd``, one
    single-threaded solve per core, faster than ``torch.linalg.eigvalsh`` there, see
    benchmarks/README.md); elsewhere, or without that LAPACK, ``torch.linalg.eigvalsh`` (batched cuSOLVER on CUDA).
    """
    w = lapack.eigvalsh(k, overwrite=True)  # None off the CPU or without that LAPACK
    return w if w is not None else torch.linalg.eigvalsh(k)


def spectrum_summary(sv: Tensor, bins: int, floor_rel: float) -> dict[str, Any]:
    """Statistics of per-example singular values ``sv`` (B, k) as device tensors (see module doc);
    ``floor_rel``: the relative resolution of σ (:func:`sv_resolution`), reported as ``sv_floor``."""
    sv = sv.to(torch.float64)
    smax = sv.amax(dim=1)
    smin = sv.amin(dim=1)
    inf = torch.full_like(smax, math.inf)
    cond = torch.where(smin > 0, smax / torch.where(smin > 0, smin, torch.ones_like(smin)), inf)
    edges = singular_value_edges(bins, device=sv.device)
    return {
        "mean_sv": sv.mean(dim=1).mean(),
        "mean_sq_sv": sv.square().mean(dim=1).mean(),
        "max_sv": smax.max(),
        "min_sv": smin.min(),
        "condition_number": cond.max(),
        "sv_floor": floor_rel * smax.max(),
        "histogram": {"edges": edges, **fixed_histogram(sv, edges)},
        "examples": sv.shape[0],
        "mode": "exact",
    }


def sv_resolution(n: int, dtype: torch.dtype, chain_dtype: torch.dtype | None = None, depth: int = 0) -> float:
    """Relative resolution of σ from a Gram eigen-solve (√(N ε)) plus a chain product's rounding."""
    rel = math.sqrt(n * torch.finfo(dtype).eps)
    if chain_dtype is not None:
        rel += depth * math.sqrt(n) * torch.finfo(chain_dtype).eps
    return rel


# -------------------------------------------------------------------------------------- exact mode

def _layer_svals(weight: Tensor, d: Tensor, dtype: torch.dtype, max_bytes: int) -> Tensor:
    """Singular values (B, min(m, n)) of J_b = diag(d_b) W for W (m, n), d (B, m).

    m ≤ n: J Jᵀ = D G D = G ⊙ d dᵀ with G = W Wᵀ formed once (the Gram trick).
    m > n: JᵀJ = Wᵀ D² W, one batched matmul per chunk of examples.
    """
    m, n = weight.shape
    w = weight.detach().to(dtype)
    d = d.detach().to(dtype)
    k = min(m, n)
    chunk = _chunk_size(d.shape[0], (k * k + (0 if m <= n else m * n)) * w.element_size(), max_bytes)
    out = []
    if m <= n:
        g = w @ w.T
        lam = lapack.scaled_eigvalsh(g, d)  # None off the CPU or without that LAPACK
        if lam is not None:
            return lam.clamp_min(0).sqrt()
        for c in range(0, d.shape[0], chunk):
            dc = d[c:c + chunk]
            out.append(_gram_svals(g.mul(dc[:, :, None]).mul_(dc[:, None, :])))
    else:
        wt = w.T.contiguous()
        for c in range(0, d.shape[0], chunk):
            dc = d[c:c + chunk]
            out.append(_gram_svals((wt * dc.square()[:, None, :]) @ w))
    return torch.cat(out)


@torch.no_grad()
def layer_jacobian_spectra(
    model: MLP,
    trace: Trace | Tensor,
    examples: int | None = None,
    bins: int = 50,
    *,
    dtype: torch.dtype = torch.float64,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
) -> list[dict[str, Any]]:
    """Exact spectra of J^i = diag(f'(s_{i+1})) W_{i+1}ᵀ for i = 1..L-1 (list index 0 ↔ J^1).

    ``trace`` may be inputs x instead (a forward pass is run). ``examples`` keeps the first rows
    (None: all). Each dict: mean_sv, mean_sq_sv, max_sv, min_sv, condition_number, sv_floor,
    histogram {edges, counts, underflow, overflow, nonfinite}, examples, mode="exact".
    """
    tr = _as_trace(model, trace, examples)
    ds = _derivatives(model, tr)
    out = []
    for i in range(1, model.hidden_layers):
        weight = model.linears[i].weight
        sv = _layer_svals(weight, ds[i], dtype, max_chunk_bytes)
        out.append(spectrum_summary(sv, bins, sv_resolution(min(weight.shape), dtype)))
    return out


def _chain_jacobian(weights: list[Tensor], ds: list[Tensor]) -> Tensor:
    """Per-example J = D_L W_L ⋯ D_1 W_1 (B, n_L, n_0) by the cheaper of the two associations.

    Right to left costs Σ_{i≥2} n_i n_{i-1} n_0 per example, left to right Σ_{i<L} n_L n_i n_{i-1}.
    """
    widths = [weights[0].shape[1]] + [w.shape[0] for w in weights]
    L = len(weights)
    rl = sum(widths[i] * widths[i - 1] * widths[0] for i in range(2, L + 1))
    lr = sum(widths[L] * widths[i] * widths[i - 1] for i in range(1, L))
    if rl <= lr:
        m = ds[0][:, :, None] * weights[0]
        for w, d in zip(weights[1:], ds[1:], strict=True):
            m = torch.matmul(w, m).mul_(d[:, :, None])
        return m
    m = ds[-1][:, :, None] * weights[-1]
    for w, d in zip(reversed(weights[:-1]), reversed(ds[:-1]), strict=True):
        m = torch.matmul(m * d[:, None, :], w)
    return m


def _chain_eigvalsh_cpu(weights: list[Tensor], ds: list[Tensor], dtype: torch.dtype) -> Tensor | None:
    """Gram eigenvalues of the end-to-end J, one example at a time inside lapack's workers (CPU).

    Per example: the chain product (single-threaded torch), its smaller Gram by ``?syrk`` and the
    eigen-solve, all on cache-sized buffers and parallel over examples: faster than the batched chain +
    Gram (benchmarks/README.md), and no (B, n, n) batch in memory.
    None where lapack has no solver (the caller then runs the batched path).
    """
    k = min(weights[0].shape[1], weights[-1].shape[0])

    def matrix(b: int, scratch: Any) -> Any:
        j = _chain_jacobian(weights, [d[b:b + 1] for d in ds])[0].to(dtype)
        return lapack.gram_into(j.numpy(), scratch)

    return lapack.solve_each(ds[0].shape[0], k, dtype, matrix)


@torch.no_grad()
def end_to_end_spectrum(
    model: MLP,
    x: Tensor | Trace,
    bins: int = 50,
    *,
    examples: int | None = None,
    dtype: torch.dtype = torch.float64,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
) -> dict[str, Any]:
    """Exact spectrum of the input → last-hidden Jacobian J = D_L W_L ⋯ D_1 W_1 per example.

    The chain runs in the model's dtype, the Gram (smaller side) and eigen-solve in ``dtype``.
    Same keys as :func:`layer_jacobian_spectra`.
    """
    tr = _as_trace(model, x, examples)
    weights = [lin.weight.detach() for lin in model.linears[:-1]]
    ds = _derivatives(model, tr)
    n0, nl = weights[0].shape[1], weights[-1].shape[0]
    k = min(n0, nl)
    widest = max(w.shape[0] for w in weights)
    chain_dtype = weights[0].dtype
    per_ex = widest * max(n0, nl) * 2 * torch.finfo(chain_dtype).bits // 8 + k * k * torch.finfo(dtype).bits // 8
    chunk = _chunk_size(ds[0].shape[0], per_ex, max_chunk_bytes)
    lam = _chain_eigvalsh_cpu(weights, ds, dtype) if ds[0].device.type == "cpu" else None
    if lam is not None:
        sv = lam.clamp_min(0).sqrt()
    else:
        out = []
        for c in range(0, ds[0].shape[0], chunk):
            j = _chain_jacobian(weights, [d[c:c + chunk] for d in ds]).to(dtype)
            out.append(_gram_svals(j @ j.mT if nl <= n0 else j.mT @ j))
        sv = torch.cat(out)
    return spectrum_summary(sv, bins, sv_resolution(k, dtype, chain_dtype, len(weights)))


def operator_singular_values(op: JacobianOperator, dtype: torch.dtype = torch.float64, *,
                             max_bytes: int = DEFAULT_MAX_CHUNK_BYTES) -> Tensor:
    """Every singular value (B, op.dim), ascending, of each example's J, formed from its products.

    J is assembled from identity probes on its smaller side: rows Jᵀe_j (n_out ≤ n_in: n_out
    vector-Jacobian products) or columns J e_j (n_in < n_out: n_in Jacobian-vector products), a slice
    of probes at a time (``max_bytes``); then its smaller Gram (M Mᵀ, op.dim square) in ``dtype`` and
    the eigen-solve of exact mode. Used where J has no structure to exploit (an uploaded graph).
    """
    k = op.dim
    wide = max(op.n_in, op.n_out)
    per_probe = op.batch * wide * torch.finfo(dtype).bits // 8 * 4
    step = max(1, min(k, max_bytes // max(per_probe, 1)))
    apply = op.rmv if op.n_out <= op.n_in else op.mv
    eye = torch.eye(k, dtype=dtype, device=op.device)
    parts = [apply(eye[j:j + step].expand(op.batch, -1, -1)).to(dtype) for j in range(0, k, step)]
    m = torch.cat(parts, dim=1)  # (B, k, wide): J (rows) or Jᵀ (rows of Jᵀ)
    return _gram_svals(m @ m.mT)


# ----------------------------------------------------------------------------------- estimate mode

class JacobianOperator:
    """A batch of per-example Jacobians J_b (``n_out`` × ``n_in``, b < ``batch``) known only by products.

    Subclasses implement ``mv`` (J v for a (B, P, n_in) block of P probes per example → (B, P, n_out))
    and ``rmv`` (Jᵀ u, (B, P, n_out) → (B, P, n_in)); Lanczos, the quadratures, the bounds and the exact
    path by identity probes (:func:`operator_singular_values`) use nothing else. The MLP applies its
    layer structure (:class:`_ChainOperator`); an arbitrary graph applies torch.func's jvp / vjp
    (``glorot_core.uploads.jacobians``).
    """

    n_in: int
    n_out: int
    batch: int
    device: torch.device

    def mv(self, v: Tensor) -> Tensor:
        raise NotImplementedError

    def rmv(self, u: Tensor) -> Tensor:
        raise NotImplementedError

    @property
    def dim(self) -> int:
        """Size of the smaller Gram: the number of singular values per example, min(n_in, n_out)."""
        return min(self.n_in, self.n_out)

    def gram(self, v: Tensor) -> Tensor:
        """A v with A = JᵀJ (n_in ≤ n_out) or J Jᵀ: the smaller Gram, same nonzero spectrum."""
        return self.rmv(self.mv(v)) if self.n_in <= self.n_out else self.mv(self.rmv(v))


class _ChainOperator(JacobianOperator):
    """J = D_k W_k ⋯ D_1 W_1 applied matrix-free to (B, P, n) probe blocks (never formed)."""

    def __init__(self, weights: list[Tensor], ds: list[Tensor]) -> None:
        self.weights = weights
        self.ds = [d[:, None, :] for d in ds]
        self.n_in = weights[0].shape[1]
        self.n_out = weights[-1].shape[0]
        self.batch = ds[0].shape[0]
        self.device = ds[0].device

    def mv(self, v: Tensor) -> Tensor:
        """J v: forward-mode through the layers, v ↦ d ⊙ (v Wᵀ)."""
        for w, d in zip(self.weights, self.ds, strict=True):
            v = torch.matmul(v, w.T) * d
        return v

    def rmv(self, u: Tensor) -> Tensor:
        """Jᵀ u: reverse-mode through the layers, u ↦ (d ⊙ u) W."""
        for w, d in zip(reversed(self.weights), reversed(self.ds), strict=True):
            u = torch.matmul(u * d, w)
        return u


def _lanczos(op: JacobianOperator, v0: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """``steps`` Lanczos steps on op.gram from (B, P, N) start vectors, full reorthogonalisation.

    Returns alpha (B, P, k) and beta (B, P, k) (beta[..., j] couples q_j and q_{j+1}; the last one is
    the residual norm used by the Gauss–Radau rule). An invariant subspace (β below 1e-10 of the
    running ‖A‖ estimate) ends that vector's recurrence with zeros: its quadrature is then exact.
    """
    shape = v0.shape[:-1]
    q = v0 / v0.norm(dim=-1, keepdim=True)
    basis = v0.new_zeros(*shape, steps, v0.shape[-1])
    alpha = v0.new_zeros(*shape, steps)
    beta = v0.new_zeros(*shape, steps)
    q_prev = torch.zeros_like(q)
    b_prev = v0.new_zeros(shape)
    scale = v0.new_zeros(shape)
    for j in range(steps):
        basis[..., j, :] = q
        w = op.gram(q)
        a = (q * w).sum(-1)
        w = w - a[..., None] * q - b_prev[..., None] * q_prev
        qs = basis[..., : j + 1, :]
        for _ in range(2):  # twice is enough (Kahan–Parlett)
            w = w - torch.einsum("...kn,...k->...n", qs, torch.einsum("...kn,...n->...k", qs, w))
        b = w.norm(dim=-1)
        scale = torch.maximum(scale, torch.maximum(a.abs(), b))
        ok = b > 1e-10 * scale
        b = torch.where(ok, b, torch.zeros_like(b))
        q_prev, q = q, torch.where(ok[..., None], w / torch.where(ok, b, torch.ones_like(b))[..., None], 0.0)
        alpha[..., j] = a
        beta[..., j] = b
        b_prev = b
    return alpha, beta


def _tridiag(alpha: Tensor, off: Tensor) -> Tensor:
    return torch.diag_embed(alpha) + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)


def _mean_se(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean over (B, P) samples of per-example means and its standard error from within-example spread."""
    b, p = x.shape
    var = x.var(dim=1, correction=1)
    return x.mean(), (var.sum() / p).sqrt() / b


def _estimate(op: JacobianOperator, steps: int, probes: int, bins: int, generator: torch.Generator,
              dtype: torch.dtype) -> dict[str, Any]:
    """Estimates with error bounds for one (batched over examples) Jacobian operator."""
    return lanczos_statistics([lanczos_run(op, steps, probes, generator, dtype)], bins)


class LanczosRun:
    """What the statistics need of one operator's Lanczos runs: the tridiagonal coefficients ``alpha``,
    ``beta`` (B, P, k) and the probes' squared norms ``norm2`` (B, P), with the Gram's size ``n``.

    The Krylov bases are dropped once a run ends, so a large operator can run in chunks of examples
    (each its own :class:`JacobianOperator`) and be summarised at once (:func:`lanczos_statistics`).
    """

    def __init__(self, alpha: Tensor, beta: Tensor, norm2: Tensor, n: int) -> None:
        self.alpha, self.beta, self.norm2, self.n = alpha, beta, norm2, n

    def rows(self, count: int) -> LanczosRun:
        """The first ``count`` examples (drops padding rows)."""
        return LanczosRun(self.alpha[:count], self.beta[:count], self.norm2[:count], self.n)


def lanczos_run(op: JacobianOperator, steps: int, probes: int, generator: torch.Generator,
                dtype: torch.dtype = torch.float64) -> LanczosRun:
    """min(steps, op.dim) Lanczos steps on op's smaller Gram from ``probes`` Gaussian starts per example."""
    n = op.dim
    k = min(steps, n)
    v0 = torch.randn(op.batch, probes, n, generator=generator, device=op.device, dtype=dtype)
    norm2 = v0.square().sum(-1)  # ‖v‖² (Gaussian probes: E vᵀ f(A) v = tr f(A))
    alpha, beta = _lanczos(op, v0, k)
    return LanczosRun(alpha, beta, norm2, n)


def lanczos_statistics(runs: list[LanczosRun], bins: int, *, rounding: float = 0.0) -> dict[str, Any]:
    """The estimate mode's statistics and bounds (module docstring) over the examples of ``runs``.

    ``rounding``: relative error δ of the operator's products themselves (0 for the MLP's float64
    products). A perturbation of J by δ‖J‖ moves every σ by at most δσ_max (Weyl), so the bounds are
    widened by δ·σ_max (σ_max, mean σ) and (2δ + δ²)·σ_max² (mean σ²).
    """
    n = runs[0].n
    alpha = torch.cat([r.alpha for r in runs])
    beta = torch.cat([r.beta for r in runs])
    norm2 = torch.cat([r.norm2 for r in runs])
    batch, probes, k = alpha.shape
    device = alpha.device
    theta, s = torch.linalg.eigh(_tridiag(alpha, beta[..., :-1]))
    tau2 = s[..., 0, :].square()
    lam_scale = theta.abs().amax(-1, keepdim=True)
    theta_c = theta.clamp_min(0)

    # Hutchinson = the Gauss rule for f(x) = x, exact after one step: vᵀ A v = ‖v‖² α_1.
    msq, msq_se = _mean_se(norm2 * alpha[..., 0] / n)

    # SLQ of √: Gauss (upper bound) and Gauss–Radau with a node at 0 (lower bound), per probe.
    gauss = norm2 * (tau2 * theta_c.sqrt()).sum(-1) / n
    tiny = 1e-200 * lam_scale + 1e-300
    inv_kk = (s[..., -1, :].square() / torch.maximum(theta, tiny)).sum(-1)
    b_k = beta[..., -1]
    alpha_radau = torch.where(b_k > 0, b_k.square() * inv_kk, torch.zeros_like(b_k))
    t_radau = _tridiag(torch.cat([alpha, alpha_radau[..., None]], -1), beta)
    theta_r, s_r = torch.linalg.eigh(t_radau)
    radau = norm2 * (s_r[..., 0, :].square() * theta_r.clamp_min(0).sqrt()).sum(-1) / n
    radau = torch.minimum(radau, gauss)
    mid = (gauss + radau) / 2
    msv, msv_se = _mean_se(mid)
    msv_bound = ((gauss - radau) / 2).mean() + _SIGMAS * msv_se

    # λ_max: top Ritz value ≤ λ_max; upper bound from Kuczyński–Woźniakowski over the P probes, and the
    # residual β_k |s_k| of the top Ritz pair (conservative: the larger of the two).
    top = theta[..., -1]
    resid = b_k * s[..., -1, -1].abs()
    q_fail = KW_FAILURE ** (1.0 / probes)
    eps = (math.log(1.648 * math.sqrt(n) / q_fail) / (2 * k - 1)) ** 2
    lam_lo = top.amax(-1).clamp_min(0)
    kw = lam_lo / (1 - eps) if eps < 1 else torch.full_like(lam_lo, math.inf)
    lam_hi = torch.maximum(kw, (top + resid).amax(-1)) if k < n else lam_lo
    max_est = lam_lo.sqrt().max()
    max_lo = max_est * (1 - _ROUNDING_SLACK)  # a Ritz value can exceed λ_max by rounding only
    max_hi = lam_hi.sqrt().max() * (1 + _ROUNDING_SLACK)

    # Smallest Ritz value with non-negligible weight: an upper bound on λ_min only.
    live = tau2 > 1e-14
    lam_min = torch.where(live, theta_c, torch.full_like(theta_c, math.inf)).amin(-1).amin(-1)
    min_up = lam_min.sqrt()
    smax_b = lam_lo.sqrt()
    cond = torch.where(min_up > 0, smax_b / torch.where(min_up > 0, min_up, torch.ones_like(min_up)),
                       torch.full_like(smax_b, math.inf))

    # Histogram: SLQ density, i.e. estimated counts (n · τ² per Ritz node, averaged over probes).
    edges = singular_value_edges(bins, device=device)
    nodes = theta_c.sqrt().reshape(-1)
    weights = (tau2 * n / probes).reshape(-1)
    hist = _weighted_histogram(nodes, weights, edges)

    msq_bound = _SIGMAS * msq_se
    if rounding:
        widen = rounding * max_hi
        max_lo, max_hi = max_lo - widen, max_hi + widen
        msv_bound = msv_bound + widen
        msq_bound = msq_bound + (2 * rounding + rounding**2) * max_hi.square()
    return {
        "mean_sv": msv,
        "mean_sq_sv": msq,
        "max_sv": max_est,
        "min_sv": min_up.min(),
        "condition_number": cond.max(),
        "histogram": {"edges": edges, **hist},
        "examples": batch,
        "mode": "estimate",
        "iterations": k,
        "probes": probes,
        "mean_sv_bound": msv_bound,
        "mean_sv_lower": msv - msv_bound,
        "mean_sv_upper": msv + msv_bound,
        "mean_sq_sv_bound": msq_bound,
        "mean_sq_sv_lower": msq - msq_bound,
        "mean_sq_sv_upper": msq + msq_bound,
        "max_sv_bound": torch.maximum(max_hi - max_est, max_est - max_lo),
        "max_sv_lower": max_lo,
        "max_sv_upper": max_hi,
    }


def _weighted_histogram(values: Tensor, weights: Tensor, edges: Tensor) -> dict[str, Tensor]:
    """Like ``fixed_histogram`` but with float weights (estimated counts)."""
    k = edges.numel() - 1
    finite = torch.isfinite(values)
    idx = torch.bucketize(values, edges, right=True) - 1
    idx = torch.where(values == edges[-1], torch.full_like(idx, k - 1), idx)
    under = finite & (idx < 0)
    over = finite & (idx >= k)
    inside = finite & ~under & ~over
    counts = torch.zeros(k + 1, dtype=weights.dtype, device=values.device)
    counts.index_add_(0, torch.where(inside, idx, torch.full_like(idx, k)), torch.where(inside, weights, 0.0))
    zero = weights.new_zeros(())
    return {
        "counts": counts[:k],
        "underflow": torch.where(under, weights, zero).sum(),
        "overflow": torch.where(over, weights, zero).sum(),
        "nonfinite": torch.where(finite, zero, weights).sum(),
    }


@torch.no_grad()
def estimate_layer_spectra(
    model: MLP,
    trace: Trace | Tensor,
    examples: int | None = None,
    bins: int = 50,
    *,
    iterations: int = 32,
    probes: int = 4,
    seed: int = 0,
    end_to_end: bool = False,
    dtype: torch.dtype = torch.float64,
) -> dict[str, Any]:
    """Matrix-free estimates for J^1..J^{L-1} (and end to end) with honest error bounds.

    Returns {"layers": [...], "end_to_end": dict | None}. Each dict has the exact mode's keys (min_sv
    is only an upper bound, condition_number only a lower bound, the histogram holds estimated float
    counts from the SLQ density) plus ``<q>_bound``, ``<q>_lower``, ``<q>_upper`` for q in mean_sv,
    mean_sq_sv, max_sv, ``iterations`` and ``probes``. ``probes`` ≥ 2 (the standard errors need it).
    """
    if probes < 2:
        raise ValueError("estimate mode needs at least 2 probes per example for its error bounds")
    tr = _as_trace(model, trace, examples)
    ds = _derivatives(model, tr, dtype)
    weights = [lin.weight.detach().to(dtype) for lin in model.linears[:-1]]
    gen = torch.Generator(device=ds[0].device).manual_seed(seed)
    layers = [_estimate(_ChainOperator([weights[i]], [ds[i]]), iterations, probes, bins, gen, dtype)
              for i in range(1, model.hidden_layers)]
    e2e = _estimate(_ChainOperator(weights, ds), iterations, probes, bins, gen, dtype) if end_to_end else None
    return {"layers": layers, "end_to_end": e2e}


# ------------------------------------------------------------------------------------- front door

def jacobian_spectra(
    model: MLP,
    x_or_trace: Tensor | Trace,
    spec: JacobianSpec,
    bins: int = 50,
    *,
    dtype: torch.dtype | None = None,
    probes: int = 4,
    seed: int = 0,
) -> dict[str, Any]:
    """All Jacobian spectra a ``JacobianSpec`` asks for: {"layers": [J^1..J^{L-1}], "end_to_end": … | None}.

    ``x_or_trace``: inputs (a forward pass is run) or a ``Trace`` the caller already has (the
    snapshot's). The first ``spec.examples`` examples are used. ``mode="off"`` returns no layers and no
    end-to-end. ``dtype`` of the Grams and eigen-solves: default from ``spec.precision``.
    """
    if dtype is None:
        dtype = torch.float64 if spec.precision == "float64" else torch.float32
    source = x_or_trace
    if spec.mode == "off":
        return {"layers": [], "end_to_end": None}
    tr = _as_trace(model, source, spec.examples)
    if spec.mode == "estimate":
        return estimate_layer_spectra(model, tr, None, bins, iterations=spec.estimate_iterations,
                                      probes=probes, seed=seed, end_to_end=spec.end_to_end)
    layers = layer_jacobian_spectra(model, tr, None, bins, dtype=dtype)
    e2e = end_to_end_spectrum(model, tr, bins, dtype=dtype) if spec.end_to_end else None
    return {"layers": layers, "end_to_end": e2e}
