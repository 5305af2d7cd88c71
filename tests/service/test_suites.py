"""Multi-seed suites (docs/suites.md): child jobs per configuration × seed through the submission
path, the aggregate state, the report's Student-t intervals, cancellation and the figures, on SQLite
and PostgreSQL with the real local runner.

The interval check rests on a fact of small samples: for n values with mean x̄ and sample std s, no
value lies further than s·(n − 1)/√n from x̄ (equality when the other n − 1 coincide). For n = 3 that
is 1.155·s, inside the 95 % half-width t_{0.975,2}·s/√3 = 2.484·s. So a 3-seed interval computed with
the right t and s must contain every seed's value; a wrong one (z = 1.96 or s/n instead of s/√n:
1.13·s or 0.66·s) can miss the extreme seed.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_support import LONG_SPEC, TINY_SPEC, auth, make_settings, new_key, wait_for
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from glorot_core.figures import curves
from glorot_service.app import build_app
from jobs import lifecycle, suites
from jobs.models import Job, JobState, Suite
from jobs.suite_stats import summarize, t_quantile

FAST: dict[str, Any] = {**TINY_SPEC, "diagnostics": {**TINY_SPEC["diagnostics"], "jacobian": {"mode": "off"}}}
"""A tiny run (20 updates, snapshots at 0, 10, 20) without Jacobians: a second or so per child."""
ENDED = {"SUCCEEDED", "FAILED", "CANCELLED"}


def _suite(client: TestClient, key: str, suite_id: str) -> dict[str, Any]:
    r = client.get(f"/v1/suites/{suite_id}", headers=auth(key))
    assert r.status_code == 200, r.text
    return r.json()


def _wait_complete(client: TestClient, key: str, suite_id: str, timeout: float = 180.0) -> dict[str, Any]:
    return wait_for(lambda: _suite(client, key, suite_id), lambda s: s["complete"], timeout)


def _submit(client: TestClient, key: str, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    r = client.post("/v1/suites", json=body, headers={**auth(key), **headers})
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"/v1/suites/{r.json()['id']}"
    return r.json()


# ------------------------------------------------------------------------------------- the CI itself


def test_student_t_interval_of_a_known_sample() -> None:
    """[1, 2, 3]: mean 2, s = 1, t_{0.975,2} = 4.303 (tables), half-width 4.303/√3 = 2.484."""
    assert t_quantile(2) == pytest.approx(4.303, abs=5e-4)
    assert t_quantile(1) == pytest.approx(12.706, abs=5e-4)
    assert t_quantile(9) == pytest.approx(2.262, abs=5e-4)
    s = summarize([1.0, 2.0, 3.0])
    assert (s.n, s.missing, s.mean, s.std) == (3, 0, 2.0, 1.0)
    assert s.half_width == pytest.approx(4.3027 / math.sqrt(3), abs=1e-4)
    assert s.ci_low == pytest.approx(2 - 2.4841, abs=1e-4) and s.ci_high == pytest.approx(2 + 2.4841, abs=1e-4)
    # a diverged seed's null is left out and counted; one value has no std and no interval
    assert summarize([None, 1.0, float("nan"), 3.0]).as_json()["ci95"] == pytest.approx(
        [2 - 12.7062, 2 + 12.7062], abs=1e-3)  # n = 2: t_{0.975,1} · √2 / √2
    one = summarize([0.25, None])
    assert (one.n, one.missing, one.mean, one.std, one.ci_low) == (1, 1, 0.25, None, None)


def test_three_values_always_lie_in_their_interval() -> None:
    """The bound of the module docstring, at its extreme: two equal values and one far away."""
    for values in ([0.0, 0.0, 1.0], [5.0, 5.0, -3.0], [0.1, 0.2, 0.9]):
        s = summarize(values)
        assert all(s.contains(v) for v in values), (values, s)
        worst = max(abs(v - s.mean) for v in values)  # type: ignore[operator]
        assert worst <= s.std * 2 / math.sqrt(3) + 1e-12  # type: ignore[operator]


# ---------------------------------------------------------------------------------- a 3-seed suite


def test_three_seed_suite_reports_an_interval_containing_each_seed(
        client: TestClient, key: str, factory: sessionmaker[Session]) -> None:
    suite = _submit(client, key, {"specs": [FAST], "seeds": 3})
    assert suite["children_expected"] == 3 and len(suite["children"]) == 3
    assert [c["seed"] for c in suite["children"]] == [0, 1, 2]  # train.seed (default 0) + 0, 1, 2
    assert suite["configs"][0]["seeds"] == [0, 1, 2]
    # children are ordinary jobs, each with its own seed
    for child in suite["children"]:
        job = client.get(f"/v1/jobs/{child['job_id']}", headers=auth(key)).json()
        assert job["kind"] == "experiment" and job["resolved_spec"]["train"]["seed"] == child["seed"]
        assert job["spec"]["train"]["seed"] == child["seed"]
    done = _wait_complete(client, key, suite["id"])
    assert done["state"] == "SUCCEEDED", done
    assert done["counts"]["succeeded"] == 3 and done["progress"] == 1.0 and done["failed"] == []

    report = client.get(f"/v1/suites/{suite['id']}/report", headers=auth(key)).json()
    assert report["schema"] == suites.SCHEMA and report["complete"] is True and report["confidence"] == 0.95
    (config,) = report["configs"]
    assert config["n_succeeded"] == 3 and config["paper"] is None
    stats = {(s["layer"], s["statistic"]): s for s in config["statistics"]}
    assert {(0, "test_error"), (0, "train_loss"), (1, "activation.std"), (2, "backprop_grad.std"),
            (1, "weight_grad.std"), (2, "saturation.fraction")} <= set(stats)
    assert (1, "jacobian.mean_sv") not in stats  # the runs did not measure Jacobians
    for stat in stats.values():
        values = [v["value"] for v in stat["values"]]
        assert stat["n"] == 3 and len(values) == 3 and all(v["step"] == 20 for v in stat["values"])
        assert stat["mean"] == pytest.approx(sum(values) / 3)
        assert stat["t"] == pytest.approx(4.303, abs=5e-4)
        lo, hi = stat["ci95"]
        assert all(lo <= v <= hi for v in values), (stat["statistic"], stat["layer"], values, lo, hi)
    # the seeds differ (different initial weights), so the interval is not a point
    act = [v["value"] for v in stats[(1, "activation.std")]["values"]]
    assert len(set(act)) == 3 and stats[(1, "activation.std")]["std"] > 0
    # each value is the child's own report's last snapshot
    for v in stats[(0, "test_error")]["values"]:
        last = client.get(f"/v1/jobs/{v['job_id']}/report", headers=auth(key)).json()["snapshots"][-1]
        assert last["step"] == 20 and v["value"] == pytest.approx(last["test_error"])
        assert stats[(1, "activation.std")]["values"][[w["job_id"] for w in stats[(1, "activation.std")]["values"]]
                                                      .index(v["job_id"])]["value"] == pytest.approx(
            last["layers"][0]["activation"]["std"])

    # Figs 11-12 with the seeds' band: the mean and min-max over the three seeds at every snapshot
    r = client.get(f"/v1/suites/{suite['id']}/figures", headers=auth(key))
    assert r.status_code == 200 and [f["name"] for f in r.json()["figures"]] == ["test_error"]
    png = client.get(f"/v1/suites/{suite['id']}/figures/test_error.png", headers=auth(key))
    assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
    svg = client.get(f"/v1/suites/{suite['id']}/figures/test_error.svg", headers=auth(key))
    assert svg.status_code == 200 and b"<svg" in svg.content and b"config0-band" in svg.content
    with factory() as s:
        row = suites.get(s, _tenant(factory, key, suite["id"]), suite["id"])
        assert row is not None
        (band,) = suites.error_bands(s, row, suites.children(s, row))
    per_seed = [[p for p in client.get(f"/v1/jobs/{c['job_id']}/report", headers=auth(key)).json()["snapshots"]]
                for c in suite["children"]]
    assert band.examples_seen == [0, 100, 200]  # steps 0, 10, 20 × batch 10
    for j in range(3):
        errs = [seed[j]["test_error"] for seed in per_seed]
        assert band.low[j] == pytest.approx(min(errs)) and band.high[j] == pytest.approx(max(errs))
        assert band.mean[j] == pytest.approx(sum(errs) / 3)
    fig = curves.error_bands([curves.ErrorCurve("x", band.examples_seen, band.mean, "c", band.low, band.high)], "t")
    (ax,) = fig.axes
    (poly,) = [c for c in ax.collections if c.get_gid() == "c-band"]
    ys = poly.get_paths()[0].vertices[:, 1]
    assert min(ys) == pytest.approx(min(band.low)) and max(ys) == pytest.approx(max(band.high))


def _tenant(factory: sessionmaker[Session], key: str, suite_id: str) -> int:
    with factory() as s:
        return int(s.execute(select(Suite.tenant_id).where(Suite.id == suite_id)).scalar_one())


def test_a_failed_child_is_named_and_explicit_seeds_are_used(client: TestClient, key: str) -> None:
    """A child whose data folder does not exist fails at run time; the suite names it."""
    absent = {**FAST, "model": {"input_dim": 784, "hidden": [8], "num_classes": 10},
              "data": {"dataset": "mnist", "root": "absent-folder", "test_examples": 50}}
    suite = _submit(client, key, {"specs": [FAST, absent], "seeds": [5, 7]})
    assert [(c["config_index"], c["seed"]) for c in suite["children"]] == [(0, 5), (0, 7), (1, 5), (1, 7)]
    done = _wait_complete(client, key, suite["id"])
    assert done["state"] == "FAILED" and done["counts"]["failed"] == 2 and done["counts"]["succeeded"] == 2
    assert [(f["config_index"], f["seed"]) for f in done["failed"]] == [(1, 5), (1, 7)]
    assert all("DataUnavailable" in f["error"] for f in done["failed"]), done["failed"]
    report = client.get(f"/v1/suites/{suite['id']}/report", headers=auth(key)).json()
    ok, bad = report["configs"]
    assert ok["n_succeeded"] == 2 and bad["n_succeeded"] == 0 and bad["statistics"] == []
    assert all(r["state"] == "FAILED" and "DataUnavailable" in r["error"] for r in bad["runs"])
    assert [f["seed"] for f in report["failed"]] == [5, 7]
    test_error = next(s for s in ok["statistics"] if s["statistic"] == "test_error")
    assert test_error["n"] == 2 and test_error["t"] == pytest.approx(12.706, abs=5e-4)


def test_table1_preset_suite_puts_the_papers_value_beside_ours(client: TestClient, key: str) -> None:
    tiny = {"model": {"hidden": [8, 8]}, "train": {"steps": 4},
            "diagnostics": {"every": 2, "monitor_examples": 20, "gradient_basis": "mean_cost"},
            "data": {"test_examples": 100}}
    suite = _submit(client, key, {"preset": "table1_tanh_shapeset3x2", "budget": "quick", "overrides": tiny,
                                  "seeds": 2})
    assert suite["configs"][0]["label"] == "table1_tanh_shapeset3x2 (quick)"
    child = client.get(f"/v1/jobs/{suite['children'][1]['job_id']}", headers=auth(key)).json()
    assert child["spec"]["preset"] == "table1_tanh_shapeset3x2" and child["spec"]["overrides"]["train"]["seed"] == 1
    assert child["resolved_spec"]["model"]["hidden"] == [8, 8] and child["resolved_spec"]["train"]["steps"] == 4
    assert _wait_complete(client, key, suite["id"])["state"] == "SUCCEEDED"
    (config,) = client.get(f"/v1/suites/{suite['id']}/report", headers=auth(key)).json()["configs"]
    paper = config["paper"]
    assert paper["test_error_percent"] == 27.15 and paper["test_error"] == pytest.approx(0.2715)
    test_error = next(s for s in config["statistics"] if s["statistic"] == "test_error")
    assert paper["ours"]["mean_percent"] == pytest.approx(100 * test_error["mean"])
    lo, hi = paper["ours"]["ci95_percent"]
    assert (lo, hi) == pytest.approx((100 * test_error["ci95"][0], 100 * test_error["ci95"][1]))
    assert paper["paper_within_ci95"] == (lo <= 27.15 <= hi)


# ------------------------------------------------------------------------------------- cancelling


def test_cancelling_a_suite_leaves_no_child_running(client: TestClient, key: str,
                                                    factory: sessionmaker[Session]) -> None:
    """One child RUNNING (the local runner runs one at a time), two QUEUED: all end CANCELLED."""
    suite = _submit(client, key, {"specs": [LONG_SPEC], "seeds": 3})
    wait_for(lambda: _suite(client, key, suite["id"]), lambda s: s["counts"]["running"] == 1)
    r = client.post(f"/v1/suites/{suite['id']}/cancel", headers=auth(key))
    assert r.status_code == 202, r.text
    assert r.json()["cancel_requested"] is True and r.json()["counts"]["queued"] == 0
    done = _wait_complete(client, key, suite["id"], timeout=60)
    assert done["state"] == "CANCELLED" and done["counts"]["cancelled"] == 3, done
    ids = [c["job_id"] for c in suite["children"]]
    with factory() as s:
        states = s.execute(select(Job.state).where(Job.id.in_(ids))).scalars().all()
    assert sorted(states) == [JobState.CANCELLED] * 3
    again = client.post(f"/v1/suites/{suite['id']}/cancel", headers=auth(key))
    assert again.status_code == 409 and again.json()["type"].endswith("suite-terminal")


# ------------------------------------------------------------------------- the body, tenants, caps


@pytest.mark.parametrize(("body", "field"), [
    ({"specs": [FAST], "seeds": 0}, "seeds"),
    ({"specs": [FAST], "seeds": 21}, "seeds"),
    ({"specs": [FAST], "seeds": True}, "seeds"),
    ({"specs": [FAST], "seeds": [1, 1]}, "seeds"),
    ({"specs": [FAST], "seeds": [1, -2]}, "seeds.1"),
    ({"specs": [FAST]}, "seeds"),
    ({"specs": [], "seeds": 2}, "specs"),
    ({"specs": [FAST] * 16, "seeds": 2}, "specs"),
    ({"specs": [FAST, 3], "seeds": 2}, "specs.1"),
    ({"specs": [FAST, {"model": {"hidden": [8, 0]}}], "seeds": 2}, "specs.1.model.hidden.1"),
    ({"specs": [FAST, {"preset": "no_such_preset"}], "seeds": 2}, "specs.1.preset"),
    ({"specs": [FAST], "seeds": 2, "colour": "red"}, "colour"),
    ({"preset": "fig2_sigmoid", "specs": [FAST], "seeds": 2}, "specs"),
    ({"preset": "fig2_sigmoid", "budget": "slow", "seeds": 2}, "budget"),
    ({"preset": "fig2_sigmoid", "overrides": {"train": {"steps": -1}}, "seeds": 2}, "train.steps"),
    ({"seeds": 2}, "specs"),
    ({"specs": [{**FAST, "train": {"seed": 2**64 - 2}}], "seeds": 3}, "seeds"),
])
def test_invalid_suites_are_422_naming_the_field(idle_client: TestClient, key: str, factory: sessionmaker[Session],
                                                 body: dict[str, Any], field: str) -> None:
    r = idle_client.post("/v1/suites", json=body, headers=auth(key))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["errors"][0]["field"] == field, r.json()
    with factory() as s:  # nothing stored
        assert s.execute(select(func.count()).select_from(Suite)).scalar_one() == 0
        assert s.execute(select(func.count()).select_from(Job)).scalar_one() == 0


def test_suites_are_tenant_scoped(idle_client: TestClient, key: str, other_key: str) -> None:
    suite = _submit(idle_client, key, {"specs": [FAST], "seeds": 2})
    assert suite["state"] == "QUEUED" and suite["counts"]["queued"] == 2 and suite["progress"] == 0.0
    for path in ("", "/report", "/figures", "/figures/test_error.png"):
        r = idle_client.get(f"/v1/suites/{suite['id']}{path}", headers=auth(other_key))
        assert r.status_code == 404 and r.json()["type"].endswith("suite-not-found"), (path, r.text)
    assert idle_client.post(f"/v1/suites/{suite['id']}/cancel", headers=auth(other_key)).status_code == 404
    assert idle_client.get(f"/v1/suites/{suite['id']}").status_code == 401
    # a suite's report is served while it runs, flagged incomplete; its figures wait for a SUCCEEDED child
    report = idle_client.get(f"/v1/suites/{suite['id']}/report", headers=auth(key)).json()
    assert report["complete"] is False and report["state"] == "QUEUED" and report["configs"][0]["statistics"] == []
    assert idle_client.get(f"/v1/suites/{suite['id']}/figures", headers=auth(key)).status_code == 409


# ------------------------------------------------------------------------------------------ the list


def _page(client: TestClient, key: str, **params: Any) -> dict[str, Any]:
    r = client.get("/v1/suites", params=params, headers=auth(key))
    assert r.status_code == 200, r.text
    return r.json()


def _pages(client: TestClient, key: str, **params: Any) -> list[dict[str, Any]]:
    """Every page of the list with ``params``, following next_cursor."""
    pages = [_page(client, key, **params)]
    while pages[-1]["next_cursor"] is not None:
        pages.append(_page(client, key, **params, cursor=pages[-1]["next_cursor"]))
    return pages


def _listed(client: TestClient, key: str, **params: Any) -> list[str]:
    return [s["id"] for page in _pages(client, key, **params) for s in page["items"]]


def test_suites_list_pages_newest_first_and_only_the_callers(idle_client: TestClient, key: str,
                                                             other_key: str) -> None:
    mine = [_submit(idle_client, key, {"specs": [FAST], "seeds": 1 + i % 2})["id"] for i in range(5)]
    theirs = [_submit(idle_client, other_key, {"specs": [FAST], "seeds": 1})["id"] for _ in range(2)]
    pages = _pages(idle_client, key, limit=2)
    assert [len(p["items"]) for p in pages] == [2, 2, 1]
    assert [s["id"] for p in pages for s in p["items"]] == mine[::-1]  # newest first, each once, none of theirs
    assert _listed(idle_client, other_key) == theirs[::-1]
    # an item is the suite as GET /v1/suites/{id} shows it, less the per-child lists
    newest = pages[0]["items"][0]
    assert newest == {k: v for k, v in _suite(idle_client, key, mine[-1]).items() if k not in ("children", "failed")}
    assert newest["state"] == "QUEUED" and newest["counts"]["queued"] == newest["children_expected"] == 1
    assert newest["configs"][0]["seeds"] == [0] and newest["created_at"]
    # a cursor is the caller's, for this list and these filters only
    cursor = pages[0]["next_cursor"]
    for who, params in ((other_key, {"cursor": cursor}), (key, {"cursor": cursor, "state": "QUEUED"})):
        r = idle_client.get("/v1/suites", params=params, headers=auth(who))
        assert r.status_code == 400 and r.json()["type"].endswith("invalid-cursor"), r.text
    jobs_cursor = idle_client.get("/v1/jobs", params={"limit": 1}, headers=auth(key)).json()["next_cursor"]
    assert idle_client.get("/v1/suites", params={"cursor": jobs_cursor}, headers=auth(key)).status_code == 400
    assert idle_client.get("/v1/suites").status_code == 401
    for query, field in (("limit=0", "limit"), ("state=DONE", "state"), ("limit=1&limit=2", "limit")):
        r = idle_client.get(f"/v1/suites?{query}", headers=auth(key))
        assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json"), r.text
        assert r.json()["errors"][0]["loc"] == ["query", field], r.json()


REPORT: dict[str, Any] = {"schema_version": 1, "spec": {"train": {"steps": 20}}, "snapshots": [{"step": 20}]}
"""What a child "runs" to in the state-filter test: its transitions are the lifecycle's own, without training."""


