"""The HTTP side of glorot: FastAPI app, routes, auth, errors and the service layer behind the routes.

Depends on ``jobs`` and ``glorot_core``, never on ``worker`` (docs/architecture.md).
"""
