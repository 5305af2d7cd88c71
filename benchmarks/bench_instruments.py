"""Instrument overhead: glorot's training loop with every instrument but the Jacobian, a snapshot every
500 updates, against the same plain PyTorch loop, in the same process, alternating runs.

Model: tanh 1024-1000×5-9, standard init, SGD batch 10 (the paper's setup). Both loops read the same
pre-generated Shapeset-3x2 batches, so data generation is not part of either side. Prints:

* ``overhead_ratio``: instrumented / plain wall time (median over alternating repeats), target ≤ 1.05;
* the same with the test-error evaluation a run also does at each snapshot, against a plain loop that
  evaluates the same test set at the same steps;
* the Jacobian's cost per snapshot (exact mode, default 16 examples, end-to-end included), separately.

Run: ``.venv/bin/python benchmarks/bench_instruments.py [--steps 2000] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from glorot_core.activations import get_activation
from glorot_core.data.shapeset import generate
from glorot_core.instruments.host import to_host
from glorot_core.instruments.snapshot import Monitor, error_rate, measure
from glorot_core.losses import cross_entropy
from glorot_core.models import build_mlp
from glorot_core.report import snapshot_entry
from glorot_core.spec import JacobianSpec, ModelSpec, TrainSpec
from glorot_core.training import train

EVERY = 500


def plain(steps: int, xs: torch.Tensor, ys: torch.Tensor, test: tuple | None) -> float:
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


def instrumented(steps: int, xs: torch.Tensor, ys: torch.Tensor, mon_xy: tuple, test: tuple | None,
                 jacobian: str = "off") -> tuple[float, list[float]]:
    """glorot's ``train`` with the snapshot a run takes (Jacobian off unless asked); returns the wall
    time and the time spent in each snapshot."""
    model, _ = build_mlp(ModelSpec())
    act = get_activation("tanh")
    mon = Monitor(*mon_xy, act, cross_entropy, JacobianSpec(mode=jacobian), 50)
    flat_x, flat_y = xs.reshape(-1, xs.shape[-1]), ys.reshape(-1)
    pos = [0]
    snap_times: list[float] = []

    def next_batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = pos[0] % flat_x.shape[0]
        pos[0] += n
        idx = torch.arange(k, k + n) % flat_x.shape[0]
        return flat_x[idx], flat_y[idx]

    def snapshot(step: int, train_loss: float | None) -> dict:
        t0 = time.perf_counter()
        tree = {"m": measure(model, mon, index=len(snap_times), final=step == steps), "train_loss": train_loss}
        if test is not None:
            tree["test_error"] = error_rate(model, *test)
        host = to_host(tree)
        entry = snapshot_entry(host["m"], step=step, examples_seen=step * 10, test_error=host.get("test_error"),
                               train_loss=host["train_loss"], elapsed_s=0.0)
        snap_times.append(time.perf_counter() - t0)
        return entry

    t = time.perf_counter()
    train(model, next_batch, TrainSpec(steps=steps, lr=0.01), cross_entropy, every=EVERY, snapshot=snapshot)
    return time.perf_counter() - t, snap_times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--test-examples", type=int, default=2000)
    args = ap.parse_args()
    torch.manual_seed(0)
    x, y = generate(args.steps * 10, seed=0)
    xs, ys = x.view(args.steps, 10, -1), y.view(args.steps, 10)
    xm, ym = generate(300 + args.test_examples, seed=1)
    mon_xy, test = (xm[:300], ym[:300]), (xm[300:], ym[300:])
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, steps {args.steps}, snapshot every {EVERY}")
    plain(200, xs, ys, None)  # warm-up
    rows: dict[str, list[float]] = {k: [] for k in ("plain", "instr", "plain+test", "instr+test")}
    snaps: list[float] = []
    for r in range(args.repeats):
        rows["plain"].append(plain(args.steps, xs, ys, None))
        t, s = instrumented(args.steps, xs, ys, mon_xy, None)
        rows["instr"].append(t)
        snaps += s
        rows["plain+test"].append(plain(args.steps, xs, ys, test))
        rows["instr+test"].append(instrumented(args.steps, xs, ys, mon_xy, test)[0])
        print(f"repeat {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in rows.items()))
    jac_times = instrumented(EVERY, xs, ys, mon_xy, None, jacobian="exact")[1]
    no_jac = statistics.median(snaps)
    print(f"snapshot without Jacobian: median {no_jac * 1000:.0f} ms")
    print(f"Jacobian (exact, 16 examples, per-layer + end-to-end) per snapshot: "
          f"{(statistics.median(jac_times) - no_jac) * 1000:.0f} ms extra")
    med = {k: statistics.median(v) for k, v in rows.items()}
    best = {k: min(v) for k, v in rows.items()}
    # Interference from other processes only adds time, so the fastest repeats are the least disturbed.
    print(f"fastest repeats: instrumented / plain {best['instr'] / best['plain']:.3f}; "
          f"snapshots' own share of the plain loop {no_jac * (args.steps // EVERY + 1) / best['plain']:.3f}")
    print(f"with test evaluation on both sides: ratio {med['instr+test'] / med['plain+test']:.3f}")
    ratio = med["instr"] / med["plain"]
    print(f"overhead_ratio (instruments, no Jacobian, vs plain loop, medians): {ratio:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
