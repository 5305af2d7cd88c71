"""The quick reproduction set on this CPU: every preset at its ``quick`` budget, run one after another
in one process through ``run_experiment``, with its wall time and whether its fact showed.

For each preset (``glorot_core.presets.PRESETS``, figures first, then Table 1) prints the updates
run, the snapshots taken, the wall seconds (set-up, training, snapshots and the report; the same
process runs every preset, so imports are paid once, before the first) and, where the preset's
``quick_shows`` says its fact shows within the quick budget ("yes" or "partly"), the check of that
fact below (the same bounds as the test suite's: ``tests/test_presets.py``, ``tests/test_fig2.py``,
``tests/test_paper_init.py``): ``shown``, ``NOT shown`` (with the numbers), or ``—`` when the preset
claims nothing at that budget. Presets whose data set needs local files (MNIST, CIFAR-10) are
skipped with the reason when ``GLOROT_DATA_DIR`` does not hold them, unless ``--stand-in-data DIR``
writes files of the official sizes there first (random pixels and labels: a run's time depends on
the data's shape, not its values, so those presets are timed but their facts are not checked).
Ends with the total, and the load average before and after (the machine must be quiet: other
processes only add time).

``--lanes N`` runs the presets in N worker processes at once, each with ``cores / N`` intra-op
threads, longest budget first (as a service with N workers would run a suite of them): the set's
wall time is then the busiest lane's, and each preset's own time is an upper bound on its time
alone on the machine (its lane shares the cores and the memory bandwidth with the others).

``--only`` keeps the presets whose name contains one of its comma-separated words (``--only
fig2,fig3`` or ``--only shapeset3x2``); ``--scale`` multiplies every budget's updates and snapshot
interval (``--scale 0.01`` for a smoke run: the checks then usually fail, which is expected, since
the facts need the whole budget).

Run: ``.venv/bin/python benchmarks/bench_quick_presets.py [--only fig2,fig3] [--scale 1]``.
The whole set at ``--scale 1`` is about an hour of this 2-core CPU (``GET /v1/presets`` lists each budget's updates).
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glorot_core.errors import DataUnavailable
from glorot_core.presets import FILE_DATASETS, PRESETS, spec_for
from glorot_core.runner import run_experiment
from glorot_core.spec import validate_spec

Report = dict[str, Any]
Check = Callable[[Report], tuple[bool, str]]


def _layers(report: Report, section: str, key: str, step: int | None = None) -> list[float]:
    """``section.key`` of every hidden layer at the last snapshot at or before ``step`` (None: the last)."""
    snaps = [s for s in report["snapshots"] if step is None or s["step"] <= step] or report["snapshots"][:1]
    return [float(lay[section][key]) for lay in snaps[-1]["layers"] if lay.get(section)]


def _ratios(values: list[float]) -> list[float]:
    return [b / a for a, b in itertools.pairwise(values)]


def fig2(report: Report) -> tuple[bool, str]:
    """tests/test_presets.py: after 1,000 updates the top sigmoid layer's mean < 0.1, layer 3's > 0.6."""
    means = _layers(report, "activation", "mean", 1000)
    return means[3] < 0.1 and means[2] > 0.6, f"means at ≤1,000 updates {[round(m, 3) for m in means]}"


def fig3_tanh(report: Report) -> tuple[bool, str]:
    """docs/science.md, Fig 3: over the quick budget layer 1's 98th percentile rises towards 1 (measured
    0.63 → 0.94) while no layer above it saturates (their 98th percentiles stay below 0.95)."""
    first, last = _layers(report, "activation", "p98", 0), _layers(report, "activation", "p98")
    ok = last[0] >= 0.9 and last[0] - first[0] >= 0.2 and max(last[1:]) < 0.95
    return ok, f"p98 at init {[round(p, 2) for p in first]} → at the end {[round(p, 2) for p in last]}"


def at_init(standard: bool) -> Check:
    """tests/test_paper_init.py: activation std per layer going up ×0.5–0.65 (standard) or ×0.78–1.1
    (normalized); Jacobian mean singular value ≈0.5 (0.4–0.6) or ≈0.8 (0.65–0.9)."""
    lo, hi = (0.5, 0.65) if standard else (0.78, 1.1)
    sv_lo, sv_hi = (0.4, 0.6) if standard else (0.65, 0.9)

    def check(report: Report) -> tuple[bool, str]:
        ratios = _ratios(_layers(report, "activation", "std", 0))
        svs = _layers(report, "jacobian", "mean_sv", 0)
        ok = all(lo <= r <= hi for r in ratios) and bool(svs) and all(sv_lo <= s <= sv_hi for s in svs)
        return ok, f"std ratios {[round(r, 3) for r in ratios]}, mean sv {[round(s, 3) for s in svs]}"
    return check


CHECKS: dict[str, Check] = {
    "fig2_sigmoid": fig2,
    "fig3_tanh": fig3_tanh,
    "fig6_8_standard": at_init(True),
    "fig6_8_normalized": at_init(False),
}
"""The presets whose quick budget shows a checkable fact (their ``quick_shows`` starts with yes/partly)."""


def scaled(name: str, scale: float) -> dict[str, Any]:
    """The preset's quick spec with its updates and snapshot interval multiplied by ``scale``."""
    b = PRESETS[name].budgets["quick"]
    if scale == 1 or b.steps == 0:
        return spec_for(name, "quick", {"device": "cpu"})
    return spec_for(name, "quick", {"train": {"steps": max(1, round(b.steps * scale))},
                                    "diagnostics": {"every": max(1, round(b.every * scale))}, "device": "cpu"})


