"""Figure rendering cost: every figure of a report drawn as PNG and SVG, against the run that made it.

For a few representative presets (``glorot_core.presets``) at a small budget, the report is produced
once with ``run_experiment`` (its ``end.elapsed_s`` is the run's cost), then each figure the report
allows (``glorot_core.figures.available``) is built and saved ``--repeats`` times per format, the
way the service and ``glorot figures`` do it (``build`` then ``save`` under ``RENDER_LOCK``). Prints
per figure and format the min and median milliseconds, then per report the total of the medians
(all figures, both formats) and its ratio to the run's elapsed seconds, with the load average before
and after (the machine must be quiet: other processes only add time).

Default presets: ``fig2_sigmoid`` (curves over training), ``fig3_tanh`` (curves, the end-of-training
histograms), ``fig6_8_standard`` (at initialisation: histograms and Jacobian spectra). Budgets are
shrunk with ``--steps``/``--every`` (a preset at initialisation stays at 0 updates); the rendering
cost depends on the snapshot count and the layer count, not on how long the run trained.

Run: ``.venv/bin/python benchmarks/bench_figure_rendering.py [--presets fig2_sigmoid,fig3_tanh]
[--steps 2000] [--every 200] [--repeats 5]``; a smoke run: ``--steps 20 --every 10 --repeats 1``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

from glorot_core.figures import FORMATS, RENDER_LOCK, available
from glorot_core.figures._base import save
from glorot_core.presets import get_preset, spec_for
from glorot_core.runner import run_experiment
from glorot_core.spec import validate_spec

DEFAULT_PRESETS = ("fig2_sigmoid", "fig3_tanh", "fig6_8_standard")


def report_of(name: str, steps: int, every: int, test_examples: int) -> dict[str, Any]:
    """The preset's report at a small budget (CPU); a preset at initialisation keeps its 0 updates."""
    train = {} if get_preset(name).budgets["quick"].steps == 0 else {"train": {"steps": steps}}
    spec = spec_for(name, "quick", {**train, "diagnostics": {"every": every},
                                    "data": {"test_examples": test_examples}, "device": "cpu"})
    return run_experiment(validate_spec(spec))


def time_figure(report: dict[str, Any], build: Any, fmt: str, repeats: int) -> tuple[list[float], int]:
    """Milliseconds of ``repeats`` build + save rounds of one figure in one format, and its size in bytes."""
    times, size = [], 0
    for _ in range(repeats):
        t = time.perf_counter()
        with RENDER_LOCK:
            size = len(save(build(report), fmt))
        times.append((time.perf_counter() - t) * 1e3)
    return times, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default=",".join(DEFAULT_PRESETS), help="comma-separated preset names")
    ap.add_argument("--steps", type=int, default=2000, help="updates per training preset (shrunk budget)")
    ap.add_argument("--every", type=int, default=200, help="updates between snapshots")
    ap.add_argument("--test-examples", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()}")
    for name in [n.strip() for n in args.presets.split(",") if n.strip()]:
        report = report_of(name, args.steps, args.every, args.test_examples)
        elapsed = float(report["end"]["elapsed_s"])
        print(f"\n{name}: {report['end']['steps_done']} updates, {len(report['snapshots'])} snapshots, "
              f"run {elapsed:.2f} s")
        print(f"  {'figure':<34} {'fmt':<4} {'min ms':>9} {'median ms':>10} {'KiB':>7}")
        total = 0.0
        defs = available(report)
        for d in defs:
            for fmt in FORMATS:
                times, size = time_figure(report, d.build, fmt, args.repeats)
                med = statistics.median(times)
                total += med
                print(f"  {d.name:<34} {fmt:<4} {min(times):9.1f} {med:10.1f} {size / 1024:7.1f}")
        print(f"  all {len(defs)} figures × {len(FORMATS)} formats: {total:.0f} ms (sum of medians), "
              f"{total / 1e3 / elapsed:.3f} of the run's {elapsed:.2f} s")
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
