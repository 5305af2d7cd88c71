"""The HTTP side of glorot: FastAPI app, auth, errors, settings, and the persistence layer the worker reuses.

Depends on glorot_core (never the other way round). See docs/service.md.
"""
