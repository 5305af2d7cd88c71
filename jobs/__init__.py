"""Persistence and the job lifecycle: the one package both the API and the workers import.

``jobs`` owns the settings, the database engines, the SQLAlchemy models, the Alembic entry points and
every state transition of a job (``jobs.lifecycle``). It depends on ``glorot_core`` only; ``api`` and
``worker`` depend on it and never on each other (docs/architecture.md).
"""
