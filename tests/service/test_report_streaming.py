"""Reports are stored serialised in parts and streamed (jobs/reports.py, api/report_parts.py), on SQLite
and PostgreSQL: the streamed bytes are the report's compact JSON exactly, sent in bounded pieces, gzip
applies to the stream, partial reports read and frame only their rows, ETags give 304, and the 0004
migration converts existing reports both ways."""

from __future__ import annotations

import gzip
import json
import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from service_support import auth, create_pg_database, drop_pg_database
from sqlalchemy import select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import Message, Receive, Scope, Send

from glorot_core.json_numbers import json_safe
from glorot_service.app import build_app
from jobs import lifecycle, reports
from jobs.db import create_db_engine, transaction
from jobs.migrate import downgrade, upgrade
from jobs.models import Job, Tenant
from jobs.settings import Settings

#: Largest body message the route may send: one coalesced send plus at most one part.
MAX_SEND = reports.SEND_BYTES + reports.PART_BYTES


def synthetic_report(snapshots: int, values: int, seed: int = 0) -> dict[str, Any]:
    """A report shaped like the engine's (sections, a snapshots list of per-layer statistics), with the
    awkward bits JSON can carry: non-ASCII text, non-finite numbers as strings (``json_safe``), nulls."""
    rng = random.Random(seed)
    return json_safe({
        "schema_version": 1,
        "spec": {"model": {"hidden": [1000] * 5}, "note": "σ'(x) ≈ 1 — Glorot & Bengio"},
        "layers": [{"index": i, "fan_in": 1000} for i in range(1, 6)],
        "snapshots": [{"step": 10 * s, "layers": [{"index": i, "activation": [rng.gauss(0, 1) for _ in range(values)],
                                                   "odd": [math.nan, math.inf, None]} for i in range(1, 6)]}
                      for s in range(snapshots)],
        "end": {"elapsed_s": 1.5, "test_error": 0.1},
        "verdicts": [{"code": "saturation", "layer": 5, "message": "top layer saturates — é"}],
    })


def store_report(factory: sessionmaker[Session], tenant: str, report: dict[str, Any]) -> str:
    """A SUCCEEDED job of ``tenant`` with ``report``, stored by the worker's path (claim, finish)."""
    with transaction(factory) as s:
        tenant_id = s.execute(select(Tenant.id).where(Tenant.name == tenant)).scalar_one()
        job = Job(tenant_id=tenant_id, spec={}, progress={}, cancel_requested=False)
        s.add(job)
        s.flush()
        job_id = job.id
    attempt = lifecycle.claim(factory, job_id, "test-worker")
    assert attempt == 1
    assert lifecycle.finish(factory, job_id, attempt, report, [])
    return job_id


