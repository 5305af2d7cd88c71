"""Data roots in the service: a spec's ``data.root`` is a *name* under the operator's data folder.

The command line (``glorot run``) reads whatever path the user gives; the service must not: a tenant
who could name any path could probe the worker's file system through the error messages ("folder …
does not exist" vs "file … not found in folder …"). So in the service

* ``data.root`` is one to four folder names joined by ``/`` (letters, digits, ``_ . -``; no segment
  starts with a dot, so no ``..`` and no hidden files), never an absolute path, ``~`` or a backslash;
  the API refuses anything else with a 422 naming ``data.root`` (:func:`name_problem`);
* the operator may narrow the names to an allow-list (``GLOROT_DATA_ROOTS``);
* the worker resolves the name under ``GLOROT_DATA_DIR`` (:func:`resolve_data_root`) just before the
  run, and a name that is not there fails the job with a message that names only the name: whether a
  path outside the data folder exists is never tested, so it cannot leak.

A spec without ``data.root`` reads a file data set from ``<data dir>/<dataset>``, as the command line
does with ``$GLOROT_DATA_DIR``.
"""

from __future__ import annotations

import re

from glorot_core.errors import DataUnavailable
from glorot_core.spec import ExperimentSpec
from jobs.settings import Settings

#: One folder name: starts with a letter, digit or underscore (so never ``.`` or ``..``).
_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}"
#: A data root name: up to four segments joined by ``/``.
DATA_ROOT_NAME = re.compile(rf"^{_SEGMENT}(?:/{_SEGMENT}){{0,3}}$")
#: Data sets generated in memory: they read no folder.
GENERATED = frozenset({"shapeset3x2"})


def name_problem(root: str | None, settings: Settings) -> str | None:
    """Why ``root`` cannot be a service data root (``None``: it can, or no root was given)."""
    if root is None:
        return None
    if not DATA_ROOT_NAME.match(root):
        return ("must be the name of a data folder of this service (letters, digits, '_', '.', '-', up to four "
                "names joined by '/'), not a path: no leading '/', '~', '\\', '.' or '..'")
    if settings.data_roots is not None and root not in settings.data_roots:
        return "is not one of the data folders this service offers (ask the operator for the names)"
    return None


def resolve_data_root(spec: ExperimentSpec, settings: Settings) -> ExperimentSpec:
    """``spec`` with ``data.root`` turned into the folder (or file) it names under ``settings.data_dir``.

    Raises :class:`DataUnavailable` with a message that names only the name (never the data folder's
    path) when the name is refused, when the service has no data folder, or when nothing of that
    name is there."""
    root = spec.data.root
    if root is None and spec.data.dataset in GENERATED:
        return spec
    problem = name_problem(root, settings)
    if problem is not None:
        raise DataUnavailable(f"data.root {root!r} {problem}")
    name = root if root is not None else spec.data.dataset
    if settings.data_dir is None:
        raise DataUnavailable(f"data set {spec.data.dataset!r}: this service has no data folder configured "
                              "(GLOROT_DATA_DIR); ask the operator")
    base = settings.data_dir.expanduser().absolute()
    path = base.joinpath(*name.split("/"))
    if not (path.is_dir() or path.is_file()):
        raise DataUnavailable(f"data set {spec.data.dataset!r}: this service has no data folder named {name!r} "
                              "(ask the operator which names exist)")
    data = spec.data.model_copy(update={"root": str(path)})
    return spec.model_copy(update={"data": data})
