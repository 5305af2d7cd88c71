"""GET /v1/compare and its overlay figures, on SQLite and PostgreSQL: statistics side by side with the
differences from the first job, histograms bin by bin when the bins agree (flagged when they do not),
the snapshot choice, tenant scoping and every refusal as a problem naming the parameter or the job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_support import auth, wait_state

from api.client import GlorotClient
from glorot_core.cli import main
from glorot_core.compare import MAX_RUNS, STATISTICS

BASE = {"model": {"hidden": [16, 16, 16], "activation": "tanh", "init": "standard"}, "train": {"steps": 20},
        "diagnostics": {"every": 10, "monitor_examples": 40, "jacobian": {"mode": "exact", "examples": 2}},
        "data": {"test_examples": 100}}


def _spec(**model: Any) -> dict[str, Any]:
    return {**BASE, "model": {**BASE["model"], **model}}


def _submit(client: TestClient, key: str, spec: dict[str, Any]) -> str:
    r = client.post("/v1/experiments", json=spec, headers=auth(key))
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    return dict(r.json())


def _fractions(hist: dict[str, Any]) -> list[float]:
    total = sum(hist["counts"]) + hist["underflow"] + hist["overflow"] + hist["nonfinite"]
    return [c / total for c in hist["counts"]]


def test_compare_side_by_side(client: TestClient, key: str, other_key: str, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    a = _submit(client, key, _spec(init="standard"))
    b = _submit(client, key, _spec(init="normalized"))
    c = _submit(client, key, _spec(activation="sigmoid"))
    for job in (a, b, c):
        assert wait_state(client, key, job, {"SUCCEEDED", "FAILED"})["state"] == "SUCCEEDED"
    reports = {j: client.get(f"/v1/jobs/{j}/report", headers=auth(key)).json() for j in (a, b, c)}

    r = client.get(f"/v1/compare?jobs={a},{b}", headers=auth(key))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["baseline"] == a and [run["job_id"] for run in body["runs"]] == [a, b]
    assert [run["init"] for run in body["runs"]] == ["standard", "normalized"]
    assert body["snapshot"] == "init" and [run["step"] for run in body["runs"]] == [0, 0]
    assert body["same_bins"] == {"activation": True, "backprop_grad": True, "weight_grad": True}
    assert [lay["index"] for lay in body["layers"]] == [1, 2, 3]
    for lay in body["layers"]:
        i = lay["index"] - 1
        ra, rb = (reports[j]["snapshots"][0]["layers"][i] for j in (a, b))
        for section, field in STATISTICS:
            stat = lay["statistics"][f"{section}.{field}"]
            va, vb = (r_[section][field] if r_.get(section) else None for r_ in (ra, rb))
            assert stat["values"] == [va, vb], (section, field)
            assert stat["differences"] == [None if va is None or vb is None else vb - va]
        for section in ("activation", "backprop_grad", "weight_grad"):
            h = lay["histograms"][section]
            assert h["same_bins"] and h["edges"] == ra[section]["histogram"]["edges"]
            fa, fb = _fractions(ra[section]["histogram"]), _fractions(rb[section]["histogram"])
            assert h["fractions"] == [fa, fb]
            assert h["differences"] == [[y - x for x, y in zip(fa, fb, strict=True)]]
        # eq. 16 against eq. 1: the normalized init's weights have the larger variance in every layer here
        # (2/(n_in+n_out) vs 1/(3 n_in): ×6 for 1024→16, ×3 for 16→16), so every layer's activations are wider
        assert lay["statistics"]["activation.std"]["differences"][0] > 0
    assert {f["name"] for f in body["figures"]} == {"activation_histograms", "backprop_grad_histograms",
                                                    "weight_grad_histograms", "layer_profile"}

    # another snapshot: final, or by index
    final = client.get(f"/v1/compare?jobs={a},{b}&snapshot=final", headers=auth(key)).json()
    assert [(run["step"], run["snapshot_index"]) for run in final["runs"]] == [(20, 2), (20, 2)]
    std = final["layers"][0]["statistics"]["activation.std"]["values"]
    assert std == [reports[j]["snapshots"][-1]["layers"][0]["activation"]["std"] for j in (a, b)]
    assert [run["step"] for run in client.get(f"/v1/compare?jobs={a},{b}&snapshot=1",
                                              headers=auth(key)).json()["runs"]] == [10, 10]

    # tanh against sigmoid: activation bins differ (flagged, no bin differences); gradient octaves agree
    mixed = client.get(f"/v1/compare?jobs={a},{c}", headers=auth(key)).json()
    assert mixed["same_bins"] == {"activation": False, "backprop_grad": True, "weight_grad": True}
    h = mixed["layers"][0]["histograms"]["activation"]
    assert h["differences"] is None and h["edges"][0][0] == -1.0 and h["edges"][1][0] == 0.0
    assert mixed["layers"][0]["statistics"]["activation.mean"]["differences"][0] is not None

    # overlay figures: one line per layer and job, in PNG and SVG
    svg = client.get(f"/v1/compare/figures/activation_histograms.svg?jobs={a},{b}", headers=auth(key))
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert all(f'id="activation-layer{i}-run{k}"' in svg.text for i in (1, 2, 3) for k in (1, 2))
    png = client.get(f"/v1/compare/figures/layer_profile.png?jobs={a},{b},{c}&snapshot=final", headers=auth(key))
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert client.get(f"/v1/compare/figures/nope.png?jobs={a},{b}", headers=auth(key)).status_code == 404

    # tenant scoping: another tenant's job is unknown, cached or not
    assert _problem(client.get(f"/v1/compare?jobs={a},{b}", headers=auth(other_key)), 404)["detail"].endswith(f"{a!r}")
    _problem(client.get(f"/v1/compare/figures/activation_histograms.svg?jobs={a},{b}", headers=auth(other_key)), 404)
    assert client.get(f"/v1/compare?jobs={a},{b}").status_code == 401

    # the command line: `glorot compare A B` prints the table, `--figure` saves an overlay
    monkeypatch.setattr("api.cli._client", lambda args: GlorotClient("http://testserver", key,
                                                                      transport=client._transport))
    assert main(["compare", a, b, "--snapshot", "final"]) == 0
    out = capsys.readouterr().out
    assert f"A = {a}" in out and f"B = {b}" in out and "B-A" in out
    row = next(line for line in out.splitlines() if line.strip().startswith("activation.std"))
    values = final["layers"][0]["statistics"]["activation.std"]
    assert row.split()[1:] == [f"{v:.4g}" for v in (*values["values"], *values["differences"])]
    assert main(["compare", a, b, "--figure", "activation_histograms", "-o", str(tmp_path / "f.svg")]) == 0
    assert (tmp_path / "f.svg").read_bytes() == svg.content
    assert main(["compare", a]) == 1 and "jobs" in capsys.readouterr().err

    # a snapshot a job does not have
    p = _problem(client.get(f"/v1/compare?jobs={a},{b}&snapshot=3", headers=auth(key)), 422)
    assert p["errors"][0]["field"] == "snapshot" and a in p["errors"][0]["message"]


def test_refusals_name_the_parameter_or_the_job(idle_client: TestClient, key: str) -> None:
    queued = [_submit(idle_client, key, BASE) for _ in range(2)]  # no runner: they stay QUEUED
    p = _problem(idle_client.get(f"/v1/compare?jobs={queued[0]},{queued[1]}", headers=auth(key)), 409)
    assert p["job_id"] == queued[0] and p["state"] == "QUEUED"
    _problem(idle_client.get(f"/v1/compare/figures/layer_profile.png?jobs={queued[0]},{queued[1]}",
                             headers=auth(key)), 409)
    unknown = "0123456789abcdef0123456789abcdef"
    assert _problem(idle_client.get(f"/v1/compare?jobs={unknown},{queued[0]}", headers=auth(key)),
                    404)["type"].endswith("job-not-found")
    ids = ",".join(f"{i:032x}" for i in range(MAX_RUNS + 1))
    for query, name in ((f"jobs={queued[0]}", "jobs"),  # one job
                        (f"jobs={queued[0]},{queued[0]}", "jobs"),  # the same twice
                        (f"jobs={ids}", "jobs"),  # too many
                        ("jobs=a,b;drop", "jobs"),  # not ids
                        ("", "jobs"),  # missing
                        (f"jobs={queued[0]},{queued[1]}&snapshot=last", "snapshot"),
                        (f"jobs={queued[0]},{queued[1]}&snapshot=-1", "snapshot"),
                        (f"jobs={queued[0]},{queued[1]}&snapshot=init&snapshot=final", "snapshot")):
        p = _problem(idle_client.get(f"/v1/compare?{query}", headers=auth(key)), 422)
        assert p["errors"][0]["field"] == name, (query, p)
        p = _problem(idle_client.get(f"/v1/compare/figures/layer_profile.svg?{query}", headers=auth(key)), 422)
        assert p["errors"][0]["field"] == name, (query, p)


def test_fig5_preset_jobs_list_and_serve_the_cost_surface(client: TestClient, key: str) -> None:
    overrides = {"model": {"hidden": [12]}, "train": {"steps": 20},
                 "diagnostics": {"every": 10, "monitor_examples": 30, "cost_surface": {"points": 9}},
                 "data": {"test_examples": 50}}
    job = _submit(client, key, {"preset": "fig5_quadratic", "overrides": overrides})
    assert wait_state(client, key, job, {"SUCCEEDED", "FAILED"})["state"] == "SUCCEEDED"
    listing = {f["name"]: f for f in client.get(f"/v1/jobs/{job}/figures", headers=auth(key)).json()["figures"]}
    assert listing["cost_surface"]["paper"] == "Fig 5"
    svg = client.get(listing["cost_surface"]["svg"], headers=auth(key))
    assert svg.status_code == 200 and 'id="quadratic-w1-0"' in svg.text and 'id="cross_entropy-w2-8"' in svg.text
    section = client.get(f"/v1/jobs/{job}/report?sections=cost_surface", headers=auth(key)).json()["cost_surface"]
    assert section["step"] == 20 and len(section["costs"]["quadratic"]) == 9
