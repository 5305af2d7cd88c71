"""Metric series streamed while a job runs (worker.watcher), on both databases: they grow
during the run, writes are fenced by the attempt, a re-run never mixes its points with a dead
attempt's, and a SUCCEEDED job ends with exactly its report's rows."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_support import auth, wait_for, wait_state
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from test_execute import FAKE_REPORT, ROWS, make_job, reap_stale_jobs, row

from glorot_core.report import metric_rows
from jobs import lifecycle, reports
from jobs.db import transaction
from jobs.lifecycle import claim as claim_job
from jobs.lifecycle import finish as store_results
from jobs.models import Job, MetricPoint, MetricSeries, utcnow
from jobs.settings import Settings
from worker.execute import execute_job
from worker.watcher import Watcher as _Watcher

#: Many small snapshots, far more steps than a test waits for: cancelled while RUNNING.
STREAM_SPEC: dict[str, Any] = {
    "model": {"hidden": [16, 16]},
    "train": {"steps": 95_000},  # 1,901 snapshots: under the spec's cap of 2,000
    "diagnostics": {"every": 50, "monitor_examples": 20, "jacobian": {"mode": "off"}},
    "data": {"test_examples": 50},
}
#: Runs to SUCCEEDED in a second or two, with several watcher writes on the way.
SHORT_SPEC: dict[str, Any] = {
    "model": {"hidden": [16, 16]},
    "train": {"steps": 1500},
    "diagnostics": {"every": 50, "monitor_examples": 20, "jacobian": {"mode": "off"}},
    "data": {"test_examples": 50},
}


def stored(factory: sessionmaker[Session], job_id: str) -> list[tuple[int, str, int, float | None]]:
    """The job's points as (layer, statistic, step, value), sorted."""
    with factory() as s:
        return sorted(
            (r.layer, r.statistic, r.step, r.value)
            for r in s.execute(
                select(MetricSeries.layer, MetricSeries.statistic, MetricPoint.step, MetricPoint.value)
                .join(MetricPoint, MetricPoint.series_id == MetricSeries.id)
                .where(MetricSeries.job_id == job_id)
            )
        )


def expected(rows: Any) -> list[tuple[int, str, int, float | None]]:
    last: dict[tuple[int, str, int], float] = {}
    for step, layer, statistic, value in rows:
        last[(layer, statistic, step)] = value
    return sorted((k[0], k[1], k[2], v) for k, v in last.items())


def make_stale(factory: sessionmaker[Session], job_id: str) -> None:
    with transaction(factory) as s:
        s.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(seconds=60)))


def test_running_job_series_grow_over_polls(client: TestClient, key: str) -> None:
    """Through the API and the local runner: points appear and grow while RUNNING; cancelled, the
    job keeps what was streamed."""
    job_id = client.post("/v1/experiments", json=STREAM_SPEC, headers=auth(key)).json()["id"]
    params = {"layer": [1], "statistic": ["activation.std"]}

    def poll() -> dict[str, Any]:
        page = client.get(f"/v1/jobs/{job_id}/metrics", headers=auth(key), params=params).json()
        steps = [p[0] for s in page["series"] for p in s["points"]]
        return {"state": page["state"], "steps": steps}

    counts: list[int] = []

    def growing(m: dict[str, Any]) -> bool:
        assert m["state"] in {"QUEUED", "RUNNING"}, m["state"]  # seen before the run ends
        if m["steps"] and (not counts or len(m["steps"]) > counts[-1]):
            assert m["steps"] == sorted(m["steps"]) and m["steps"][0] == 0
            assert all(b - a == 50 for a, b in zip(m["steps"], m["steps"][1:], strict=False)), m["steps"]
            counts.append(len(m["steps"]))
        return len(counts) >= 3

    wait_for(poll, growing, timeout=90, poll=0.1)
    assert counts == sorted(counts) and counts[0] < counts[-1]
    assert client.get(f"/v1/jobs/{job_id}", headers=auth(key)).json()["state"] == "RUNNING"
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(key)).status_code == 202
    job = wait_state(client, key, job_id, {"SUCCEEDED", "FAILED", "CANCELLED"})
    assert job["state"] == "CANCELLED" and job["progress"]["step"] < STREAM_SPEC["train"]["steps"]
    final = poll()
    assert final["state"] == "CANCELLED" and len(final["steps"]) >= counts[-1]  # kept, not cleared
    assert final["steps"] == list(range(0, 50 * len(final["steps"]), 50))
    # every series of the job is served, each with the same steps
    everything = client.get(f"/v1/jobs/{job_id}/metrics", headers=auth(key), params={"layer": [0, 1, 2]}).json()
    assert {"test_error", "activation.std", "saturation.fraction"} <= {s["statistic"] for s in everything["series"]}


