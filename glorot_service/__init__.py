"""The composition root of the service: the one package that imports both ``api`` and ``worker``.

``glorot serve`` lives here: it builds the API app (``api``) with the way jobs are run (``worker``):
the local runner beside the API in the embedded mode, or the Celery dispatcher with a broker.
Nothing imports this package except the ``glorot`` command line (entry point ``glorot.cli``) and
the tests (docs/architecture.md, "Packages and the direction of dependencies").
"""
