"""Per-job resource limits applied inside a job's own process.

Celery's ``worker_max_memory_per_child`` is checked only after a task ends, so it caps nothing during
a job; an rlimit set in the job process itself does. ``RLIMIT_DATA`` (Linux ≥ 4.7: heap
and private writable mappings, which is where tensors live) rather than ``RLIMIT_AS``, which counts
the address space that shared libraries and thread stacks reserve and would fail jobs that use
little memory. Over the cap, allocations fail: PyTorch raises, and the job is FAILED with that error.
"""

from __future__ import annotations

import logging
import resource

from jobs.settings import Settings

log = logging.getLogger("glorot.limits")


def apply_job_limits(settings: Settings) -> None:
    """Set the job memory cap on the calling process (call it first thing in a job's own process)."""
    if settings.job_memory_limit_mb is None:
        return
    cap = settings.job_memory_limit_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))
    log.info("job memory cap: %d MiB (RLIMIT_DATA)", cap // (1024 * 1024))
