"""The worker side of the service: the Celery app and tasks, and the local runner of the embedded mode.

Both modes execute a job through the same code (``worker.execute``); only dispatch differs.
"""
