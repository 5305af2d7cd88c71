"""Shapeset-3x2 generation speed: images per second of ``glorot_core.data.shapeset.generate``.

Usage: ``.venv/bin/python benchmarks/bench_shapeset.py [--n 100000] [--repeats 3]``

Each repeat generates ``n`` fresh images (a different seed each time, so nothing is cached) and is
timed with a wall clock; the best and median rates are reported, and the last line reads
``images/s: N (target 20000) ratio X`` with N the best rate. Also reports the rate of a training-style
stream (``ShapesetStream.next_batch(10)``), which adds the per-batch slicing cost.
The target (20,000 images/s on 2 CPU cores) is what keeps data generation far below the cost of an
SGD step of a 1024-1000x5-9 network with mini-batches of 10.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from glorot_core.data.shapeset import ShapesetStream, generate

TARGET = 20_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="images per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stream-images", type=int, default=50_000, help="images drawn as batches of 10")
    args = parser.parse_args()

    print(f"python {platform.python_version()}, torch {torch.__version__}, cpus {os.cpu_count()}, "
          f"torch threads {torch.get_num_threads()}")
    generate(1000, seed=10_000)  # warm-up (imports, allocator)
    rates = []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        x, _ = generate(args.n, seed=r)
        dt = time.perf_counter() - t0
        rates.append(args.n / dt)
        print(f"repeat {r}: {args.n} images in {dt:.3f} s = {rates[-1]:,.0f} images/s")
        del x

    stream = ShapesetStream(seed=99, chunk=10_000)
    t0 = time.perf_counter()
    for _ in range(args.stream_images // 10):
        stream.next_batch(10)
    dt = time.perf_counter() - t0
    print(f"stream: {args.stream_images} images as batches of 10 in {dt:.3f} s = "
          f"{args.stream_images / dt:,.0f} images/s")

    best, median = max(rates), statistics.median(rates)
    print(f"best {best:,.0f} images/s, median {median:,.0f} images/s")
    print(f"images/s: {best:.0f} (target {TARGET}) ratio {best / TARGET:.2f}")


if __name__ == "__main__":
    main()
