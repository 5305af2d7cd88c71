"""Model uploads: throughput and the API process's peak memory while a large file streams into POST /v1/models.

For each size (``--mb``, default 50 200 500 MB), a safetensors file of a wide MLP whose weights total that
size is written to a temp folder (``input_dim × 2048 → 10``, float32), and ONE uvicorn worker backed by
Postgres (started as a subprocess, with the upload limits raised by ``GLOROT_*`` variables) receives it
twice from a streaming client (httpx reads the file a chunk at a time):

1. **receive only** — metadata without ``architecture``: the body is streamed to a temp file (hashed and
   counted on the way), then refused with a 422 before any check, so this is the streaming path alone;
2. **accepted** — the full upload: streaming, the safety check and probe-point listing in a child process
   (its memory is the child's, not the API's), and the blob stored as ``blob_chunks`` rows.

Each request's MB/s is the file size over its wall time; the API process's VmRSS is sampled every 10 ms
(as in bench_large_reports.py) and its peak reported as growth over the RSS just before the request.
Streaming holds a chunk at a time, so the growth should not follow the file's size. Prints one JSON
document. Needs PostgreSQL on 127.0.0.1:5432 like the other benchmarks.

Run: ``.venv/bin/python benchmarks/bench_uploads.py [--mb 50 200 500]`` (check quickly with ``--mb 20``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from _service import api_server, stack
from bench_large_reports import PeakRss, rss_bytes, server_pid

MB = 1_000_000
HIDDEN, CLASSES = 2048, 10
LIMITS = {  # raised so that a 500 MB model is accepted; the check child gets room for two copies of it
    "GLOROT_MAX_UPLOAD_BYTES": str(4 << 30),
    "GLOROT_TENANT_UPLOAD_QUOTA_BYTES": str(64 << 30),
    "GLOROT_MAX_PARAMETERS": str(1_000_000_000),
    "GLOROT_UPLOAD_CHECK_MEMORY_MB": "12288",
    "GLOROT_UPLOAD_CHECK_TIMEOUT_S": "600",
}


def wide_mlp_file(folder: Path, target_bytes: int) -> tuple[Path, dict[str, Any]]:
    """A safetensors MLP ``input_dim → HIDDEN → CLASSES`` of about ``target_bytes`` of float32 weights,
    and its architecture as the upload's metadata declares it."""
    per_input = HIDDEN * 4  # bytes of one input column of the first weight
    rest = (HIDDEN + CLASSES * HIDDEN + CLASSES) * 4
    input_dim = max(1, (target_bytes - rest) // per_input)
    g = torch.Generator().manual_seed(0)
    state = {"0.weight": torch.randn(HIDDEN, input_dim, generator=g) / input_dim**0.5,
             "0.bias": torch.zeros(HIDDEN),
             "2.weight": torch.randn(CLASSES, HIDDEN, generator=g) / HIDDEN**0.5,
             "2.bias": torch.zeros(CLASSES)}
    path = folder / f"mlp-{target_bytes // MB}mb.safetensors"
    save_file(state, str(path))
    arch = {"kind": "mlp", "input_dim": int(input_dim), "hidden": [HIDDEN], "num_classes": CLASSES,
            "activation": "tanh"}
    return path, arch


def post(base: str, key: str, path: Path, metadata: dict[str, Any], pid: int) -> dict[str, Any]:
    """One streamed POST /v1/models of ``path``: status, seconds, MB/s, the API's peak RSS growth."""
    size = path.stat().st_size
    before = rss_bytes(pid)
    with PeakRss(pid) as rss, open(path, "rb") as f:
        started = time.perf_counter()
        r = httpx.post(f"{base}/v1/models", headers={"Authorization": f"Bearer {key}"},
                       files={"file": (path.name, f, "application/octet-stream")},
                       data={"metadata": json.dumps(metadata)}, timeout=900)
        seconds = time.perf_counter() - started
    out = {"status": r.status_code, "seconds": round(seconds, 3), "mb_per_s": round(size / MB / seconds, 1),
           "rss_before_mb": round(before / MB, 1), "peak_rss_growth_mb": round((rss.peak - before) / MB, 1)}
    if r.status_code == 201:
        out["model_id"] = r.json()["id"]
    else:
        out["problem"] = r.json().get("type", r.text[:200])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, nargs="+", default=[50, 200, 500], help="file sizes in MB (10^6 bytes)")
    args = ap.parse_args()
    results: list[dict[str, Any]] = []
    with stack(**LIMITS) as st, tempfile.TemporaryDirectory(prefix="glorot-bench-uploads-") as tmp, \
            api_server(st) as base:
        pid = server_pid(int(base.rsplit(":", 1)[1]))
        headers = {"Authorization": f"Bearer {st.key}"}
        httpx.get(f"{base}/v1/models", headers=headers, timeout=60).raise_for_status()  # warm-up
        idle = rss_bytes(pid)
        for mb in args.mb:
            path, arch = wide_mlp_file(Path(tmp), int(mb * MB))
            size = path.stat().st_size
            receive = post(base, st.key, path, {"format": "safetensors"}, pid)  # 422: no architecture
            accepted = post(base, st.key, path, {"format": "safetensors", "architecture": arch}, pid)
            if "model_id" in accepted:  # keep the database small between sizes
                with contextlib.suppress(httpx.HTTPError):
                    httpx.delete(f"{base}/v1/models/{accepted.pop('model_id')}", headers=headers, timeout=300)
            path.unlink()
            params = arch["input_dim"] * HIDDEN + HIDDEN + CLASSES * HIDDEN + CLASSES
            results.append({"mb": mb, "file_bytes": size, "parameters": params,
                            "receive_only": receive, "accepted": accepted})
        hwm = rss_bytes(pid, "VmHWM")
    print(json.dumps({"uvicorn_workers": 1, "database": "postgres", "idle_rss_mb": round(idle / MB, 1),
                      "vm_hwm_mb": round(hwm / MB, 1), "limits": LIMITS, "sizes": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
