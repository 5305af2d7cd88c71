"""glibc keeps freed tensor memory: repeated snapshots reuse their temporaries without page faults."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SNAPSHOTS = """
import resource, torch
from glorot_core.allocator import keep_freed_memory
from glorot_core.activations import get_activation
from glorot_core.data.shapeset import generate
from glorot_core.instruments.host import to_host
from glorot_core.instruments.snapshot import Monitor, measure
from glorot_core.losses import cross_entropy
from glorot_core.models import build_mlp
from glorot_core.spec import JacobianSpec, ModelSpec
keep_freed_memory()
model, _ = build_mlp(ModelSpec(hidden=[1000, 1000, 1000]))
x, y = generate(300, seed=1)
mon = Monitor(x, y, get_activation("tanh"), cross_entropy, JacobianSpec(mode="off"), 50)
for _ in range(3):
    to_host(measure(model, mon, index=1))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    to_host(measure(model, mon, index=1))
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(defaults: bool) -> int:
    env = {**os.environ, "GLOROT_MALLOC_DEFAULTS": "1" if defaults else "0"}
    out = subprocess.run([sys.executable, "-c", SNAPSHOTS], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_snapshots_reuse_freed_memory_without_page_faults() -> None:
    default, kept = _faults(True), _faults(False)
    # glibc's defaults give each new multi-megabyte temporary fresh pages (≈1,000 faults per 4 MB block).
    assert kept < 0.1 * default, (kept, default)