def test_suites_list_state_filter_follows_each_suites_state(idle_client: TestClient, key: str,
                                                            factory: sessionmaker[Session]) -> None:
    """Children moved through the lifecycle's transitions (no runner): each suite lands in the state the
    rule of GET /v1/suites/{id} gives, and ``state=`` lists exactly the suites in that state."""
    def suite() -> tuple[str, list[str]]:
        made = _submit(idle_client, key, {"specs": [FAST], "seeds": 2})
        return made["id"], [c["job_id"] for c in made["children"]]

    def claim(job_id: str) -> int:
        attempt = lifecycle.claim(factory, job_id, "test-worker")
        assert attempt is not None
        return attempt

    def succeed(job_id: str) -> None:
        assert lifecycle.finish(factory, job_id, claim(job_id), REPORT, [])

    def fail(job_id: str, attempt: int | None = None) -> None:
        assert lifecycle.fail(factory, job_id, claim(job_id) if attempt is None else attempt, "boom")

    def cancel(path: str) -> None:
        assert idle_client.post(f"{path}/cancel", headers=auth(key)).status_code == 202

    expected: dict[str, str] = {}
    queued, _ = suite()
    expected[queued] = "QUEUED"
    running, (a, _) = suite()
    claim(a)
    expected[running] = "RUNNING"
    half_done, (a, _) = suite()  # one child ended, one QUEUED: the suite is still going
    succeed(a)
    expected[half_done] = "RUNNING"
    succeeded, (a, b) = suite()
    succeed(a)
    succeed(b)
    expected[succeeded] = "SUCCEEDED"
    failed, (a, b) = suite()
    succeed(a)
    fail(b)
    expected[failed] = "FAILED"
    cancelled, (a, b) = suite()
    succeed(a)
    cancel(f"/v1/jobs/{b}")
    expected[cancelled] = "CANCELLED"
    cancelled_suite, (a, _) = suite()  # the suite cancelled: CANCELLED even though a child then FAILED
    attempt = claim(a)
    cancel(f"/v1/suites/{cancelled_suite}")
    fail(a, attempt)
    expected[cancelled_suite] = "CANCELLED"

    assert {i: _suite(idle_client, key, i)["state"] for i in expected} == expected
    newest_first = list(expected)[::-1]
    for state in ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"):
        want = [i for i in newest_first if expected[i] == state]
        assert _listed(idle_client, key, state=state, limit=1) == want, state  # one per page: pages stay full
    assert [s["state"] for s in _page(idle_client, key)["items"]] == [expected[i] for i in newest_first]