def write_stand_in_data(root: Path, seed: int = 0) -> None:
    """MNIST (IDX: 60,000 + 10,000 images of 28×28) and CIFAR-10 (binary: 5 + 1 batches of 10,000
    records of 3,072 bytes) of the official sizes under ``root/mnist`` and ``root/cifar10``, with
    random pixels and labels; files already there are kept."""
    rng = np.random.default_rng(seed)
    mnist, cifar = root / "mnist", root / "cifar10"
    mnist.mkdir(parents=True, exist_ok=True)
    cifar.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", 60_000), ("t10k", 10_000)):
        images, labels = mnist / f"{prefix}-images-idx3-ubyte", mnist / f"{prefix}-labels-idx1-ubyte"
        if not images.exists():
            header = (0x0803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28))
            images.write_bytes(header + rng.integers(0, 256, n * 784, dtype=np.uint8).tobytes())
        if not labels.exists():
            header = (0x0801).to_bytes(4, "big") + n.to_bytes(4, "big")
            labels.write_bytes(header + rng.integers(0, 10, n, dtype=np.uint8).tobytes())
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        if not (cifar / name).exists():
            rec = rng.integers(0, 256, (10_000, 3073), dtype=np.uint8)
            rec[:, 0] = rng.integers(0, 10, 10_000, dtype=np.uint8)
            (cifar / name).write_bytes(rec.tobytes())


def run_one(name: str, scale: float, check: bool) -> tuple[str, int | None, int | None, float | None, str]:
    """(name, updates run, snapshots, wall seconds, the fact's line) of one preset; None when skipped."""
    spec = validate_spec(scaled(name, scale))
    t = time.perf_counter()
    try:
        report = run_experiment(spec)
    except DataUnavailable as e:
        return name, None, None, None, f"skipped: {e}"
    wall = time.perf_counter() - t
    claim = PRESETS[name].quick_shows.split(":")[0]
    if name in CHECKS and check:
        ok, detail = CHECKS[name](report)
        fact = f"{'shown' if ok else 'NOT shown'} (claims {claim}): {detail}"
    elif name in CHECKS:
        fact = f"not checked: stand-in data (claims {claim})"
    else:
        fact = f"— (claims {claim})"
    return name, report["end"]["steps_done"], len(report["snapshots"]), wall, fact


def _lane_init(threads: int) -> None:
    torch.set_num_threads(threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated words; keep presets whose name contains one")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the quick budgets' updates and interval")
    ap.add_argument("--lanes", type=int, default=1, help="presets run at once, each in its own process")
    ap.add_argument("--stand-in-data", type=Path, default=None,
                    help="write MNIST/CIFAR-10 files of the official sizes (random) here and use them")
    args = ap.parse_args()
    words = [w.strip() for w in args.only.split(",") if w.strip()]
    names = [n for n in PRESETS if not words or any(w in n for w in words)]
    stand_in = frozenset()
    if args.stand_in_data is not None:
        write_stand_in_data(args.stand_in_data)
        os.environ["GLOROT_DATA_DIR"] = str(args.stand_in_data)
        stand_in = frozenset(n for n in names if PRESETS[n].dataset in FILE_DATASETS)
    threads = max(1, (os.cpu_count() or 1) // args.lanes)
    print(f"load average before: {os.getloadavg()}; {len(names)} presets, scale {args.scale:g}, "
          f"{args.lanes} lane(s) of {threads} thread(s)")
    print(f"{'preset':<30} {'updates':>8} {'snaps':>6} {'wall s':>8}  fact at quick budget")
    order = sorted(names, key=lambda n: -PRESETS[n].budgets["quick"].steps)
    rows: dict[str, tuple[str, int | None, int | None, float | None, str]] = {}
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.lanes, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_lane_init, initargs=(threads,)) as pool:
        futures = [pool.submit(run_one, n, args.scale, n not in stand_in) for n in order]
        for fut in as_completed(futures):
            name, steps, snaps, wall, fact = row = fut.result()
            rows[name] = row
            print(f"{name:<30} {steps if steps is not None else '—':>8} {snaps if snaps is not None else '—':>6} "
                  f"{f'{wall:.1f}' if wall is not None else '—':>8}  {fact}", flush=True)
    elapsed = time.perf_counter() - t0
    walls = [r[3] for r in rows.values() if r[3] is not None]
    print("in preset order:")
    for name in names:
        _, steps, _, wall, _ = rows[name]
        print(f"  {name:<30} {steps if steps is not None else '—':>8} {f'{wall:.1f}' if wall is not None else '—':>8}")
    print(f"sum of preset times: {sum(walls):.1f} s ({sum(walls) / 60:.1f} min); slowest preset "
          f"{max(walls, default=0):.1f} s; wall time of the set: {elapsed:.1f} s ({elapsed / 60:.1f} min)")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
