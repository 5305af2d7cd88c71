"""``python -m glorot_core.uploads.child``: one inspection in a process of its own (see ``inspect``).

Reads a JSON request on stdin, caps its own memory and CPU time before importing torch, and writes one
JSON line: ``{"info": …}`` or ``{"refused": …}``. Any other failure exits non-zero.
"""

from __future__ import annotations

import json
import resource
import sys


def _cap(memory_mb: int | None, cpu_s: int) -> None:
    if memory_mb is not None:
        cap = memory_mb * 1024 * 1024
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        resource.setrlimit(resource.RLIMIT_DATA, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s if hard == resource.RLIM_INFINITY else min(cpu_s, hard), hard))


def main() -> int:
    request = json.loads(sys.stdin.read())
    _cap(request.get("memory_mb"), int(request["cpu_s"]))
    from pathlib import Path

    from glorot_core.uploads.archive import ArchiveLimits
    from glorot_core.uploads.errors import UploadRefused
    from glorot_core.uploads.inspect import InspectLimits, inspect_model_file

    limits = InspectLimits(archive=ArchiveLimits(request["max_entries"], request["max_uncompressed_bytes"]),
                           max_parameters=request["max_parameters"], memory_mb=None)
    try:
        info = inspect_model_file(Path(request["path"]), request["metadata"], limits)
    except UploadRefused as e:
        print(json.dumps({"refused": e.to_dict()}))
        return 0
    print(json.dumps({"info": info.to_dict()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