def test_a_suite_past_the_active_job_cap_is_429_and_stores_nothing(
        db_url: str, tmp_path: Any, factory: sessionmaker[Session]) -> None:
    settings = make_settings(db_url, tmp_path, tenant_max_active_jobs=3)
    key = new_key(factory, settings, "capped")
    with TestClient(build_app(settings, start_runner=False)) as c:
        r = c.post("/v1/suites", json={"specs": [FAST], "seeds": 4}, headers=auth(key))
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1, r.text
        assert r.json()["limit"] == 3
        with factory() as s:
            assert s.execute(select(func.count()).select_from(Job)).scalar_one() == 0
        assert c.post("/v1/suites", json={"specs": [FAST], "seeds": 3}, headers=auth(key)).status_code == 201


def test_idempotency_key_replays_the_suite(idle_client: TestClient, key: str, factory: sessionmaker[Session]) -> None:
    body = {"specs": [FAST], "seeds": 2}
    first = _submit(idle_client, key, body, **{"Idempotency-Key": "suite-1"})
    again = idle_client.post("/v1/suites", json=body, headers={**auth(key), "Idempotency-Key": "suite-1"})
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert [c["job_id"] for c in again.json()["children"]] == [c["job_id"] for c in first["children"]]
    other = idle_client.post("/v1/suites", json={**body, "seeds": 3},
                             headers={**auth(key), "Idempotency-Key": "suite-1"})
    assert other.status_code == 422 and other.json()["suite_id"] == first["id"]
    with factory() as s:
        assert s.execute(select(func.count()).select_from(Job)).scalar_one() == 2


