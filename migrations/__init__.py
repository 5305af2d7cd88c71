"""Alembic migrations of the service schema (see api/migrate.py and `glorot db upgrade`)."""