def test_succeeded_job_has_exactly_the_reports_rows(factory: sessionmaker[Session], db_url: str, tmp_path: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Points were streamed during the run; at SUCCEEDED the series are exactly metric_rows(report)."""
    from service_support import make_settings

    settings = make_settings(db_url, tmp_path, progress_interval_s=0.05)
    streamed: list[int] = []
    real_store = lifecycle.finish

    def spying_store(factory_: Any, job_id: str, attempt: int, report: dict[str, Any], rows: Any,
                     **options: Any) -> bool:
        streamed.append(len(stored(factory_, job_id)))  # what the watcher wrote before the final rewrite
        return real_store(factory_, job_id, attempt, report, rows, **options)

    monkeypatch.setattr(lifecycle, "finish", spying_store)
    job_id = make_job(factory, SHORT_SPEC)
    res = execute_job(job_id, settings=settings, factory=factory)
    assert res.state == "SUCCEEDED", res.error
    with factory() as s:
        report = reports.load(s, job_id)
    want = expected(metric_rows(report))
    assert len(want) == len(list(metric_rows(report))) > len(report["snapshots"]) * 30  # no repeated key
    assert streamed and 0 < streamed[0] <= len(want), streamed  # streamed live, then completed
    assert stored(factory, job_id) == want


def test_final_rewrite_replaces_streamed_points(factory: sessionmaker[Session], settings: Settings) -> None:
    """Streamed points with other values, other steps and extra series give way to the report's rows."""
    job_id = make_job(factory)
    attempt = claim_job(factory, job_id, "w")
    assert attempt == 1
    watcher = _Watcher(factory, job_id, attempt, settings)
    live = [(0, 1, "activation.std", 0.123), (5, 1, "activation.std", 0.2), (0, 3, "other.stat", 1.0)]
    assert watcher._write(None, live)
    assert watcher._write(None, live[:1])  # a batch written twice: upserted
    assert len(stored(factory, job_id)) == 3
    assert store_results(factory, job_id, attempt, FAKE_REPORT, ROWS)
    assert stored(factory, job_id) == expected(ROWS)
    assert row(factory, job_id).state == "SUCCEEDED"


def test_fenced_out_attempt_streams_nothing(factory: sessionmaker[Session], settings: Settings) -> None:
    """Attempt 1 is re-queued and attempt 2 claims: attempt 1's late snapshot writes no point, neither
    directly nor through its watcher's loop, and attempt 2's points are untouched."""
    job_id = make_job(factory)
    assert claim_job(factory, job_id, "old") == 1
    old = _Watcher(factory, job_id, 1, settings)
    make_stale(factory, job_id)
    assert reap_stale_jobs(factory, settings) == [job_id]
    assert not old._write(None, ROWS)  # re-queued: fenced out
    assert stored(factory, job_id) == []
    assert claim_job(factory, job_id, "new") == 2
    new = _Watcher(factory, job_id, 2, settings)
    mine = [(0, 1, "activation.std", 2.0)]
    assert new._write(None, mine)
    # the old attempt's watcher thread, with a snapshot queued, notices it lost the job and writes nothing
    old.add_metric_rows(ROWS)
    old.start()
    wait_for(lambda: {"lost": old.lost.is_set()}, lambda v: v["lost"], timeout=10, poll=0.05)
    old.stop(flush=True)
    assert not old.is_alive()
    assert stored(factory, job_id) == expected(mine)
    job = row(factory, job_id)
    assert (job.state, job.attempt) == ("RUNNING", 2)


def test_rerun_does_not_mix_attempts(factory: sessionmaker[Session], settings: Settings) -> None:
    """The dead attempt streamed points; the re-run's claim clears them, and its run (to SUCCEEDED)
    ends with only its own report's rows."""
    job_id = make_job(factory, SHORT_SPEC)
    assert claim_job(factory, job_id, "dead") == 1
    dead = _Watcher(factory, job_id, 1, settings)
    ghost = [(0, 1, "activation.std", 99.0), (999_950, 1, "activation.std", 99.0), (999_950, 0, "ghost", 1.0)]
    assert dead._write(None, ghost)
    assert len(stored(factory, job_id)) == 3
    make_stale(factory, job_id)
    assert reap_stale_jobs(factory, settings) == [job_id]
    assert len(stored(factory, job_id)) == 3  # QUEUED again: still the dead attempt's (where it died)
    started = time.monotonic()
    res = execute_job(job_id, settings=settings, factory=factory)  # claims attempt 2, clears, runs
    assert (res.state, res.attempt) == ("SUCCEEDED", 2), res.error
    assert time.monotonic() - started < 120
    with factory() as s:
        report = reports.load(s, job_id)
    points = stored(factory, job_id)
    assert points == expected(metric_rows(report))
    assert not any(p[3] == 99.0 or p[2] == 999_950 or p[1] == "ghost" for p in points)


def test_rerun_claim_clears_the_dead_attempts_series(factory: sessionmaker[Session], settings: Settings) -> None:
    """While attempt 2 streams, only its points are served, never a mix with attempt 1's."""
    job_id = make_job(factory)
    assert claim_job(factory, job_id, "dead") == 1
    assert _Watcher(factory, job_id, 1, settings)._write(None, ROWS)
    make_stale(factory, job_id)
    assert reap_stale_jobs(factory, settings) == [job_id]
    assert claim_job(factory, job_id, "new") == 2
    assert stored(factory, job_id) == []
    with factory() as s:
        assert s.execute(select(MetricSeries.id).where(MetricSeries.job_id == job_id)).first() is None
    mine = [(0, 1, "activation.std", 7.0)]
    assert _Watcher(factory, job_id, 2, settings)._write(None, mine)
    assert stored(factory, job_id) == expected(mine)
