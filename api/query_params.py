"""Query strings read the way the OpenAPI description says: a parameter that takes one value refuses two.

FastAPI reads only the last of repeated values for a single-valued parameter (``?kind=&kind=x`` is
``kind=x``), so a request the description does not allow would silently mean something else.
:func:`reject_repeated_scalars`, a router dependency, answers 422 (``multiple_values`` at
``["query", name]``) instead. Parameters declared as lists (``layer``, ``statistic``) repeat as usual.

The paged lists (``GET /v1/jobs``, ``GET /v1/suites``, ``GET /v1/models``) share their ``limit`` and
``cursor`` parameters (:data:`PageLimit`, :data:`PageCursor`) and the page size the server grants
(:func:`page_size`); their rows are paged by ``services.newest_first``.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import Query, Request
from fastapi.exceptions import RequestValidationError

from jobs.settings import Settings

PageLimit = Annotated[int | None, Query(ge=1, description="page size (capped by the server)")]
PageCursor = Annotated[str | None, Query(max_length=2000, description="next_cursor of the previous page")]

_SEQUENCES = (list, tuple, set, frozenset)
_single_valued: dict[int, frozenset[str]] = {}


def _is_sequence(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _is_sequence(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return any(_is_sequence(a) for a in typing.get_args(annotation))
    return origin in _SEQUENCES or annotation in _SEQUENCES


def _single_valued_names(route: Any) -> frozenset[str]:
    """The query parameters of ``route`` (and its dependencies) that take one value, by their alias."""
    names = _single_valued.get(id(route))
    if names is None:
        found: set[str] = set()
        stack = [getattr(route, "dependant", None)]
        while stack:
            dep = stack.pop()
            if dep is None:
                continue
            found.update(p.alias for p in dep.query_params if not _is_sequence(p.field_info.annotation))
            stack.extend(dep.dependencies)
        names = _single_valued[id(route)] = frozenset(found)
    return names


async def reject_repeated_scalars(request: Request) -> None:
    """422 when a single-valued query parameter is given more than once (module docstring)."""
    query = request.scope.get("query_string", b"")
    if b"&" not in query:  # one parameter at most: nothing can repeat (the common case costs one scan)
        return
    names = _single_valued_names(request.scope.get("route"))
    seen: set[str] = set()
    for name, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name in names:
            if name in seen:
                raise RequestValidationError([{
                    "loc": ("query", name), "type": "multiple_values",
                    "msg": f"{name!r} takes one value; it was given more than once",
                }])
            seen.add(name)


def page_size(settings: Settings, limit: int | None) -> int:
    """The page size of a list: ``limit``, or the default, never more than the server's maximum."""
    return min(limit or settings.page_size_default, settings.page_size_max)
