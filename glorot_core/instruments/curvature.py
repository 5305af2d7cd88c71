"""Section ``curvature`` (whole network): the top eigenvalue λ_max of the Hessian of the cost on the
monitor set, and the learning-rate bound it implies.

Why: for gradient descent on a quadratic cost C(θ) = ½ θᵀHθ, a step θ ← θ − ε∇C multiplies the
component of θ along an eigenvector of H with eigenvalue λ by (1 − ελ); it shrinks only while
|1 − ελ| < 1, i.e. ε < 2/λ. Near any point the cost is quadratic to second order, so ε < 2/λ_max is the
learning rate above which (full-batch) SGD is unstable along the sharpest direction. With heavy-ball
momentum μ the bound is 2(1 + μ)/λ_max (the verdicts use it). A mini-batch's Hessian differs from the
monitor set's, and the cost is quadratic only locally: the bound is a guide, not a guarantee.

How: Lanczos on Hessian-vector products, never forming H (its size is the parameter count squared).
H v is Pearlmutter's R-operator by double backward: the gradient g(θ) of the mean monitor cost is built
once with ``create_graph=True``; each product is then ``autograd.grad(g, θ, grad_outputs=v)`` =
∂(gᵀv)/∂θ. The Lanczos recurrence keeps three vectors only (no stored basis, no reorthogonalisation:
the Hessian's dimension is the parameter count, 5·10⁶ for the paper's network, so a stored basis would
cost ``iterations`` copies of the parameters). Without reorthogonalisation Lanczos may produce
duplicate ("ghost") copies of converged Ritz values, which does not move the top one; by Paige's
analysis a Ritz value θ whose residual estimate r = β_k·|s_k| (β_k the last off-diagonal, s_k the last
entry of θ's eigenvector of the tridiagonal matrix) is small lies within ≈ r of an eigenvalue of H.
A Ritz value is a Rayleigh quotient, so θ ≤ λ_max: 2/θ is an upper estimate of the bound 2/λ_max when
θ has converged to the top eigenvalue (small r), and ``learning_rate_max_conservative`` = 2/(θ + r)
covers the residual.

The start vector is Gaussian from a fixed seed (drawn on the CPU, so every device starts alike). An
invariant subspace (β below 10⁻¹⁰ of the running ‖H‖ estimate) ends the recurrence with zeros; its
Ritz values are then exact. Everything stays on the device (no host synchronisation); the snapshot
copies the results with the other instruments'.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from glorot_core.instruments.base import Instrument, Readings, SnapshotCapture
from glorot_core.instruments.monitor import Monitor

Tensor = torch.Tensor

CURVATURE_SCALARS = ("lambda_max", "residual", "learning_rate_max")

AUTO_MAX_PARAMETERS = 1_000_000
"""``diagnostics.curvature.mode = "auto"`` measures a built-in network at init only up to this many
parameters: the paper's 5×1000 network (5·10⁶) takes 16 Hessian-vector products of ≈0.3–1 s each on
128 examples on a 2-core CPU, several times the rest of its snapshot. Uploaded models are always measured."""


def hessian_vector_product(cost: Tensor, params: Sequence[Tensor]) -> Callable[[Tensor], Tensor]:
    """v ↦ H v for the Hessian H of the scalar ``cost`` w.r.t. ``params`` (flattened, concatenated).

    The gradient is built once with ``create_graph=True``; each product is one more backward pass
    through it (double backward). The parameters' ``.grad`` fields are not touched."""
    grads = torch.autograd.grad(cost, list(params), create_graph=True)
    flat_g = torch.cat([g.reshape(-1) for g in grads])
    sizes = [p.numel() for p in params]

    def hvp(v: Tensor) -> Tensor:
        hv = torch.autograd.grad(flat_g, list(params), grad_outputs=v.to(flat_g.dtype), retain_graph=True,
                                 allow_unused=True)
        parts = [torch.zeros(n, dtype=flat_g.dtype, device=flat_g.device) if h is None else h.reshape(-1)
                 for h, n in zip(hv, sizes, strict=True)]
        return torch.cat(parts)

    return hvp


