"""A small typed client of the glorot REST API (httpx), used by ``glorot submit/status/report``.

    from api.client import GlorotClient
    with GlorotClient("http://127.0.0.1:8000", api_key) as c:
        job = c.submit({"model": {"hidden": [100, 100]}, "train": {"steps": 1000}})
        job = c.wait(job["id"])
        report = c.report(job["id"])

Errors come back as :class:`GlorotAPIError` carrying the RFC 9457 problem document.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
DEFAULT_URL = "http://127.0.0.1:8000"


class GlorotAPIError(Exception):
    """An error answer; ``problem`` is the problem+json body (or a minimal one for non-JSON answers)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status, self.problem = status, problem
        detail = problem.get("detail") or problem.get("title") or "error"
        lines = [f"HTTP {status}: {detail}"]
        lines += [f"  {e.get('field') or '.'.join(map(str, e.get('loc', [])))}: {e.get('message')}"
                  for e in problem.get("errors", [])]
        if status == 401:  # say where the key comes from: the commonest newcomer mistake is an unset variable
            lines.append("  the API key is read from $GLOROT_API_KEY (or --api-key / api_key=): "
                         "export GLOROT_API_KEY=<a key from `glorot keys create`>")
        super().__init__("\n".join(lines))


class GlorotClient:
    """Typed access to /v1. ``base_url`` and ``api_key`` default to $GLOROT_URL and $GLOROT_API_KEY."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        base_url = base_url or os.environ.get("GLOROT_URL", DEFAULT_URL)
        api_key = api_key or os.environ.get("GLOROT_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> GlorotClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        r = self._http.request(method, path, **kw)
        if r.status_code >= 400:
            try:
                problem = r.json()
            except ValueError:
                problem = {"title": r.reason_phrase, "detail": r.text[:500]}
            raise GlorotAPIError(r.status_code, problem if isinstance(problem, dict) else {"detail": str(problem)})
        return r

    def submit(self, spec: dict[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
        """POST /v1/experiments → the QUEUED job (or the original one for a repeated idempotency key)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._call("POST", "/v1/experiments", json=spec, headers=headers).json()

    def job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/jobs/{job_id}").json()

    def jobs(self, *, state: str | None = None, kind: str | None = None, limit: int | None = None,
             cursor: str | None = None) -> dict[str, Any]:
        params = {k: v for k, v in {"state": state, "kind": kind, "limit": limit, "cursor": cursor}.items() if v}
        return self._call("GET", "/v1/jobs", params=params).json()

    def iter_jobs(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every job matching ``filters``, following the cursors."""
        return _every_item(self.jobs, filters)

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/jobs/{job_id}/cancel").json()

    def report(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/jobs/{job_id}/report").json()

    def report_html(self, job_id: str, *, figures: str = "svg") -> str:
        """GET /v1/jobs/{id}/report.html: the report as a self-contained HTML page (figures embedded)."""
        return self._call("GET", f"/v1/jobs/{job_id}/report.html", params={"figures": figures}).text

    def compare(self, jobs: list[str], *, snapshot: str = "init") -> dict[str, Any]:
        """GET /v1/compare: per-layer statistics of ``jobs`` side by side, differences from the first."""
        return self._call("GET", "/v1/compare", params={"jobs": ",".join(jobs), "snapshot": snapshot}).json()

    def compare_figure(self, jobs: list[str], name: str, *, fmt: str = "png", snapshot: str = "init") -> bytes:
        """GET /v1/compare/figures/{name}.{fmt}: an overlay figure of ``jobs``."""
        return self._call("GET", f"/v1/compare/figures/{name}.{fmt}",
                          params={"jobs": ",".join(jobs), "snapshot": snapshot}).content

    def metrics(self, job_id: str, *, layer: list[int] | None = None, statistic: list[str] | None = None,
                limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"layer": layer or [], "statistic": statistic or []}
        if limit:
            params["limit"] = limit
        if cursor:
            params["cursor"] = cursor
        return self._call("GET", f"/v1/jobs/{job_id}/metrics", params=params).json()

    def wait(self, job_id: str, *, poll_s: float = 1.0, timeout_s: float | None = None,
             on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll until the job is terminal (or ``timeout_s`` passes: TimeoutError); returns the last job JSON."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self.job(job_id)
            if on_update is not None:
                on_update(job)
            if job["state"] in TERMINAL:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout_s} s")
            time.sleep(poll_s)

    # ------------------------------------------------------------------------------- suites (docs/suites.md)

    def submit_suite(self, body: dict[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
        """POST /v1/suites → the suite with its children's job ids (or the original for a repeated key)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._call("POST", "/v1/suites", json=body, headers=headers).json()

    def suites(self, *, state: str | None = None, limit: int | None = None,
               cursor: str | None = None) -> dict[str, Any]:
        """GET /v1/suites: a page of suites, newest first (``items``, ``next_cursor``)."""
        params = {k: v for k, v in {"state": state, "limit": limit, "cursor": cursor}.items() if v}
        return self._call("GET", "/v1/suites", params=params).json()

    def iter_suites(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every suite matching ``filters`` (``state``, ``limit`` per page), following the cursors."""
        return _every_item(self.suites, filters)

    def suite(self, suite_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/suites/{suite_id}").json()

    def suite_report(self, suite_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/suites/{suite_id}/report").json()

    def cancel_suite(self, suite_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/suites/{suite_id}/cancel").json()

    def suite_figure(self, suite_id: str, name: str = "test_error", fmt: str = "png") -> bytes:
        return self._call("GET", f"/v1/suites/{suite_id}/figures/{name}.{fmt}").content

    def wait_suite(self, suite_id: str, *, poll_s: float = 2.0, timeout_s: float | None = None,
                   on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll until every child of the suite has ended (or ``timeout_s`` passes: TimeoutError)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            suite = self.suite(suite_id)
            if on_update is not None:
                on_update(suite)
            if suite["complete"]:
                return suite
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"suite {suite_id} still {suite['state']} after {timeout_s} s")
            time.sleep(poll_s)

    # ------------------------------------------------------------------------------ uploads (docs/uploads.md)

    def upload_model(self, path: str | os.PathLike[str], metadata: dict[str, Any]) -> dict[str, Any]:
        """POST /v1/models: the file (streamed from disk) and its metadata → the model with its probe points."""
        with open(path, "rb") as f:
            return self._call("POST", "/v1/models", files={"file": (os.path.basename(path), f)},
                              data={"metadata": json.dumps(metadata)}).json()

    def models(self, *, limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
        params = {k: v for k, v in {"limit": limit, "cursor": cursor}.items() if v}
        return self._call("GET", "/v1/models", params=params).json()

    def model(self, model_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/models/{model_id}").json()

    def delete_model(self, model_id: str) -> None:
        self._call("DELETE", f"/v1/models/{model_id}")

    def upload_data(self, path: str | os.PathLike[str], *, name: str | None = None) -> dict[str, Any]:
        """POST /v1/data: an .npz of probe inputs (and optional labels) → its id, examples and arrays."""
        with open(path, "rb") as f:
            data = {"metadata": json.dumps({"name": name})} if name else {}
            return self._call("POST", "/v1/data", files={"file": (os.path.basename(path), f)}, data=data).json()


def _every_item(fetch: Callable[..., dict[str, Any]], filters: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The items of every page of a list: ``fetch(cursor=…, **filters)`` until a page has no next_cursor."""
    cursor = None
    while True:
        page = fetch(cursor=cursor, **filters)
        yield from page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return
