"""Cost of ``diagnostics.gradient_basis``: ms per snapshot with the weight gradients of the mean cost
against every example's own (the paper's basis), on the paper's tanh 1024-1000×5-9 network and 300
Shapeset-3x2 monitor examples, standard init.

Prints, for each basis (alternating, after warm-up rounds; median and minimum of ``--repeats``):

* ``snapshot_ms``: one regular snapshot as a run takes it (forward, backward, every registered
  instrument due at a regular snapshot, Jacobian off, one copy to the host, the report entry);
* ``weight_grad_ms``: the weight-gradient section alone for the five hidden layers and the output
  layer, synchronised: the mean cost's GEMM (∂C/∂s)ᵀ z / N and its summary over J·K entries, against
  the per-example closed-form moments (O(N·(J+K))) and the octave histogram of 2^20 sampled products.

Run: ``.venv/bin/python benchmarks/bench_gradient_basis.py [--repeats 20] [--device cpu]``.
The machine must be quiet: other processes only add time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from glorot_core.activations import get_activation
from glorot_core.allocator import keep_freed_memory
from glorot_core.data.shapeset import generate
from glorot_core.instruments.gradients import WeightGradient, weight_grad_stats
from glorot_core.instruments.host import to_host
from glorot_core.instruments.snapshot import Monitor, capture_mlp, measure
from glorot_core.losses import cross_entropy
from glorot_core.models import build_mlp
from glorot_core.report import snapshot_entry
from glorot_core.spec import JacobianSpec, ModelSpec

BASES = ("mean_cost", "per_example")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def snapshot_s(model: torch.nn.Module, mon: Monitor) -> float:
    """Seconds for one regular snapshot (index 1: no effective rank), host copy and report entry included."""
    t0 = time.perf_counter()
    host = to_host({"m": measure(model, mon, index=1)})
    snapshot_entry(host["m"], step=0, examples_seen=0, test_error=None, train_loss=None, elapsed_s=0.0)
    return time.perf_counter() - t0


def weight_grad_s(model: torch.nn.Module, mon: Monitor) -> float:
    """Seconds for the weight-gradient section of every layer (hidden and output) on ``mon``'s basis,
    from an existing capture (the forward/backward pass is not counted)."""
    snap, _ = capture_mlp(model, mon, index=1)
    inst = WeightGradient()
    out_g = snap.network["trace"].logits  # shapes only; the output layer's ∂C/∂s is re-derived below
    g_logits = torch.softmax(out_g, -1) - torch.nn.functional.one_hot(mon.y, out_g.shape[-1]).to(out_g.dtype)
    z_last = snap.network["trace"].post[-1]
    device = mon.x.device
    _sync(device)
    t0 = time.perf_counter()
    tree = [inst.measure_point(c, mon) for c in snap.points]
    tree.append(weight_grad_stats(g_logits, z_last, mon.gradient_bins, mon.gradient_basis))
    to_host(tree)  # the section's tensors reach the host: the work is done
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.manual_seed(0)
    keep_freed_memory()  # as run_experiment does
    device = torch.device(args.device)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}")
    xm, ym = generate(300, seed=1)
    xm, ym = xm.to(device), ym.to(device)
    model, _ = build_mlp(ModelSpec())
    model.to(device)
    mons = {b: Monitor(xm, ym, get_activation("tanh"), cross_entropy, JacobianSpec(mode="off"), 200, b) for b in BASES}
    snaps: dict[str, list[float]] = {b: [] for b in BASES}
    wgs: dict[str, list[float]] = {b: [] for b in BASES}
    for r in range(args.repeats + 2):
        for b in BASES:
            s, w = snapshot_s(model, mons[b]), weight_grad_s(model, mons[b])
            if r >= 2:  # two warm-up rounds (the per-example sample's indices are drawn in the first)
                snaps[b].append(s)
                wgs[b].append(w)
    for b in BASES:
        print(f"{b:12s} snapshot_ms median {statistics.median(snaps[b]) * 1e3:7.1f} min {min(snaps[b]) * 1e3:7.1f}"
              f" | weight_grad_ms median {statistics.median(wgs[b]) * 1e3:6.1f} min {min(wgs[b]) * 1e3:6.1f}")
    extra = statistics.median(snaps["per_example"]) - statistics.median(snaps["mean_cost"])
    print(f"per_example - mean_cost per snapshot: {extra * 1e3:+.1f} ms (median)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
