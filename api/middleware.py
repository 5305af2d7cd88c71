"""Pure ASGI middleware: a request-body size limit counted while streaming, and Prometheus metrics.

Pure ASGI (not ``BaseHTTPMiddleware``) keeps per-request overhead small, which the status-polling
benchmark measures.

Body limit (PITFALLS: Starlette has none, and a Content-Length check alone is bypassed by chunked
bodies): a declared Content-Length above the limit is refused before reading; a chunked body (or any
body not framed by HTTP/1.x Content-Length) is counted as it arrives and the request fails with 413
the moment the count passes the limit. A body framed by Content-Length needs no counting (the server
reads exactly that many bytes), so a GET pays one scan of its headers and nothing else.
"""

from __future__ import annotations

import json
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import PROBLEM_JSON, problem_body


class BodyTooLarge(Exception):
    """Raised from ``receive`` when a streamed body passes the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body larger than {limit} bytes")
        self.limit = limit


async def _send_problem(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(data)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": data})


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
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
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
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
