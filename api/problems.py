"""RFC 9457 problem details: every error the API returns is ``application/problem+json``.

``type`` is a stable URN per kind of problem (``urn:glorot:problem:<slug>``), ``title`` its short
summary, ``detail`` the human explanation for this occurrence, ``instance`` the request path.
Validation problems add ``errors``: one entry per field, with

* ``loc``: the path as FastAPI writes it, prefixed by where the value came from (``["body", "model",
  "hidden", 2]``, ``["query", "limit"]``, ``["header", "idempotency-key"]``);
* ``field``: the same path relative to the body, dotted (``model.hidden.2``), as ``glorot validate`` prints;
* ``pointer``: an RFC 6901 JSON Pointer into the request body (``/model/hidden/2``), body errors only;
* ``message`` and ``code`` (pydantic's error type).

Rendering a problem never fails: a document is dumped as strict JSON, and if a part of it is not
representable (a ``NaN`` or a lone surrogate echoed from the client's input) those parts are replaced
(``"NaN"``, U+FFFD) rather than letting an error about an error become a 500.

Unexpected errors are 500 ``internal-error`` problems carrying a ``correlation_id`` (also sent as the
``X-Correlation-ID`` header) under which the traceback is logged; the client sees nothing else of it.

A database that cannot be reached (a restart, a failover, a cut network: ``jobs.transient.is_transient``)
is not a server bug: every route answers 503 ``database-unavailable`` with ``Retry-After`` while it
lasts, and works again by itself when the database returns (the engine pings pooled connections
before use, ``jobs.db``).
"""

from __future__ import annotations

import json
import logging
import math
import re
import secrets
from collections.abc import Iterable, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from jobs.transient import is_transient

log = logging.getLogger("glorot.api")

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:glorot:problem:"
CORRELATION_HEADER = "X-Correlation-ID"
#: Seconds a client is asked to wait (``Retry-After``) while the database cannot be reached.
DB_RETRY_AFTER_S = 5


