"""Jacobian spectra of the paper's 5×1000 tanh MLP: exact mode vs a naive baseline and the eigvalsh floor.

Network: tanh 1024-1000×5-9, standard init (eq. 1), Shapeset-3x2 inputs in [-1, 1]. Measured over
``--examples`` examples: the per-layer spectra J^1..J^4 (1000×1000) and the end-to-end spectrum
(1000×1024).

* exact (this library): Gram trick, chain products, and on the CPU OpenBLAS ``?syevd`` one single-threaded
  solve per core (``glorot_core.instruments.lapack``; ``torch.linalg.eigvalsh`` elsewhere), float32 (the
  run default) and float64.
* naive: per example, ``torch.autograd.functional.jacobian`` of z_i ↦ f(W z_i + b) and of
  x ↦ z_L, then ``torch.linalg.svdvals`` of each (the model's float32). Its per-example cost is
  constant, so it is timed on ``--naive-examples`` examples and scaled linearly (said in the output).
* floor: ``torch.linalg.eigvalsh`` alone on precomputed Gram matrices of the same sizes (4 layer
  Grams + 1 end-to-end Gram per example) in the same dtype; timed on a subset and scaled. For context
  also the floor of the solver exact mode uses on the CPU (``lapack.eigvalsh`` on the same Grams).
* estimate mode: Lanczos/Hutchinson/SLQ (32 steps, 4 probes), its time and its error vs exact.

Usage: ``.venv/bin/python benchmarks/bench_jacobian.py [--examples 64] [--repeats 2] [--quick]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from glorot_core.instruments import jacobian as jac
from glorot_core.instruments import lapack
from glorot_core.models import MLP, build_mlp
from glorot_core.spec import ModelSpec


def _inputs(n: int) -> tuple[torch.Tensor, str]:
    try:
        from glorot_core.data.shapeset import generate
    except ImportError:  # stand-in of the same variance as Shapeset in [-1, 1]
        return torch.rand(n, 1024, generator=torch.Generator().manual_seed(0)) * 2 - 1, "uniform[-1,1]"
    return generate(n, seed=0)[0], "shapeset3x2"


def _best(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _exact(model: MLP, trace, dtype: torch.dtype) -> list[dict]:
    return [*jac.layer_jacobian_spectra(model, trace, dtype=dtype), jac.end_to_end_spectrum(model, trace, dtype=dtype)]


def _naive(model: MLP, x: torch.Tensor, trace) -> list[torch.Tensor]:
    """Per-example autograd Jacobians + svdvals; returns the mean σ of J^1..J^4 and end to end."""
    f = model.activation.fn
    sums = torch.zeros(model.hidden_layers, dtype=torch.float64)
    for b in range(x.shape[0]):
        for i in range(1, model.hidden_layers):
            lin = model.linears[i]
            j = torch.autograd.functional.jacobian(lambda z, lin=lin: f(lin(z)), trace.post[i - 1][b])
            sums[i - 1] += torch.linalg.svdvals(j).double().mean()

        def e2e(v: torch.Tensor) -> torch.Tensor:
            for lin in model.linears[:-1]:
                v = f(lin(v))
            return v

        sums[-1] += torch.linalg.svdvals(torch.autograd.functional.jacobian(e2e, x[b])).double().mean()
    return list(sums / x.shape[0])


def _floor_grams(model: MLP, trace, n: int, dtype: torch.dtype) -> list[torch.Tensor]:
    ds = jac._derivatives(model, trace, dtype)
    grams = []
    for i in range(1, model.hidden_layers):
        w = model.linears[i].weight.detach().to(dtype)
        g = w @ w.T
        grams.append(g * ds[i][:n, :, None] * ds[i][:n, None, :])
    j = jac._chain_jacobian([lin.weight.detach() for lin in model.linears[:-1]],
                            [d[:n].to(torch.float32) for d in jac._derivatives(model, trace)]).to(dtype)
    grams.append(j @ j.mT)
    return grams


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--naive-examples", type=int, default=4, help="naive baseline subset (scaled per example)")
    ap.add_argument("--floor-examples", type=int, default=16, help="eigvalsh-floor subset (scaled per example)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 4 examples, 1 repeat, 1 naive example")
    a = ap.parse_args()
    if a.quick:
        a.examples, a.repeats, a.naive_examples, a.floor_examples = 4, 1, 1, 4
    n = a.examples
    torch.manual_seed(0)
    model, _ = build_mlp(ModelSpec(init="standard"), seed=0)
    x, source = _inputs(n)
    with torch.no_grad():
        trace = model.trace(x)
    print(f"tanh 1024-1000x5-9 standard init, {n} examples ({source}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, CPU, CPU eigen-solver: "
          f"{'OpenBLAS ?syevd (lapack.py)' if lapack.available() else 'torch.linalg.eigvalsh'}")

    rows = []
    t64, ex64 = _best(lambda: _exact(model, trace, torch.float64), a.repeats)
    t32, ex32 = _best(lambda: _exact(model, trace, torch.float32), a.repeats)
    rows += [("exact float32 (default: jacobian.precision)", t32), ("exact float64", t64)]

    floors = {}
    for dt in (torch.float64, torch.float32):
        m = min(a.floor_examples, n)
        grams = _floor_grams(model, trace, m, dt)
        tf, _ = _best(lambda grams=grams: [torch.linalg.eigvalsh(g) for g in grams], a.repeats)
        floors[dt] = tf * n / m
        rows.append((f"eigvalsh floor {str(dt)[6:]} (timed on {m}, scaled)", floors[dt]))
        if lapack.available():
            tl, _ = _best(lambda grams=grams: [lapack.eigvalsh(g) for g in grams], a.repeats)
            rows.append((f"  lapack.eigvalsh floor {str(dt)[6:]} (context)", tl * n / m))

    k = min(a.naive_examples, n)
    tn, naive_means = _best(lambda: _naive(model, x[:k], trace), a.repeats)  # best-of, like the others
    t_naive = tn * n / k
    rows.append((f"naive autograd+svdvals (timed on {k}, scaled)", t_naive))

    te, est = _best(lambda: jac.estimate_layer_spectra(model, trace, iterations=32, probes=4, end_to_end=True),
                    a.repeats)
    rows.append(("estimate (32 Lanczos steps, 4 probes)", te))

    print(f"\n{'method':48s} {'seconds':>9s} {'ms/example':>11s}")
    for name, t in rows:
        print(f"{name:48s} {t:9.2f} {1000 * t / n:11.1f}")

    sub = _exact(model, type(trace)([s[:k] for s in trace.pre], [z[:k] for z in trace.post], trace.logits[:k]),
                 torch.float64)
    names = [f"J^{i}" for i in range(1, model.hidden_layers)] + ["end-to-end"]
    print(f"\n{'jacobian':11s} {'mean_sv f64':>12s} {'f32 rel':>9s} {'naive rel':>10s} {'est mean_sv':>12s} "
          f"{'err':>8s} {'bound':>8s} {'est msq err':>12s} {'est max err':>12s}")
    worst_naive = 0.0
    est_all = [*est["layers"], est["end_to_end"]]
    for name, e64, e32, s, nv, es in zip(names, ex64, ex32, sub, naive_means, est_all, strict=True):
        rel32 = abs(float(e32["mean_sv"]) / float(e64["mean_sv"]) - 1)
        reln = abs(float(nv) / float(s["mean_sv"]) - 1)
        worst_naive = max(worst_naive, reln)
        err = float(es["mean_sv"]) - float(e64["mean_sv"])
        print(f"{name:11s} {float(e64['mean_sv']):12.6f} {rel32:9.1e} {reln:10.1e} {float(es['mean_sv']):12.6f} "
              f"{err / float(e64['mean_sv']):+8.2%} {float(es['mean_sv_bound']) / float(e64['mean_sv']):8.2%} "
              f"{float(es['mean_sq_sv']) / float(e64['mean_sq_sv']) - 1:+12.2%} "
              f"{float(es['max_sv']) / float(e64['max_sv']) - 1:+12.2%}")

    print(f"\nnaive vs exact mean_sv: max relative difference {worst_naive:.1e} (target <= 1e-4)")
    print(f"speedup_vs_naive_float64: {t_naive / t64:.1f}x")
    print(f"ratio_vs_eigvalsh_floor_float64: {t64 / floors[torch.float64]:.2f}x")
    print(f"naive_vs_floor: {t_naive / floors[torch.float32]:.1f}x (vs the float32 torch.linalg.eigvalsh floor)")
    print(f"estimate_speedup_vs_exact: {t32 / te:.1f}x (vs exact float32)")
    print(f"ratio_vs_eigvalsh_floor: {t32 / floors[torch.float32]:.2f}x (float32, the default; target <= 2)")
    print(f"speedup_vs_naive: {t_naive / t32:.1f}x (float32, the default; target >= 7)")


if __name__ == "__main__":
    main()
