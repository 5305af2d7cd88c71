"""The v1 API through FastAPI's TestClient against a real database (SQLite and PostgreSQL), with the
embedded local runner executing jobs (thread isolation here; test_serve.py covers the real server
with process isolation)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_support import (
    LONG_SPEC,
    TINY_SPEC,
    auth,
    check_design_report,
    make_settings,
    new_key,
    wait_for,
    wait_state,
)
from sqlalchemy.orm import Session, sessionmaker

from glorot_service.app import build_app
from jobs.settings import Settings

PROBLEM = "application/problem+json"


def submit(client: TestClient, key: str, spec: dict[str, Any] | None = None, **headers: str) -> Any:
    return client.post("/v1/experiments", json=spec or TINY_SPEC, headers={**auth(key), **headers})


def assert_problem(r: Any, status: int, slug: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM), r.headers
    body = r.json()
    assert body["status"] == status and body["title"] and body["detail"]
    assert body["type"].startswith("urn:glorot:problem:")
    if slug:
        assert body["type"] == f"urn:glorot:problem:{slug}", body
    return body


# ------------------------------------------------------------------------------------------ auth


def test_no_key_is_401_problem(idle_client: TestClient) -> None:
    r = idle_client.get("/v1/jobs")
    assert_problem(r, 401, "unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert_problem(idle_client.post("/v1/experiments", json=TINY_SPEC), 401)
    assert_problem(idle_client.get("/v1/jobs/x", headers={"Authorization": "Bearer glk_nope"}), 401)
    assert_problem(idle_client.get("/v1/jobs/x", headers={"Authorization": "Basic abc"}), 401)


def test_unknown_job_is_404(idle_client: TestClient, key: str) -> None:
    for path in ("/v1/jobs/nope", "/v1/jobs/nope/report", "/v1/jobs/nope/metrics"):
        assert_problem(idle_client.get(path, headers=auth(key)), 404, "job-not-found")
    assert_problem(idle_client.post("/v1/jobs/nope/cancel", headers=auth(key)), 404)


def test_another_tenants_job_is_404(idle_client: TestClient, key: str, other_key: str) -> None:
    job_id = submit(idle_client, key).json()["id"]
    assert idle_client.get(f"/v1/jobs/{job_id}", headers=auth(key)).status_code == 200
    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/report", f"/v1/jobs/{job_id}/metrics"):
        assert_problem(idle_client.get(path, headers=auth(other_key)), 404, "job-not-found")
    assert_problem(idle_client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(other_key)), 404)
    assert idle_client.get("/v1/jobs", headers=auth(other_key)).json()["items"] == []


# ------------------------------------------------------------------------------------ validation


def test_invalid_spec_is_422_with_field_paths(idle_client: TestClient, key: str) -> None:
    bad = {"model": {"hidden": [16, 0], "activation": "nope"}, "train": {"lr": -1}, "extra": 1}
    body = assert_problem(submit(idle_client, key, bad), 422, "validation-error")
    fields = {e["field"] for e in body["errors"]}
    assert {"model.hidden.1", "model.activation", "train.lr", "extra"} <= fields, fields
    hidden = next(e for e in body["errors"] if e["field"] == "model.hidden.1")
    assert hidden["loc"] == ["body", "model", "hidden", 1]
    assert hidden["pointer"] == "/model/hidden/1"
    assert hidden["message"] and hidden["code"]


def test_cross_field_and_cap_errors_point_at_the_field(db_url: str, tmp_path: Any, factory: Any) -> None:
    settings = make_settings(db_url, tmp_path, max_parameters=10_000)
    k = new_key(factory, settings)
    with TestClient(build_app(settings, start_runner=False)) as c:
        body = assert_problem(submit(c, k, {"model": {"hidden": [100, 100], "input_dim": 10}}), 422)
    fields = {e["field"] for e in body["errors"]}
    assert {"model.hidden", "model.input_dim"} <= fields, body


def test_malformed_bodies_are_problems_not_500(idle_client: TestClient, key: str) -> None:
    h = {**auth(key), "content-type": "application/json"}
    assert_problem(idle_client.post("/v1/experiments", content=b"{not json", headers=h), 422)
    assert_problem(idle_client.post("/v1/experiments", content=b"[1, 2]", headers=h), 422)
    assert_problem(idle_client.post("/v1/experiments", content=b'"x"', headers=h), 422)
    assert_problem(idle_client.post("/v1/experiments", content=b"\xff\xfe", headers=h), 422)
    assert_problem(idle_client.get("/v1/jobs?state=BOGUS", headers=auth(key)), 422)
    assert_problem(idle_client.get("/v1/jobs?limit=0", headers=auth(key)), 422)
    assert_problem(idle_client.get("/v1/jobs?cursor=garbage", headers=auth(key)), 400, "invalid-cursor")
    assert_problem(submit(idle_client, key, TINY_SPEC, **{"Idempotency-Key": "x" * 300}), 422)
    # NUL characters cannot reach PostgreSQL (JSONB and text refuse them): 422 / 404, never a 500
    nul = assert_problem(submit(idle_client, key, {**TINY_SPEC, "name": "a\u0000b"}), 422)
    assert nul["errors"][0]["field"] == "name"
    assert_problem(idle_client.get("/v1/jobs/%00", headers=auth(key)), 404)
    assert_problem(idle_client.get("/v1/jobs?kind=a%00", headers=auth(key)), 422)
    job_id = submit(idle_client, key).json()["id"]
    assert_problem(idle_client.get(f"/v1/jobs/{job_id}/metrics?statistic=a%00", headers=auth(key)), 422)
    assert_problem(idle_client.get("/nowhere"), 404)
    assert_problem(idle_client.delete("/v1/jobs"), 405)


def test_body_limit_counts_streamed_bytes(db_url: str, tmp_path: Any, factory: Any) -> None:
    settings = make_settings(db_url, tmp_path, max_body_bytes=2048)
    k = new_key(factory, settings)
    big = json.dumps({**TINY_SPEC, "name": "x" * 5000}).encode()
    with TestClient(build_app(settings, start_runner=False)) as c:
        h = {**auth(k), "content-type": "application/json"}
        assert_problem(c.post("/v1/experiments", content=big, headers=h), 413, "payload-too-large")

        def chunks() -> Any:  # no Content-Length: a chunked body must be counted too
            for i in range(0, len(big), 512):
                yield big[i:i + 512]

        assert_problem(c.post("/v1/experiments", content=chunks(), headers=h), 413, "payload-too-large")
        assert submit(c, k).status_code == 202


# ------------------------------------------------------------------------------- submit and poll


def test_submit_runs_to_succeeded_with_a_design_report(client: TestClient, key: str) -> None:
    r = submit(client, key)
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["state"] in {"QUEUED", "RUNNING"} and job["spec"] == TINY_SPEC
    assert job["resolved_spec"]["train"]["batch_size"] == 10  # defaults filled in
    seen = set()
    job = wait_for(lambda: client.get(f"/v1/jobs/{job['id']}", headers=auth(key)).json(),
                   lambda j: seen.add(j["state"]) or j["state"] in {"SUCCEEDED", "FAILED", "CANCELLED"})
    assert job["state"] == "SUCCEEDED", job["error"]
    assert job["attempt"] == 1 and job["progress"]["fraction"] == 1.0 and job["progress"]["phase"] == "done"
    assert job["started_at"] and job["finished_at"] and job["error"] is None
    report = client.get(f"/v1/jobs/{job['id']}/report", headers=auth(key)).json()
    check_design_report(report, TINY_SPEC)

    m = client.get(f"/v1/jobs/{job['id']}/metrics", headers=auth(key),
                   params={"layer": [1], "statistic": ["activation.std"]}).json()
    assert m["state"] == "SUCCEEDED" and len(m["series"]) == 1
    assert [p[0] for p in m["series"][0]["points"]] == [0, 10, 20]
    first = report["snapshots"][0]["layers"][0]["activation"]["std"]
    assert m["series"][0]["points"][0][1] == pytest.approx(first)
    whole = client.get(f"/v1/jobs/{job['id']}/metrics", headers=auth(key), params={"layer": 0}).json()
    assert "test_error" in {s["statistic"] for s in whole["series"]}
    # capped and paged: 2 points a page, following cursors gives everything once
    pages, cursor, points = 0, None, []
    while True:
        params: dict[str, Any] = {"layer": [1, 2], "statistic": ["activation.mean"], "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get(f"/v1/jobs/{job['id']}/metrics", headers=auth(key), params=params).json()
        pages += 1
        points += [(s["layer"], p[0]) for s in page["series"] for p in s["points"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert points == [(1, 0), (1, 10), (1, 20), (2, 0), (2, 10), (2, 20)] and pages == 3


def test_report_before_the_end_is_409(idle_client: TestClient, key: str) -> None:
    job_id = submit(idle_client, key).json()["id"]
    body = assert_problem(idle_client.get(f"/v1/jobs/{job_id}/report", headers=auth(key)), 409, "report-not-ready")
    assert body["state"] == "QUEUED"
    m = idle_client.get(f"/v1/jobs/{job_id}/metrics", headers=auth(key)).json()
    assert m["series"] == [] and m["state"] == "QUEUED"


def test_diverging_job_succeeds_with_a_diverged_verdict(client: TestClient, key: str) -> None:
    spec = copy.deepcopy(TINY_SPEC)
    # sigmoid saturates rather than diverges at lr 1e3 (bounded units); relu + He init blows up
    spec["model"].update(activation="relu", init="he")
    spec["train"] = {"steps": 400, "lr": 1000.0}
    spec["diagnostics"]["every"] = 200
    job = wait_state(client, key, submit(client, key, spec).json()["id"], {"SUCCEEDED", "FAILED", "CANCELLED"})
    assert job["state"] == "SUCCEEDED", job["error"]
    report = client.get(f"/v1/jobs/{job['id']}/report", headers=auth(key)).json()
    assert "diverged" in {v["code"] for v in report["verdicts"]}, report["verdicts"]
    assert report["end"]["diverged"] is True


def test_failing_job_is_failed_with_its_error(client: TestClient, key: str, tmp_path: Any) -> None:
    spec = {**TINY_SPEC, "model": {"hidden": [16], "input_dim": 784, "num_classes": 10},
            "data": {"dataset": "mnist", "root": "no-mnist-here", "test_examples": 100}}
    job = wait_state(client, key, submit(client, key, spec).json()["id"], {"SUCCEEDED", "FAILED", "CANCELLED"})
    assert job["state"] == "FAILED" and job["error"] and "DataUnavailable" in job["error"], job["error"]
    assert_problem(client.get(f"/v1/jobs/{job['id']}/report", headers=auth(key)), 409)
    assert_problem(client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(key)), 409, "job-terminal")


# ------------------------------------------------------------------------------------ idempotency


def test_idempotency_key(idle_client: TestClient, key: str, other_key: str) -> None:
    r1 = submit(idle_client, key, TINY_SPEC, **{"Idempotency-Key": "abc-1"})
    assert r1.status_code == 202 and "idempotent-replayed" not in r1.headers
    # same body, other formatting and key order → the same job
    reordered = json.dumps(dict(reversed(list(TINY_SPEC.items()))), indent=3)
    r2 = idle_client.post("/v1/experiments", content=reordered,
                          headers={**auth(key), "Idempotency-Key": "abc-1", "content-type": "application/json"})
    assert r2.status_code == 202 and r2.json()["id"] == r1.json()["id"]
    assert r2.headers["idempotent-replayed"] == "true" and r2.headers["location"] == r1.headers["location"]
    # same key, another body → 422
    other = {**TINY_SPEC, "name": "other"}
    body = assert_problem(submit(idle_client, key, other, **{"Idempotency-Key": "abc-1"}), 422,
                          "idempotency-key-reused")
    assert body["job_id"] == r1.json()["id"]
    # keys are scoped by tenant
    r3 = submit(idle_client, other_key, TINY_SPEC, **{"Idempotency-Key": "abc-1"})
    assert r3.status_code == 202 and r3.json()["id"] != r1.json()["id"]
    assert len(idle_client.get("/v1/jobs", headers=auth(key)).json()["items"]) == 1


# ----------------------------------------------------------------------------------------- cancel


def test_cancel_queued_job(idle_client: TestClient, key: str) -> None:
    job_id = submit(idle_client, key).json()["id"]
    r = idle_client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(key))
    assert r.status_code == 202 and r.json()["state"] == "CANCELLED" and r.json()["cancel_requested"]
    assert_problem(idle_client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(key)), 409, "job-terminal")


def test_cancel_running_job_frees_the_runner(client: TestClient, key: str) -> None:
    job_id = submit(client, key, LONG_SPEC).json()["id"]
    wait_for(lambda: client.get(f"/v1/jobs/{job_id}", headers=auth(key)).json(),
             lambda j: j["state"] == "RUNNING" and j["progress"]["step"] > 0)
    r = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(key))
    assert r.status_code == 202 and r.json()["cancel_requested"] is True
    job = wait_state(client, key, job_id, {"SUCCEEDED", "FAILED", "CANCELLED"}, timeout=30)
    assert job["state"] == "CANCELLED" and job["finished_at"]
    assert job["progress"]["step"] < LONG_SPEC["train"]["steps"]
    # the runner (one slot) is free again: the next job runs to the end
    nxt = wait_state(client, key, submit(client, key).json()["id"], {"SUCCEEDED", "FAILED", "CANCELLED"})
    assert nxt["state"] == "SUCCEEDED", nxt["error"]
    assert_problem(client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(key)), 409)


# ------------------------------------------------------------------------- polling cache (api/jobcache.py)


def _write_as_another_process(factory: sessionmaker[Session], job_id: str, **values: Any) -> None:
    """A write the API process does not make itself (a worker's claim or progress), straight to the row."""
    from sqlalchemy import update

    from jobs.db import transaction
    from jobs.models import Job

    with transaction(factory) as s:
        s.execute(update(Job).where(Job.id == job_id).values(**values))


def test_poll_body_is_the_job_model_and_carries_an_etag(idle_client: TestClient, key: str,
                                                        factory: sessionmaker[Session]) -> None:
    from api.schemas import JobOut
    from api.services import get_job
    from jobs.models import Job

    submitted = submit(idle_client, key).json()
    r = idle_client.get(f"/v1/jobs/{submitted['id']}", headers=auth(key))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    with factory() as s:
        job = s.get(Job, submitted["id"])
        assert job is not None
        expected = JobOut.of(get_job(s, job.tenant_id, job.id)).model_dump(mode="json")
    assert r.json() == expected == submitted  # the REST contract: the same fields as the response model
    etag = r.headers["etag"]
    assert etag.startswith('"') and "no-cache" in r.headers["cache-control"]
    again = idle_client.get(f"/v1/jobs/{submitted['id']}", headers={**auth(key), "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    weak = idle_client.get(f"/v1/jobs/{submitted['id']}", headers={**auth(key), "If-None-Match": f'"x", W/{etag}'})
    assert weak.status_code == 304
    other = idle_client.get(f"/v1/jobs/{submitted['id']}", headers={**auth(key), "If-None-Match": '"nope"'})
    assert other.status_code == 200 and other.json() == expected


def test_poll_cache_cancel_is_visible_at_once(db_url: str, tmp_path: Any, factory: Any) -> None:
    settings = make_settings(db_url, tmp_path, job_cache_ttl_s=5)  # long TTL: only invalidation can explain it
    k = new_key(factory, settings)
    with TestClient(build_app(settings, start_runner=False)) as c:
        job_id = submit(c, k).json()["id"]
        first = c.get(f"/v1/jobs/{job_id}", headers=auth(k))
        assert first.json()["state"] == "QUEUED"
        assert c.post(f"/v1/jobs/{job_id}/cancel", headers=auth(k)).status_code == 202
        after = c.get(f"/v1/jobs/{job_id}", headers=auth(k))
        assert after.json()["state"] == "CANCELLED" and after.json()["cancel_requested"] is True
        assert after.headers["etag"] != first.headers["etag"]
        # a refused cancel (409: terminal) leaves the job readable and right
        assert_problem(c.post(f"/v1/jobs/{job_id}/cancel", headers=auth(k)), 409, "job-terminal")
        assert c.get(f"/v1/jobs/{job_id}", headers=auth(k)).json()["state"] == "CANCELLED"


def test_poll_cache_another_process_write_is_visible_within_the_ttl(db_url: str, tmp_path: Any,
                                                                    factory: Any) -> None:
    import time

    ttl = 2.0
    settings = make_settings(db_url, tmp_path, job_cache_ttl_s=ttl)
    k = new_key(factory, settings)
    with TestClient(build_app(settings, start_runner=False)) as c:
        job_id = submit(c, k).json()["id"]
        cached = time.monotonic()  # the entry is stored after this instant: it lives at least until cached + ttl
        assert c.get(f"/v1/jobs/{job_id}", headers=auth(k)).json()["state"] == "QUEUED"
        written = time.monotonic()
        _write_as_another_process(factory, job_id, state="RUNNING", attempt=1,
                                  progress={"fraction": 0.5, "step": 10, "total_steps": 20, "phase": "train",
                                            "message": ""})
        stale = c.get(f"/v1/jobs/{job_id}", headers=auth(k)).json()
        if time.monotonic() - cached < ttl:  # (always, unless this machine stalled for seconds)
            assert stale["state"] == "QUEUED", "served from the process's cache within the TTL"
        time.sleep(max(0.0, written + ttl + 0.05 - time.monotonic()))
        fresh = c.get(f"/v1/jobs/{job_id}", headers=auth(k)).json()
        assert fresh["state"] == "RUNNING" and fresh["attempt"] == 1 and fresh["progress"]["step"] == 10


def test_poll_cache_never_crosses_tenants(db_url: str, tmp_path: Any, factory: Any) -> None:
    settings = make_settings(db_url, tmp_path, job_cache_ttl_s=5)
    k, other = new_key(factory, settings), new_key(factory, settings)
    with TestClient(build_app(settings, start_runner=False)) as c:
        job_id = submit(c, k).json()["id"]
        for _ in range(2):  # the second owner read is a cache hit
            assert c.get(f"/v1/jobs/{job_id}", headers=auth(k)).status_code == 200
        for _ in range(2):
            assert_problem(c.get(f"/v1/jobs/{job_id}", headers=auth(other)), 404, "job-not-found")
        assert_problem(c.post(f"/v1/jobs/{job_id}/cancel", headers=auth(other)), 404)
        # the other tenant's failed cancel did not touch the owner's job
        assert c.get(f"/v1/jobs/{job_id}", headers=auth(k)).json()["state"] == "QUEUED"
        assert_problem(c.get("/v1/jobs/" + "a" * 36, headers=auth(k)), 404, "job-not-found")


def test_job_cache_loads_once_and_drops_loads_that_straddle_a_write() -> None:
    import asyncio

    from api.jobcache import JobCache, make_entry

    async def scenario() -> None:
        cache = JobCache(ttl_s=10)
        calls = 0
        gate = asyncio.Event()

        async def load() -> Any:
            nonlocal calls
            calls += 1
            n = calls
            await gate.wait()
            return make_entry(b'{"n":%d}' % n)

        waiters = [asyncio.ensure_future(cache.get(1, "j", load)) for _ in range(5)]
        await asyncio.sleep(0)
        gate.set()
        assert {(await w).body for w in waiters} == {b'{"n":1}'} and calls == 1  # concurrent misses share a load
        assert (await cache.get(1, "j", load)).body == b'{"n":1}' and calls == 1  # then a hit
        assert (await cache.get(2, "j", load)).body == b'{"n":2}'  # another tenant: its own entry
        gate.clear()
        cache.invalidate(1, "j")
        straddling = asyncio.ensure_future(cache.get(1, "j", load))
        await asyncio.sleep(0)
        cache.invalidate(1, "j")  # a write while the load is in flight
        late = asyncio.ensure_future(cache.get(1, "j", load))  # must not join the load that predates the write
        await asyncio.sleep(0)
        gate.set()
        first, second = (await straddling).body, (await late).body
        assert first != second and calls == 4
        assert (await cache.get(1, "j", load)).body == second and calls == 4  # only the later load was stored

        async def failing() -> Any:
            raise RuntimeError("db down")

        with pytest.raises(RuntimeError):
            await cache.get(3, "j", failing)
        assert (await cache.get(3, "j", load)).body == b'{"n":5}'  # failures are not cached

    asyncio.run(scenario())


# ------------------------------------------------------------------------------------- pagination


def test_list_filters_and_opaque_cursors(idle_client: TestClient, key: str, other_key: str) -> None:
    ids = [submit(idle_client, key).json()["id"] for _ in range(5)]
    idle_client.post(f"/v1/jobs/{ids[0]}/cancel", headers=auth(key))
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = idle_client.get("/v1/jobs", headers=auth(key), params=params).json()
        assert len(page["items"]) <= 2
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))  # newest first, each once
    queued = idle_client.get("/v1/jobs", headers=auth(key), params={"state": "QUEUED"}).json()["items"]
    assert {j["id"] for j in queued} == set(ids[1:])
    first = idle_client.get("/v1/jobs", headers=auth(key), params={"limit": 2}).json()["next_cursor"]
    # a cursor grants nothing: another tenant, other filters, or an edited token are refused
    assert_problem(idle_client.get("/v1/jobs", headers=auth(other_key), params={"cursor": first}), 400)
    assert_problem(idle_client.get("/v1/jobs", headers=auth(key), params={"cursor": first, "state": "QUEUED"}), 400)
    assert_problem(idle_client.get("/v1/jobs", headers=auth(key), params={"cursor": first[:-2] + "AA"}), 400)


# ------------------------------------------------------------------------------------ operations


def test_health_ready_metrics_and_docs(client: TestClient, key: str) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "local_runner": "ok"}
    submit(client, key, {**TINY_SPEC, "train": {"steps": 0}})
    text = client.get("/metrics").text
    assert "glorot_http_requests_total" in text and 'glorot_jobs{state="' in text
    assert 'route="/v1/experiments"' in text
    spec = client.get("/openapi.json").json()
    assert "ExperimentSpec" in spec["components"]["schemas"] and "/v1/jobs/{job_id}/report" in spec["paths"]
    assert client.get("/docs").status_code == 200


