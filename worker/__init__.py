"""The worker side of the service: running a job (``worker.execute``, ``worker.watcher``), the local
runner of the embedded mode, the Celery app, tasks and dispatcher, and the reaper/sweeper loop.

Both modes execute a job through the same code; only dispatch differs. Depends on ``jobs`` and
``glorot_core``, never on ``api`` (docs/architecture.md).
"""
