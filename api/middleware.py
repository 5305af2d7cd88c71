"""Pure ASGI middleware: the last-resort error handler, a request-body size limit counted while
streaming, and Prometheus metrics.

Pure ASGI (not ``BaseHTTPMiddleware``) keeps per-request overhead small, which the status-polling
benchmark measures.

Body limit (PITFALLS: Starlette has none, and a Content-Length check alone is bypassed by chunked
bodies): a declared Content-Length above the limit is refused before reading; a chunked body (or any
body not framed by HTTP/1.x Content-Length) is counted as it arrives and the request fails with 413
the moment the count passes the limit. A body framed by Content-Length needs no counting (the server
reads exactly that many bytes), so a GET pays one scan of its headers and nothing else.

Last resort (:class:`UnexpectedErrorMiddleware`, the outermost): an exception that nothing else
handled — a bug in a route, a dependency or another middleware — is answered with a 500 problem
carrying a correlation id (header and body), logged with its traceback under that id, and *not*
re-raised. Starlette's own handler for ``Exception`` answers too but then re-raises, and the server
closes the keep-alive connection after logging it, so the client's next request on that connection
fails; here the exception ends with the response.

Compression (:class:`CompressionMiddleware`): Starlette's gzip for clients that send
``Accept-Encoding: gzip`` and bodies of at least ``minimum_size`` bytes (a report is MBs of JSON that
compresses ≈5–10×); for other clients it is not in the path at all.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import CORRELATION_HEADER, PROBLEM_JSON, internal_error_body, new_correlation_id, problem_body

log = logging.getLogger("glorot.api")


class BodyTooLarge(Exception):
    """Raised from ``receive`` when a streamed body passes the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body larger than {limit} bytes")
        self.limit = limit


async def _send_problem(send: Send, status: int, body: dict[str, Any], *, close: bool = True,
                        headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(data)).encode()),
                            *([(b"connection", b"close")] if close else []), *headers]})
    await send({"type": "http.response.body", "body": data})


class _TrackingSend:
    """``send`` that remembers whether the response has started (after that, no problem can replace it)."""

    def __init__(self, send: Send) -> None:
        self.send, self.started = send, False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


class UnexpectedErrorMiddleware:
    """Turns any exception that escapes the app into a 500 problem with a correlation id (module docstring).

    If the response had already started, nothing can be said any more: the error is logged and the
    server, seeing an unfinished response, closes that connection (the only honest end of a truncated
    body)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracked = _TrackingSend(send)
        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            cid = new_correlation_id()
            log.error("unhandled error [correlation id %s] on %s %s%s", cid, scope.get("method"), scope.get("path"),
                      " (response already started)" if tracked.started else "", exc_info=exc)
            if not tracked.started:
                await _send_problem(send, 500, internal_error_body(cid, scope.get("path")), close=False,
                                    headers=((CORRELATION_HEADER.lower().encode(), cid.encode()),))


class CompressionMiddleware(GZipMiddleware):
    """gzip when the client accepts it (Starlette's responder, which compresses large bodies in a worker
    thread); a straight pass-through otherwise, so a client that does not ask pays nothing."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"accept-encoding" and b"gzip" in value:
                    await super().__call__(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """The JSON body limit; ``exempt`` paths (uploads) count their bodies against their own limit."""

    def __init__(self, app: ASGIApp, max_bytes: int, exempt: tuple[str, ...] = ()) -> None:
        self.app, self.max_bytes, self.exempt = app, max_bytes, frozenset(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared, chunked = -1, True  # (servers refuse these; count anyway)
                if declared > limit:
                    await _send_problem(send, 413, self._problem(scope, limit))
                    return
            elif name == b"transfer-encoding":
                chunked = True
        if not chunked and scope.get("http_version", "1.1") in ("1.1", "1.0"):
            # HTTP/1.x without Transfer-Encoding: the body is framed by Content-Length (checked above; the
            # server reads exactly that many bytes) or there is none: nothing to count, no wrappers to pay
            await self.app(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        tracked = _TrackingSend(send)
        try:
            await self.app(scope, limited_receive, tracked)
        except BodyTooLarge:
            if not tracked.started:
                await _send_problem(send, 413, self._problem(scope, limit))

    @staticmethod
    def _problem(scope: Scope, limit: int) -> dict[str, Any]:
        return problem_body(413, "payload-too-large", f"the request body exceeds the limit of {limit} bytes",
                            instance=scope.get("path"), limit=limit)


class PrometheusMiddleware:
    """Counts requests and observes latency per method, route template and status.

    The labelled children are looked up once per (method, route, status) and kept: ``labels()`` takes
    a lock and builds the label tuple on every call, which a status poll would pay each time."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter("glorot_http_requests", "HTTP requests", ["method", "route", "status"],
                                registry=registry)
        self.latency = Histogram("glorot_http_request_duration_seconds", "HTTP request latency",
                                 ["method", "route"], registry=registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "(unmatched)"
            key = (scope["method"], template, status)
            children = self._children.get(key)
            if children is None:
                if len(self._children) > 10_000:  # bounded: templates, methods and statuses are few anyway
                    self._children.clear()
                children = self._children[key] = (self.requests.labels(key[0], template, str(status)),
                                                  self.latency.labels(key[0], template))
            children[0].inc()
            children[1].observe(time.perf_counter() - start)