class Problem(Exception):
    """Raise anywhere in a request to answer with a problem document."""

    def __init__(
        self, status: int, slug: str, detail: str, *, title: str | None = None,
        headers: dict[str, str] | None = None, **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status, self.slug, self.detail = status, slug, detail
        self.title = title or HTTPStatus(status).phrase
        self.headers = headers
        self.extra = extra


def problem_body(status: int, slug: str, detail: str, *, title: str | None = None, instance: str | None = None,
                 **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + slug,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    return body


_SURROGATE = re.compile("[\ud800-\udfff]")


def _safe_text(s: str) -> str:
    """``s`` as encodable text: each lone surrogate (from a ``\\ud800`` escape or invalid UTF-8) becomes U+FFFD."""
    return s if s.isascii() else _SURROGATE.sub("\ufffd", s)


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` with everything strict JSON cannot carry replaced: non-finite floats by their name,
    undecodable strings by their printable form, unknown objects by a short repr, depth cut at 32."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value).replace("inf", "Infinity").replace("nan", "NaN")
    if isinstance(value, str):
        return _safe_text(value)
    if depth >= 32:
        return "…"
    if isinstance(value, dict):
        return {_safe_text(str(k)): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v, depth + 1) for v in value]
    return _short(_safe_text(repr(value)))


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ProblemResponse(JSONResponse):
    """``application/problem+json`` that always renders (see the module docstring)."""

    media_type = PROBLEM_JSON

    def render(self, content: Any) -> bytes:
        try:
            text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
            return text.encode("utf-8")
        except (ValueError, TypeError, UnicodeEncodeError, RecursionError):
            return json.dumps(json_safe(content), ensure_ascii=False, allow_nan=False,
                              separators=(",", ":")).encode("utf-8")


def problem_response(status: int, slug: str, detail: str, *, instance: str | None = None,
                     headers: dict[str, str] | None = None, title: str | None = None, **extra: Any) -> JSONResponse:
    return ProblemResponse(
        problem_body(status, slug, detail, title=title, instance=instance, **extra),
        status_code=status, headers=headers,
    )


def new_correlation_id() -> str:
    """A short random id that ties a 500 (or a failed job) to the operator's log entry."""
    return secrets.token_hex(8)


def internal_error_body(correlation_id: str, instance: str | None = None) -> dict[str, Any]:
    """The 500 problem: what the client may know (nothing about the error itself) and the id to quote."""
    return problem_body(500, "internal-error", f"an unexpected error occurred; it has been logged under "
                        f"correlation id {correlation_id}", instance=instance, correlation_id=correlation_id)


def _jsonable_input(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return _safe_text(_short(value)) if isinstance(value, str) else value
    if isinstance(value, float):
        return json_safe(value)
    return _short(_safe_text(repr(value)))


def field_errors(errors: Iterable[dict[str, Any]], prefix: Sequence[str | int] = ()) -> list[dict[str, Any]]:
    """pydantic errors → problem ``errors`` entries (see module docstring)."""
    out = []
    for e in errors:
        loc = [*prefix, *e.get("loc", ())]
        where = loc[0] if loc and loc[0] in ("body", "query", "path", "header", "cookie") else None
        rel = loc[1:] if where else loc
        entry: dict[str, Any] = {
            "loc": loc,
            "field": ".".join(str(p) for p in rel),
            "message": e.get("msg", "invalid"),
            "code": e.get("type", "value_error"),
        }
        if where == "body":
            entry["pointer"] = "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in rel)
        if "input" in e and where == "body":
            entry["input"] = _jsonable_input(e["input"])
        out.append(entry)
    return out


def validation_problem(errors: list[dict[str, Any]], *, instance: str | None = None,
                       detail: str | None = None) -> JSONResponse:
    first = errors[0] if errors else None
    if detail is None:
        detail = (f"{len(errors)} invalid field(s); first: {first['field'] or '(body)'}: {first['message']}"
                  if first else "the request is invalid")
    return problem_response(422, "validation-error", detail, instance=instance, title="Invalid request",
                            errors=errors)


def install(app: FastAPI) -> None:
    """Register handlers so that no error (ours, FastAPI's, Starlette's, a bug) escapes as non-problem."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.slug, exc.detail, title=exc.title, instance=request.url.path,
                                headers=exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_problem(field_errors(exc.errors()), instance=request.url.path)

    @app.exception_handler(ValidationError)
    async def _validation(request: Request, exc: ValidationError) -> JSONResponse:
        return validation_problem(field_errors(exc.errors(), ("body",)), instance=request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug = {404: "not-found", 405: "method-not-allowed", 401: "unauthorized", 413: "payload-too-large"}.get(
            exc.status_code, f"http-{exc.status_code}")
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return problem_response(exc.status_code, slug, detail, instance=request.url.path,
                                headers=getattr(exc, "headers", None))

    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeout)
    async def _database(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, DBAPIError) and not is_transient(exc):
            return _internal_error(request, exc)
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path,
                    (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200])
        return problem_response(503, "database-unavailable", "the database cannot be reached right now; "
                                f"retry in {DB_RETRY_AFTER_S} s", instance=request.url.path,
                                headers={"Retry-After": str(DB_RETRY_AFTER_S)})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # reached only by an error outside api.middleware.UnexpectedErrorMiddleware (which answers the
        # rest without letting the exception reach the server, so the connection survives)
        return _internal_error(request, exc)


def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """The 500 problem for ``exc``, logged with its traceback under a new correlation id."""
    cid = new_correlation_id()
    log.error("unhandled error [correlation id %s] on %s %s", cid, request.method, request.url.path, exc_info=exc)
    return ProblemResponse(internal_error_body(cid, request.url.path), status_code=500,
                           headers={CORRELATION_HEADER: cid})
