"""Instrument overhead: glorot's training loop with every instrument but the Jacobian, a snapshot every
500 updates, against the same plain PyTorch loop, in the same process, alternating runs.

Model: tanh 1024-1000×5-9, standard init, SGD batch 10 (the paper's setup). Both loops read the same
pre-generated Shapeset-3x2 batches, so data generation is not part of either side. Prints:

* the load average before and after (the machine must be quiet: other processes only add time);
* ``snapshot_ms``: one snapshot of the 300 monitor examples (forward, backward, every registered
  instrument due at a regular snapshot, one copy to the host, the report entry), Jacobian off, the
  spec's default histogram bins, median of ``--snapshot-repeats`` (target ≤ 60 ms; on a host of
  another speed, ``bench_snapshot_vs_issue.py`` gives the figure that carries over); also the
  snapshots that add the effective rank (its schedule: the first, every 4th and the last snapshot);
* ``overhead_ratio``: instrumented / plain wall time, the median over repeats of each instrumented
  run against the plain run just before it, target ≤ 1.03; with every pair's ratio, the ratio of the
  medians, the ratio of the fastest repeats and the snapshots' own share of the plain loop;
* optionally (``--with-test``) the same with the test-error evaluation a run also does at each
  snapshot, against a plain loop evaluating the same test set at the same steps;
* optionally (``--jacobian``) the exact Jacobian's extra cost per snapshot (16 examples).

Run: ``.venv/bin/python benchmarks/bench_instruments.py [--steps 2000] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from glorot_core.activations import get_activation
from glorot_core.allocator import keep_freed_memory
from glorot_core.data.shapeset import generate
from glorot_core.instruments.host import to_host
from glorot_core.instruments.snapshot import Monitor, error_rate, measure
from glorot_core.losses import cross_entropy
from glorot_core.models import MLP, build_mlp
from glorot_core.report import snapshot_entry
from glorot_core.spec import DiagnosticsSpec, JacobianSpec, ModelSpec, TrainSpec
from glorot_core.training import train

EVERY = 500
BINS = DiagnosticsSpec().histogram_bins
"""The activation histograms' bins a run uses by default (the spec's ``diagnostics.histogram_bins``)."""
Test = tuple[torch.Tensor, torch.Tensor] | None


def plain(steps: int, xs: torch.Tensor, ys: torch.Tensor, test: Test) -> float:
    """The plain PyTorch loop: forward, cost, zero_grad, backward, step (+ optional test evaluation)."""
    model, _ = build_mlp(ModelSpec())
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    t = time.perf_counter()
    if test is not None:
        float(error_rate(model, *test))
    for i in range(steps):
        loss = F.cross_entropy(model(xs[i]), ys[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if test is not None and (i + 1) % EVERY == 0:
            float(error_rate(model, *test))
    return time.perf_counter() - t


def snapshotter(model: MLP, mon: Monitor, test: Test, steps: int, times: list[tuple[int, float]]) -> Callable:
    """The snapshot a run takes (runner.py's, minus JSON and streaming), timing each one."""
    def snapshot(step: int, train_loss: float | None) -> dict:
        t0 = time.perf_counter()
        index = len(times)
        tree = {"m": measure(model, mon, index=index, final=step == steps), "train_loss": train_loss}
        if test is not None:
            tree["test_error"] = error_rate(model, *test)
        host = to_host(tree)
        entry = snapshot_entry(host["m"], step=step, examples_seen=step * 10, test_error=host.get("test_error"),
                               train_loss=host["train_loss"], elapsed_s=0.0)
        times.append((index, time.perf_counter() - t0))
        return entry
    return snapshot


def instrumented(steps: int, xs: torch.Tensor, ys: torch.Tensor, mon_xy: tuple, test: Test,
                 jacobian: str = "off") -> tuple[float, list[tuple[int, float]]]:
    """glorot's ``train`` with the snapshot a run takes (Jacobian off unless asked); returns the wall
    time and (snapshot index, seconds) of each snapshot."""
    model, _ = build_mlp(ModelSpec())
    mon = Monitor(*mon_xy, get_activation("tanh"), cross_entropy, JacobianSpec(mode=jacobian), BINS)
    flat_x, flat_y = xs.reshape(-1, xs.shape[-1]), ys.reshape(-1)
    pos = [0]
    times: list[tuple[int, float]] = []

    def next_batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = pos[0] % flat_x.shape[0]
        pos[0] += n
        idx = torch.arange(k, k + n) % flat_x.shape[0]
        return flat_x[idx], flat_y[idx]

    t = time.perf_counter()
    train(model, next_batch, TrainSpec(steps=steps, lr=0.01), cross_entropy, every=EVERY,
          snapshot=snapshotter(model, mon, test, steps, times))
    return time.perf_counter() - t, times


def snapshot_times(mon_xy: tuple, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds per regular snapshot (index 1: no effective rank) and per snapshot with the effective rank."""
    model, _ = build_mlp(ModelSpec())
    mon = Monitor(*mon_xy, get_activation("tanh"), cross_entropy, JacobianSpec(mode="off"), BINS)
    regular: list[float] = []
    ranked: list[float] = []
    for r in range(repeats + 2):
        for index, out in ((1, regular), (0, ranked)):
            t0 = time.perf_counter()
            host = to_host({"m": measure(model, mon, index=index)})
            snapshot_entry(host["m"], step=0, examples_seen=0, test_error=None, train_loss=None, elapsed_s=0.0)
            if r >= 2:  # two warm-up rounds
                out.append(time.perf_counter() - t0)
    return regular, ranked


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--snapshot-repeats", type=int, default=20)
    ap.add_argument("--test-examples", type=int, default=2000)
    ap.add_argument("--with-test", action="store_true", help="also time both loops with test evaluation")
    ap.add_argument("--jacobian", action="store_true", help="also time the exact Jacobian per snapshot")
    args = ap.parse_args()
    torch.manual_seed(0)
    tuned = keep_freed_memory()  # as run_experiment does; both loops below run with it
    print(f"glibc keeps freed memory for reuse: {tuned}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    x, y = generate(args.steps * 10, seed=0)
    xs, ys = x.view(args.steps, 10, -1), y.view(args.steps, 10)
    xm, ym = generate(300 + args.test_examples, seed=1)
    mon_xy, test = (xm[:300], ym[:300]), (xm[300:], ym[300:])
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, steps {args.steps}, snapshot every {EVERY}")

    regular, ranked = snapshot_times(mon_xy, args.snapshot_repeats)
    print(f"snapshot with effective rank (first, every 4th, last): median {statistics.median(ranked) * 1000:.1f} ms")
    print(f"snapshot_ms (regular snapshot, Jacobian off, 300 examples): median {statistics.median(regular) * 1000:.1f}"
          f" min {min(regular) * 1000:.1f} (target <= 60)")

    plain(min(200, args.steps), xs, ys, None)  # warm-up
    kinds = ("plain", "instr", "plain+test", "instr+test") if args.with_test else ("plain", "instr")
    rows: dict[str, list[float]] = {k: [] for k in kinds}
    snaps: list[float] = []
    for r in range(args.repeats):
        rows["plain"].append(plain(args.steps, xs, ys, None))
        t, s = instrumented(args.steps, xs, ys, mon_xy, None)
        rows["instr"].append(t)
        snaps += [sec for _, sec in s]
        if args.with_test:
            rows["plain+test"].append(plain(args.steps, xs, ys, test))
            rows["instr+test"].append(instrumented(args.steps, xs, ys, mon_xy, test)[0])
        print(f"repeat {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in rows.items()))
    if args.jacobian:
        jac = instrumented(EVERY, xs, ys, mon_xy, None, jacobian="exact")[1]
        print(f"Jacobian (exact, 16 examples, per-layer + end-to-end) per snapshot: "
              f"{(statistics.median(sec for _, sec in jac) - statistics.median(regular)) * 1000:.0f} ms extra")
    med = {k: statistics.median(v) for k, v in rows.items()}
    best = {k: min(v) for k, v in rows.items()}
    # Interference from other processes only adds time, so the fastest repeats are the least disturbed.
    print(f"fastest repeats: instrumented / plain {best['instr'] / best['plain']:.3f}; "
          f"snapshots' own share of the plain loop {sum(snaps) / args.repeats / best['plain']:.3f}")
    if args.with_test:
        print(f"with test evaluation on both sides: ratio {med['instr+test'] / med['plain+test']:.3f}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    # each repeat's instrumented run against the plain run just before it: drift over the benchmark
    # (this VM's plain loop wanders by 10-20 % between minutes) cancels within a pair
    pairs = [i / p for p, i in zip(rows["plain"], rows["instr"], strict=True)]
    print(f"pair ratios (instrumented / the plain run before it): {' '.join(f'{r:.3f}' for r in pairs)}; "
          f"ratio of medians {med['instr'] / med['plain']:.3f}")
    print(f"overhead_ratio (instruments, no Jacobian, vs plain loop, median pair ratio): "
          f"{statistics.median(pairs):.3f} (target <= 1.03)")


if __name__ == "__main__":
    main()
