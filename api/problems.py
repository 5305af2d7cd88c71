"""RFC 9457 problem details: every error the API returns is ``application/problem+json``.

``type`` is a stable URN per kind of problem (``urn:glorot:problem:<slug>``), ``title`` its short
summary, ``detail`` the human explanation for this occurrence, ``instance`` the request path.
Validation problems add ``errors``: one entry per field, with

* ``loc``: the path as FastAPI writes it, prefixed by where the value came from (``["body", "model",
  "hidden", 2]``, ``["query", "limit"]``, ``["header", "idempotency-key"]``);
* ``field``: the same path relative to the body, dotted (``model.hidden.2``), as ``glorot validate`` prints;
* ``pointer``: an RFC 6901 JSON Pointer into the request body (``/model/hidden/2``), body errors only;
* ``message`` and ``code`` (pydantic's error type).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("glorot.api")

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:glorot:problem:"


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


def problem_response(status: int, slug: str, detail: str, *, instance: str | None = None,
                     headers: dict[str, str] | None = None, title: str | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse(
        problem_body(status, slug, detail, title=title, instance=instance, **extra),
        status_code=status, media_type=PROBLEM_JSON, headers=headers,
    )


def _jsonable_input(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    text = repr(value)
    return text if len(text) <= 200 else text[:199] + "…"


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

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(500, "internal-error", "an unexpected error occurred; it has been logged",
                                instance=request.url.path)
