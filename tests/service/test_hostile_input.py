"""Hostile and malformed input: every client mistake is a 4xx problem document, never a 500, and an
unexpected server error is a 500 problem with a correlation id that leaves the connection usable.

Bodies are sent as raw bytes: Python's JSON encoder would refuse (or escape) most of them."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient
from service_support import TINY_SPEC, auth, wait_state

from api.app import create_app
from api.json_body import MAX_DEPTH
from api.problems import CORRELATION_HEADER, ProblemResponse
from glorot_core.spec import MAX_SEED
from jobs.settings import Settings

PROBLEM = "application/problem+json"


def post_raw(client: TestClient, key: str, body: bytes) -> httpx.Response:
    return client.post("/v1/experiments", content=body, headers={**auth(key), "content-type": "application/json"})


def problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()  # parses: the document itself is valid JSON whatever the input was
    assert body["status"] == status and body["type"].startswith("urn:glorot:problem:")
    return body


# (raw body, the field path the 422 must name; "" = the body as a whole)
HOSTILE_BODIES: dict[str, tuple[bytes, str]] = {
    "nan-number": (b'{"train": {"lr": NaN}}', "train.lr"),
    "nan-for-a-string": (b'{"name": NaN}', "name"),
    "infinity": (b'{"train": {"lr": Infinity}}', "train.lr"),
    "minus-infinity-in-range": (b'{"data": {"input_range": [-Infinity, 1]}}', "data.input_range.0"),
    "float-overflow": (b'{"data": {"input_range": [-1, 1e999]}}', "data.input_range.1"),
    "lone-surrogate": (b'{"name": "\\ud800"}', "name"),
    "lone-surrogate-in-a-key": (b'{"model": {"\\udfff": 1}}', "model.\ufffd"),
    "invalid-utf8-in-a-string": (b'{"name": "caf\xe9"}', "name"),
    "nested-100000-deep": (b"[" * 100_000, ""),
    "nested-past-the-limit": (b'{"model": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}",
                              "model" + ".0" * (MAX_DEPTH - 1)),
    "int-of-5000-digits": (b'{"train": {"seed": ' + b"9" * 5000 + b"}}", "train.seed"),
    "seed-past-64-bits": (b'{"train": {"seed": ' + str(MAX_SEED + 1).encode() + b"}}", "train.seed"),
    "seed-10e30": (b'{"train": {"seed": ' + str(10**30).encode() + b"}}", "train.seed"),
    "string-for-an-int": (b'{"train": {"steps": "200"}}', "train.steps"),
    "bool-for-an-int": (b'{"train": {"steps": true}}', "train.steps"),
    "nul-character": (b'{"name": "a\\u0000b"}', "name"),
    "not-json": (b"{'name': 1}", ""),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_BODIES))
def test_hostile_bodies_are_422_with_the_field_path(idle_client: TestClient, key: str, case: str) -> None:
    raw, field = HOSTILE_BODIES[case]
    body = problem(post_raw(idle_client, key, raw), 422)
    assert body["type"] == "urn:glorot:problem:validation-error"
    fields = [e["field"] for e in body["errors"]]
    assert field in fields, (case, body["errors"])
    for e in body["errors"]:
        assert e["loc"][0] == "body" and e["message"] and e["code"]


def test_nothing_was_stored_for_rejected_bodies(idle_client: TestClient, key: str) -> None:
    for raw, _ in HOSTILE_BODIES.values():
        post_raw(idle_client, key, raw)
    assert idle_client.get("/v1/jobs", headers=auth(key)).json()["items"] == []
    ok = idle_client.post("/v1/experiments", json={**TINY_SPEC, "name": "café ✓"}, headers=auth(key))
    assert ok.status_code == 202, ok.text  # real non-ASCII text is fine


def test_json_integers_are_accepted_for_floats(idle_client: TestClient, key: str) -> None:
    r = idle_client.post("/v1/experiments", json={**TINY_SPEC, "train": {"steps": 20, "lr": 1, "seed": MAX_SEED}},
                         headers=auth(key))
    assert r.status_code == 202, r.text
    assert r.json()["resolved_spec"]["train"]["lr"] == 1.0


def test_problem_documents_always_render() -> None:
    """An error that echoes unrepresentable input (NaN, a lone surrogate, an object) still renders as JSON."""
    r = ProblemResponse({"detail": "x\ud800", "errors": [{"input": float("nan"), "loc": ["body", "\udcff"]},
                                                        {"input": float("-inf"), "other": object()}]})
    doc = json.loads(r.body)
    assert doc["detail"] == "x\ufffd" and doc["errors"][0]["input"] == "NaN"
    assert doc["errors"][0]["loc"] == ["body", "\ufffd"] and doc["errors"][1]["input"] == "-Infinity"


def test_repeated_single_valued_query_parameters_are_refused(idle_client: TestClient, key: str) -> None:
    body = problem(idle_client.get("/v1/jobs?kind=&kind=x", headers=auth(key)), 422)
    assert body["errors"][0]["loc"] == ["query", "kind"] and body["errors"][0]["code"] == "multiple_values"
    problem(idle_client.get("/v1/jobs?limit=1&limit=2", headers=auth(key)), 422)
    assert idle_client.get("/v1/jobs?kind=experiment&limit=2", headers=auth(key)).status_code == 200


def test_openapi_describes_what_the_routes_enforce(idle_client: TestClient) -> None:
    doc = idle_client.get("/openapi.json").json()
    paths = doc["paths"]
    assert "400" in paths["/v1/jobs"]["get"]["responses"]
    assert "400" in paths["/v1/jobs/{job_id}/metrics"]["get"]["responses"]
    header = next(p for p in paths["/v1/experiments"]["post"]["parameters"] if p["name"] == "Idempotency-Key")
    schema = next(s for s in header["schema"].get("anyOf", [header["schema"]]) if s.get("type") == "string")
    assert schema["maxLength"] == 255 and schema["minLength"] == 1 and schema["pattern"]
    stat = next(p for p in paths["/v1/jobs/{job_id}/metrics"]["get"]["parameters"] if p["name"] == "statistic")
    items = next(s for s in stat["schema"]["anyOf"] if s.get("type") == "array")["items"]
    assert items["maxLength"] == 64 and items["pattern"]


# ------------------------------------------------------------------------------ compression, partial reports


@pytest.fixture
def report_job(client: TestClient, key: str) -> str:
    r = client.post("/v1/experiments", json=TINY_SPEC, headers=auth(key))
    assert r.status_code == 202, r.text
    wait_state(client, key, r.json()["id"], {"SUCCEEDED"})
    return r.json()["id"]


def test_reports_are_gzipped_when_asked_and_can_be_fetched_in_part(client: TestClient, key: str,
                                                                   report_job: str) -> None:
    url = f"/v1/jobs/{report_job}/report"
    plain = client.get(url, headers={**auth(key), "Accept-Encoding": "identity"})
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    full = plain.json()
    zipped = client.get(url, headers={**auth(key), "Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert int(zipped.headers["content-length"]) < len(plain.content) / 2  # repetitive JSON: > 2x
    assert zipped.json() == full  # (httpx decompresses)

    n = len(full["snapshots"])
    part = client.get(url, params={"snapshots": "1:2"}, headers=auth(key)).json()
    assert part["snapshots"] == full["snapshots"][1:2] and part["snapshot_range"] == {"from": 1, "to": 2, "total": n}
    assert part["verdicts"] == full["verdicts"]  # sections not chosen: all of them
    tail = client.get(url, params={"snapshots": "1:"}, headers=auth(key)).json()
    assert tail["snapshots"] == full["snapshots"][1:]
    past = client.get(url, params={"snapshots": f"{n + 5}:"}, headers=auth(key)).json()
    assert past["snapshots"] == [] and past["snapshot_range"] == {"from": n, "to": n, "total": n}

    some = client.get(url, params={"sections": "verdicts,layers"}, headers=auth(key)).json()
    assert set(some) == {"schema_version", "verdicts", "layers"} and some["layers"] == full["layers"]
    both = client.get(url, params={"sections": "verdicts", "snapshots": ":1"}, headers=auth(key)).json()
    assert set(both) == {"schema_version", "verdicts", "snapshots", "snapshot_range"}

    unknown = problem(client.get(url, params={"sections": "verdicts,nope"}, headers=auth(key)), 422)
    assert unknown["errors"][0]["loc"] == ["query", "sections"] and "nope" in unknown["errors"][0]["message"]
    problem(client.get(url, params={"snapshots": "3:1"}, headers=auth(key)), 422)
    problem(client.get(url, params={"snapshots": "a:b"}, headers=auth(key)), 422)


def test_small_responses_are_not_compressed(idle_client: TestClient, key: str) -> None:
    r = idle_client.get("/healthz", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and "content-encoding" not in r.headers
    big = idle_client.get("/openapi.json", headers={"Accept-Encoding": "gzip"})
    assert big.headers["content-encoding"] == "gzip" and big.json()["openapi"]


# ----------------------------------------------------------------------- unexpected errors, real server


def _broken_dependency() -> None:
    raise RuntimeError("a deliberately broken dependency: /secret/path/in/the/message")


@pytest.fixture
def server(settings: Settings) -> Iterator[str]:
    """The app under a real uvicorn on a free port, with two test-only routes: one that fails through
    a broken dependency and one that says which client port (so which connection) it was called on."""
    app: FastAPI = create_app(settings)

    @app.get("/test-only/boom", dependencies=[Depends(_broken_dependency)])
    async def boom() -> dict[str, str]:  # pragma: no cover - the dependency fails first
        return {}

    @app.get("/test-only/port")
    async def port(request: Request) -> dict[str, int]:
        assert request.client is not None
        return {"port": request.client.port}

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    host, port_no = sock.getsockname()
    config = uvicorn.Config(app, log_config=None, lifespan="on", timeout_keep_alive=60)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port_no}"
    finally:
        srv.should_exit = True
        thread.join(30)
        sock.close()


def test_a_500_is_a_problem_with_a_correlation_id_and_keeps_the_connection(
        server: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with httpx.Client(base_url=server, timeout=30) as http:
        first = http.get("/test-only/port").json()["port"]
        r = http.get("/test-only/boom")
        body = problem(r, 500)
        cid = r.headers[CORRELATION_HEADER]
        assert body["type"] == "urn:glorot:problem:internal-error" and body["correlation_id"] == cid
        assert "/secret/path" not in r.text and "RuntimeError" not in r.text  # nothing of the error leaks
        after = http.get("/test-only/port")
        assert after.status_code == 200
        assert after.json()["port"] == first  # the same TCP connection: it survived the 500
        assert http.get("/healthz").status_code == 200
    logged = [rec for rec in caplog.records if cid in rec.getMessage()]
    assert logged and logged[0].exc_info is not None  # the operator's log has the traceback, under that id
    assert not [rec for rec in caplog.records if "Exception in ASGI application" in rec.getMessage()]


# ----------------------------------------------------------------------- a job's unexpected failure


def test_a_failed_job_shows_the_tenant_no_traceback_but_a_correlation_id(
        idle_client: TestClient, key: str, settings: Settings, factory: Any,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import glorot_core.runner
    from worker.execute import execute_job

    def broken(spec: Any, **kw: Any) -> dict[str, Any]:
        raise RuntimeError("failed to open /srv/glorot/secret/weights.bin")

    monkeypatch.setattr(glorot_core.runner, "run_experiment", broken)
    caplog.set_level(logging.INFO)
    job_id = idle_client.post("/v1/experiments", json=TINY_SPEC, headers=auth(key)).json()["id"]
    execute_job(job_id, settings=settings, factory=factory, worker_id="w")
    job = idle_client.get(f"/v1/jobs/{job_id}", headers=auth(key)).json()
    error = job["error"]
    assert job["state"] == "FAILED" and "RuntimeError" in error and "correlation id" in error
    assert "Traceback" not in error and "/srv/glorot" not in error and ".py" not in error and "\n" not in error
    cid = error.split("correlation id ")[1].split(";")[0]
    logged = [rec for rec in caplog.records if cid in rec.getMessage()]
    assert logged and logged[0].exc_info is not None and "/srv/glorot/secret" in str(logged[0].exc_info[1])