def test_readyz_fails_when_the_broker_is_down(db_url: str, tmp_path: Any, factory: Any) -> None:
    settings = make_settings(db_url, tmp_path, broker_url="redis://127.0.0.1:1/0")
    with TestClient(build_app(settings)) as c:
        r = c.get("/readyz")
    body = assert_problem(r, 503, "not-ready")
    assert body["checks"]["database"] == "ok" and body["checks"]["broker"].startswith("error")


def test_key_cache_and_settings(settings: Settings, factory: sessionmaker[Session]) -> None:
    """Keys are stored only as HMACs: the raw key appears nowhere in the table."""
    from sqlalchemy import select

    from jobs.models import ApiKey

    k = new_key(factory, settings)
    with factory() as s:
        rows = s.execute(select(ApiKey.key_hash, ApiKey.prefix)).all()
    assert all(k not in (h, p) for h, p in rows) and any(k.startswith(p) for _, p in rows)



def test_metrics_filters_out_of_range_are_422_not_500(idle_client: TestClient, key: str) -> None:
    """Found by schemathesis: a layer filter beyond SQLite's 64-bit INTEGER raised OverflowError (500)."""
    job_id = submit(idle_client, key).json()["id"]
    for query in ("layer=-364615668699027833782009856", "layer=-1", "layer=99999999999", "statistic=" + "x" * 65):
        r = idle_client.get(f"/v1/jobs/{job_id}/metrics?{query}", headers=auth(key))
        assert_problem(r, 422)
