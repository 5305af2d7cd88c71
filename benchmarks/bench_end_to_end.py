"""End to end, as a user calls the library: ``run_experiment(validate_spec(spec))`` against a plain
PyTorch loop doing the same training, alternating in one process.

glorot's side: the paper's tanh 1024-1000×5-9 network, 2,000 updates of SGD (batch 10), a snapshot
every 500 updates (Jacobian off, 300 monitor and 300 test examples), MINUS the same call with 0
updates, so the set-up and the initial diagnosis (which a plain loop does not do) are not counted,
while everything training adds is: the data stream, the per-step work, the snapshots.

Plain side: the same number of Shapeset-3x2 batches generated in one call (timed: glorot's side
generates its data too), then forward, cost, zero_grad, backward, step for each.

Prints each round and ``end_to_end_ratio`` = median(glorot) / median(plain) over the rounds
(target ≤ 1.05), with the load average before and after (the machine must be quiet).

Run: ``.venv/bin/python benchmarks/bench_end_to_end.py [--steps 2000] [--rounds 4]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from glorot_core.allocator import keep_freed_memory
from glorot_core.data.shapeset import generate
from glorot_core.models import build_mlp
from glorot_core.runner import run_experiment
from glorot_core.spec import ExperimentSpec, validate_spec


def spec_of(steps: int, every: int) -> ExperimentSpec:
    return validate_spec({
        "name": "bench-end-to-end",
        "model": {"hidden": [1000] * 5, "activation": "tanh", "init": "standard"},
        "data": {"dataset": "shapeset3x2", "test_examples": 300},
        "train": {"steps": steps, "lr": 0.01, "batch_size": 10},
        "diagnostics": {"every": every, "monitor_examples": 300, "jacobian": {"mode": "off"}},
        "device": "cpu",
    })


def glorot(steps: int, every: int) -> tuple[float, float, float]:
    """(full call − 0-step call, full call, 0-step call), seconds."""
    t = time.perf_counter()
    run_experiment(spec_of(steps, every))
    full = time.perf_counter() - t
    t = time.perf_counter()
    run_experiment(spec_of(0, every))
    zero = time.perf_counter() - t
    return full - zero, full, zero


def plain(steps: int) -> tuple[float, float]:
    """(plain loop including its data generation, data generation alone), seconds."""
    spec = spec_of(steps, steps)
    model, _ = build_mlp(spec.model, seed=spec.train.seed)
    opt = torch.optim.SGD(model.parameters(), lr=spec.train.lr)
    bs = spec.train.batch_size
    t = time.perf_counter()
    x, y = generate(steps * bs, seed=spec.data.seed)
    data_s = time.perf_counter() - t
    xs, ys = x.view(steps, bs, -1), y.view(steps, bs)
    for i in range(steps):
        loss = F.cross_entropy(model(xs[i]), ys[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t, data_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--every", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    print(f"glibc keeps freed memory for reuse (as run_experiment sets it; the plain loop too): {keep_freed_memory()}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, steps {args.steps}, every {args.every}")
    plain(min(200, args.steps))  # warm-up (allocator, BLAS threads)
    run_experiment(spec_of(0, args.every))
    g_rows: list[float] = []
    p_rows: list[float] = []
    for r in range(args.rounds):
        g, full, zero = glorot(args.steps, args.every)
        p, data_s = plain(args.steps)
        g_rows.append(g)
        p_rows.append(p)
        print(f"round {r + 1}: glorot {full:.2f}s - {zero:.2f}s = {g:.2f}s; plain {p:.2f}s "
              f"(data {data_s:.2f}s); ratio {g / p:.3f}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    ratio = statistics.median(g_rows) / statistics.median(p_rows)
    print(f"end_to_end_ratio (median glorot / median plain over {args.rounds} rounds): {ratio:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