def lanczos_top_eigenvalue(matvec: Callable[[Tensor], Tensor], dim: int, *, iterations: int, seed: int,
                           device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
    """Top eigenvalue of the symmetric operator ``matvec`` on R^dim by ``iterations`` Lanczos steps.

    Returns device tensors: ``lambda_max`` (the top Ritz value θ), ``residual`` (β_k·|s_k|, module
    docstring), ``lambda_min_ritz`` (the bottom Ritz value: negative curvature shows there) and
    ``iterations`` (steps taken before an invariant subspace, if one was reached).
    """
    start = torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    q = (start / start.norm()).to(device=device, dtype=dtype)
    q_prev = torch.zeros_like(q)
    alpha = torch.zeros(iterations, dtype=torch.float64, device=device)
    beta = torch.zeros(iterations, dtype=torch.float64, device=device)
    b_prev = torch.zeros((), dtype=torch.float64, device=device)
    scale = torch.zeros((), dtype=torch.float64, device=device)
    alive = torch.ones((), dtype=torch.bool, device=device)
    steps = torch.zeros((), dtype=torch.int64, device=device)
    for j in range(iterations):
        w = matvec(q)
        a = torch.dot(q.double(), w.double())
        w = w - a.to(dtype) * q - b_prev.to(dtype) * q_prev
        b = w.double().norm()
        scale = torch.maximum(scale, torch.maximum(a.abs(), b))
        a = torch.where(alive, a, torch.zeros_like(a))
        steps = steps + alive.long()
        alive = alive & (b > 1e-10 * scale)
        b = torch.where(alive, b, torch.zeros_like(b))
        q_prev, q = q, torch.where(alive, w / torch.where(alive, b, torch.ones_like(b)).to(dtype), 0.0)
        alpha[j], beta[j] = a, b
        b_prev = b
    t = torch.diag(alpha) + torch.diag(beta[:-1], 1) + torch.diag(beta[:-1], -1)
    evals, evecs = torch.linalg.eigh(t)
    return {"lambda_max": evals[-1], "residual": beta[-1] * evecs[-1, -1].abs(), "lambda_min_ritz": evals[0],
            "iterations": steps}


def top_hessian_eigenvalue(cost: Callable[[], Tensor], params: Sequence[Tensor], *, iterations: int,
                           seed: int) -> dict[str, Tensor]:
    """λ_max of the Hessian of ``cost()`` (a scalar, e.g. the mean monitor cost) w.r.t. ``params``, with its
    residual and the plain-SGD learning-rate bound 2/λ_max (None-valued where λ_max ≤ 0: no bound).

    Device tensors, except ``parameters`` (a count)."""
    params = [p for p in params if p.requires_grad]
    with torch.enable_grad():
        c = cost()
        hvp = hessian_vector_product(c, params)
        dim = sum(p.numel() for p in params)
        out: dict[str, Any] = lanczos_top_eigenvalue(hvp, dim, iterations=iterations, seed=seed,
                                                     device=c.device, dtype=params[0].dtype)
    lam, res = out["lambda_max"], out["residual"]
    positive = lam > 0
    nan = torch.full_like(lam, float("nan"))
    out["learning_rate_max"] = torch.where(positive, 2.0 / torch.where(positive, lam, torch.ones_like(lam)), nan)
    upper = lam + res
    out["learning_rate_max_conservative"] = torch.where(
        upper > 0, 2.0 / torch.where(upper > 0, upper, torch.ones_like(upper)), nan)
    out["cost"] = c.detach().double()
    out["parameters"] = dim
    return out


class Curvature(Instrument):
    """λ_max of the Hessian of the mean monitor cost and the learning-rate bound (module docstring).

    Whole-network: its block is the snapshot's ``curvature``; layer entries carry ``curvature: null``.
    Runs at snapshot 0 (``diagnostics.curvature.mode`` "init"; "auto", the default, does so for uploaded
    models, ``network["uploaded"]``, and built-in networks up to AUTO_MAX_PARAMETERS) and also at the last
    snapshot with "init_and_last"; never at the snapshots in between (one λ_max costs
    ≈ ``iterations`` × three passes over ``examples`` examples). Snapshots may hand it the cost to
    differentiate (``network["cost"]``: an uploaded model's own cost); otherwise it is the monitor's
    cost of the model's logits on the first ``examples`` monitor examples.
    """

    section = "curvature"
    scalars = ()
    network_section = "curvature"
    network_scalars = CURVATURE_SCALARS

    def due(self, snap: SnapshotCapture, monitor: Monitor) -> bool:
        spec = monitor.curvature
        if spec is None or spec.mode == "off" or "model" not in snap.network:
            return False
        if not (snap.index == 0 or (snap.final and spec.mode == "init_and_last")):
            return False  # before counting parameters: most snapshots end here
        return not (spec.mode == "auto" and not snap.network.get("uploaded") and
                    sum(p.numel() for p in snap.network["model"].parameters()) > AUTO_MAX_PARAMETERS)

    def measure(self, snap: SnapshotCapture, monitor: Monitor) -> Readings:
        spec = monitor.curvature
        model = snap.network["model"]
        n = min(spec.examples, monitor.x.shape[0])
        cost = snap.network.get("cost")
        if cost is None:
            x, y = monitor.x[:n], monitor.y[:n]

            def cost() -> Tensor:
                return monitor.loss(model(x), y)
        try:
            result = top_hessian_eigenvalue(cost, list(model.parameters()), iterations=spec.iterations,
                                            seed=spec.seed)
        except (RuntimeError, NotImplementedError) as e:  # an op without a second derivative (uploaded graphs)
            first = str(e).strip().splitlines()
            return Readings([None] * len(snap.points), {"unavailable": first[0][:300] if first else type(e).__name__})
        result["examples"] = n
        return Readings([None] * len(snap.points), result)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "every": None,
                "when": "snapshot 0 (and the last with mode init_and_last); mode auto: uploaded models and "
                        f"built-in networks up to {AUTO_MAX_PARAMETERS:,} parameters"}