def problem_of(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    return body


class Recorder:
    """The app, recording the size of every response body message it sends."""

    def __init__(self, app: Any) -> None:
        self.app, self.sizes = app, list[int]()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def recording(message: Message) -> None:
            if message["type"] == "http.response.body":
                self.sizes.append(len(message.get("body", b"")))
            await send(message)

        await self.app(scope, receive, recording)


@pytest.fixture
def recorded(settings: Settings) -> Iterator[tuple[TestClient, Recorder]]:
    rec = Recorder(build_app(settings, start_runner=False))
    with TestClient(rec) as c:
        yield c, rec


@pytest.fixture(scope="module")
def big() -> dict[str, Any]:
    return synthetic_report(snapshots=40, values=400)  # ≈1.5 MB: several sends, many parts


def test_full_report_streams_the_stored_json_in_bounded_pieces(
        recorded: tuple[TestClient, Recorder], factory: sessionmaker[Session], key: str, big: dict[str, Any]) -> None:
    client, rec = recorded
    job_id = store_report(factory, "acme", big)
    expected = reports.dumps(big)
    r = client.get(f"/v1/jobs/{job_id}/report", headers={**auth(key), "Accept-Encoding": "identity"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.content == expected  # byte for byte: compact JSON, non-ASCII as UTF-8, non-finite as strings
    assert json.loads(r.content) == big
    assert int(r.headers["content-length"]) == len(expected)
    sizes = [n for n in rec.sizes if n]
    assert len(sizes) >= len(expected) // MAX_SEND and max(sizes) <= MAX_SEND, sizes
    with factory() as s:  # the stored layout describes the bytes the route sent
        layout = reports.layout_of(s, job_id)
    assert layout is not None and layout.size == len(expected) and layout.snapshots == len(big["snapshots"])


def test_etag_and_304(idle_client: TestClient, factory: sessionmaker[Session], key: str,
                      big: dict[str, Any]) -> None:
    client = idle_client
    job_id = store_report(factory, "acme", big)
    url = f"/v1/jobs/{job_id}/report"
    full = client.get(url, headers=auth(key))
    part = client.get(url, params={"sections": "verdicts"}, headers=auth(key))
    assert full.headers["etag"] != part.headers["etag"]
    for r in (full, part):
        again = client.get(url, params=dict(r.request.url.params), headers={**auth(key),
                                                                             "If-None-Match": r.headers["etag"]})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == r.headers["etag"]
    assert client.get(url, headers={**auth(key), "If-None-Match": part.headers["etag"]}).status_code == 200


def test_streamed_report_is_gzipped_when_asked(idle_client: TestClient, factory: sessionmaker[Session], key: str,
                                               big: dict[str, Any]) -> None:
    client = idle_client
    job_id = store_report(factory, "acme", big)
    with client.stream("GET", f"/v1/jobs/{job_id}/report", headers={**auth(key), "Accept-Encoding": "gzip"}) as r:
        assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
        assert "content-length" not in r.headers  # streamed: the compressed size is not known in advance
        raw = b"".join(r.iter_raw())
    assert gzip.decompress(raw) == reports.dumps(big)
    assert len(raw) < len(reports.dumps(big)) / 2  # repetitive JSON of floats: more than 2x


def test_partial_reports_from_parts(idle_client: TestClient, factory: sessionmaker[Session], key: str,
                                    big: dict[str, Any]) -> None:
    client = idle_client
    job_id = store_report(factory, "acme", big)
    url = f"/v1/jobs/{job_id}/report"
    n = len(big["snapshots"])
    part = client.get(url, params={"snapshots": "3:7", "sections": "end"}, headers=auth(key)).json()
    assert part == {"schema_version": 1, "snapshots": big["snapshots"][3:7], "end": big["end"],
                    "snapshot_range": {"from": 3, "to": 7, "total": n}}
    head = client.get(url, params={"snapshots": ":1"}, headers=auth(key)).json()
    assert head == {**big, "snapshots": big["snapshots"][:1], "snapshot_range": {"from": 0, "to": 1, "total": n}}
    assert list(head) == [*big, "snapshot_range"]  # stored order, then the range
    none = client.get(url, params={"snapshots": f"{n}:"}, headers=auth(key)).json()
    assert none["snapshots"] == [] and none["snapshot_range"] == {"from": n, "to": n, "total": n}
    assert client.get(url, params={"sections": "layers,verdicts"}, headers=auth(key)).json() == {
        k: big[k] for k in ("schema_version", "layers", "verdicts")}
    bad = problem_of(client.get(url, params={"sections": "layers,nope"}, headers=auth(key)), 422)
    assert "nope" in bad["errors"][0]["message"]


def test_a_part_reads_only_its_rows_a_batch_per_connection(factory: sessionmaker[Session], key: str,
                                                            big: dict[str, Any]) -> None:
    job_id = store_report(factory, "acme", big)
    engine = factory.kw["bind"]
    opened = 0

    def connect() -> sa.Connection:
        nonlocal opened
        opened += 1
        conn: sa.Connection = engine.connect()
        return conn

    part = list(reports.read_parts(connect, job_id, ["schema_version", "snapshots", "end"], (3, 5)))
    assert [(p.section, p.snapshot) for p in part] == [("schema_version", None), ("snapshots", 3), ("snapshots", 4),
                                                        ("end", None)]  # the SQL filter: nothing else is fetched
    opened = 0
    whole = list(reports.read_parts(connect, job_id))
    assert b"".join(reports.frame(list(big), True, iter(whole))) == reports.dumps(big)
    assert opened == len(whole) // reports.BATCH_PARTS + 1  # a connection per batch, none held in between


def test_other_tenants_and_unfinished_jobs(idle_client: TestClient, factory: sessionmaker[Session], key: str,
                                           other_key: str, big: dict[str, Any]) -> None:
    client = idle_client
    job_id = store_report(factory, "acme", big)
    problem_of(client.get(f"/v1/jobs/{job_id}/report", headers=auth(other_key)), 404)
    with transaction(factory) as s:
        tenant_id = s.execute(select(Tenant.id).where(Tenant.name == "acme")).scalar_one()
        queued = Job(tenant_id=tenant_id, spec={}, progress={}, cancel_requested=False)
        s.add(queued)
        s.flush()
        queued_id = queued.id
    problem_of(client.get(f"/v1/jobs/{queued_id}/report", headers=auth(key)), 409)


# -------------------------------------------------------------------------------- migration 0004


@pytest.fixture(params=["sqlite", "postgres"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.sqlite3'}"
        return
    url = create_pg_database("glorot_rep")
    try:
        yield url
    finally:
        drop_pg_database(url)


def test_migration_converts_existing_reports_both_ways(empty_db: str) -> None:
    upgrade(empty_db, "0003")
    report = synthetic_report(snapshots=3, values=20_000)  # a snapshot larger than a part: split and rejoined
    json_type = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    tenants = sa.table("tenants", sa.column("id", sa.Integer()), sa.column("name", sa.String()),
                       sa.column("created_at", sa.DateTime(timezone=True)))
    jobs = sa.table("jobs", *(sa.column(c) for c in ("id", "tenant_id", "kind", "state", "attempt", "cancel_requested",
                                                      "created_at")),
                    sa.column("progress", json_type), sa.column("spec", json_type))
    table = sa.table("reports", sa.column("job_id", sa.String()), sa.column("attempt", sa.Integer()),
                     sa.column("body", json_type), sa.column("created_at", sa.DateTime(timezone=True)))
    now = datetime.now(UTC)
    engine = create_db_engine(empty_db)
    try:
        with engine.begin() as conn:
            conn.execute(tenants.insert().values(id=1, name="old", created_at=now))
            conn.execute(jobs.insert().values(id="j-old", tenant_id=1, kind="experiment", state="SUCCEEDED", attempt=1,
                                              cancel_requested=False, created_at=now, progress={}, spec={}))
            conn.execute(table.insert().values(job_id="j-old", attempt=1, body=report, created_at=now))
    finally:
        engine.dispose()

    upgrade(empty_db)
    engine = create_db_engine(empty_db)
    try:
        with Session(engine) as s:
            layout = reports.layout_of(s, "j-old")
            assert reports.load(s, "j-old") == report
    finally:
        engine.dispose()
    assert layout is not None and layout.size == len(reports.dumps(report)) and layout.snapshots == 3

    downgrade(empty_db, "0003")
    engine = create_db_engine(empty_db)
    try:
        with engine.connect() as conn:
            assert conn.execute(select(table.c.body).where(table.c.job_id == "j-old")).scalar_one() == report
    finally:
        engine.dispose()
