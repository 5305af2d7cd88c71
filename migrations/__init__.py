"""Alembic migrations of the service schema (see jobs/migrate.py and `glorot db upgrade`)."""