# ------------------------------------------------------------------------------------ the command line


def test_glorot_suites_commands(client: TestClient, key: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """``glorot suites submit --wait``, ``report --summary`` and ``cancel`` through the real client, talking
    to the app in this process (the client's transport is the test client's)."""
    import json

    from api import cli as service_cli
    from api.client import GlorotClient
    from glorot_core.cli import main

    def connect(args: Any) -> GlorotClient:
        return GlorotClient("http://testserver", key, transport=client._transport)

    monkeypatch.setattr(service_cli, "_client", connect)
    body = tmp_path / "suite.json"
    body.write_text(json.dumps({"specs": [FAST]}))
    assert main(["suites", "submit", str(body), "--seeds", "2", "--wait", "--poll", "0.2"]) == 0
    done = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert done["state"] == "SUCCEEDED" and done["counts"]["succeeded"] == 2
    assert main(["suites", "report", done["id"], "--summary"]) == 0
    text = capsys.readouterr().out
    with connect(None) as c:
        (config,) = c.suite_report(done["id"])["configs"]
    te = next(s for s in config["statistics"] if s["statistic"] == "test_error")
    assert f"{100 * te['mean']:.2f} ± {100 * te['half_width']:.2f}" in text and config["label"] in text
    assert main(["suites", "cancel", done["id"]]) == 1  # every child ended: 409
    assert "already ended" in capsys.readouterr().err
    assert main(["suites", "submit", "--seeds", "2"]) == 2  # neither a body nor a preset


def test_glorot_suites_list_command(idle_client: TestClient, key: str, other_key: str,
                                    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``glorot suites list``: one line per suite of the caller, newest first, through the real client."""
    from api import cli as service_cli
    from api.client import GlorotClient
    from glorot_core.cli import main

    monkeypatch.setattr(service_cli, "_client",
                        lambda args: GlorotClient("http://testserver", key, transport=idle_client._transport))
    _submit(idle_client, other_key, {"specs": [FAST], "seeds": 1})
    one = _submit(idle_client, key, {"specs": [{**FAST, "name": "small"}], "seeds": 3})
    two = _submit(idle_client, key, {"specs": [{**FAST, "name": "small"}, {**FAST, "name": "other"}],
                                     "seeds": [5, 7]})
    assert main(["suites", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [two["id"], one["id"]]
    newest = lines[0].split()
    assert newest[1] == "QUEUED" and newest[2] == two["created_at"][:19] and newest[3] == "0/4"
    assert lines[0].endswith("small ×2; other ×2") and lines[1].endswith("small ×3")
    assert main(["suites", "list", "--limit", "1"]) == 0
    assert capsys.readouterr().out.splitlines() == lines[:1]
    assert main(["suites", "list", "--state", "SUCCEEDED"]) == 0 and capsys.readouterr().out == ""
    assert main(["suites", "list", "--state", "DONE"]) == 1  # the service's 422, naming the parameter
    assert "state" in capsys.readouterr().err
    assert main(["suites", "list", "--limit", "0"]) == 2


# ------------------------------------------------------------------------------------------- Celery


@pytest.mark.integration
def test_celery_workers_run_children_at_once_and_a_cancel_stops_them_all(tmp_path: Any) -> None:
    """The API in Celery mode and two real ``glorot worker`` processes: a suite's children are
    dispatched one message each, so both workers run one at once; cancelling the suite ends all three
    (two RUNNING, one QUEUED) and no child is left QUEUED or RUNNING."""
    from celery_support import Env, Worker, fresh_database, long_spec, services_or_fail

    from jobs.db import session_factory
    from jobs.settings import get_settings

    services_or_fail()
    with fresh_database("glorot_suites") as url:
        env = Env(database_url=url, tmp=tmp_path)
        with env.applied():
            settings = get_settings()
            assert settings.broker_url  # the API dispatches through Celery
            factory = session_factory(url)
            key = new_key(factory, settings, "suites-celery")
            workers = [Worker(env, f"suite{i}").start() for i in range(2)]
            try:
                with TestClient(build_app(settings)) as client:
                    suite = _submit(client, key, {"specs": [long_spec()], "seeds": 3})
                    logs = lambda: "\n".join(w.tail() for w in workers)  # noqa: E731
                    try:
                        wait_for(lambda: _suite(client, key, suite["id"]), lambda s: s["counts"]["running"] == 2)
                    except AssertionError as e:
                        raise AssertionError(f"{e}\n{logs()}") from None
                    r = client.post(f"/v1/suites/{suite['id']}/cancel", headers=auth(key))
                    assert r.status_code == 202, r.text
                    done = _wait_complete(client, key, suite["id"], timeout=60)
                    assert done["state"] == "CANCELLED" and done["counts"]["cancelled"] == 3, (done, logs())
            finally:
                for w in workers:
                    w.stop()
            ids = [c["job_id"] for c in suite["children"]]
            with factory() as s:
                rows = s.execute(select(Job.state, Job.started_at).where(Job.id.in_(ids))).all()
            assert all(r.state == JobState.CANCELLED for r in rows)
            # two ran at once, and a worker runs one job at a time: both workers had a child
            assert sum(r.started_at is not None for r in rows) == 2
