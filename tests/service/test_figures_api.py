"""Presets and figures through the API, on SQLite and PostgreSQL: GET /v1/presets, a preset submission
with a tiny override runs to SUCCEEDED with the preset's spec, MNIST presets are refused at submission
without their files, and the job's figures are listed and served as PNG and SVG with the report's
series in them."""

from __future__ import annotations

from fastapi.testclient import TestClient
from service_support import auth, wait_state

from glorot_core.presets import PRESETS, spec_for
from glorot_core.spec import validate_spec

TINY = {"model": {"hidden": [16, 16, 16]}, "train": {"steps": 20}, "diagnostics": {"every": 10, "monitor_examples": 40,
        "jacobian": {"mode": "exact", "examples": 2}}, "data": {"test_examples": 100}}


def test_presets_are_listed(idle_client: TestClient, key: str) -> None:
    assert idle_client.get("/v1/presets").status_code == 401
    body = idle_client.get("/v1/presets", headers=auth(key)).json()
    listed = {p["name"]: p for p in body["presets"]}
    assert set(listed) == set(PRESETS)
    fig2 = listed["fig2_sigmoid"]
    assert fig2["reproduces"] == ["Fig 2"] and fig2["claim"]
    for budget in ("quick", "paper"):
        b = fig2["budgets"][budget]
        assert b["cost"]["updates"] == b["steps"] and b["cost"]["examples"] == 10 * b["steps"]
    assert listed["table1_tanh_n_mnist"]["needs_data_files"] is True
    assert idle_client.get("/v1/presets/fig6_8_standard", headers=auth(key)).json()["name"] == "fig6_8_standard"
    assert idle_client.get("/v1/presets/nope", headers=auth(key)).status_code == 404


def test_preset_submission_runs_and_serves_its_figures(client: TestClient, key: str, other_key: str) -> None:
    body = {"preset": "fig9_standard", "budget": "quick", "overrides": TINY}
    r = client.post("/v1/experiments", json=body, headers=auth(key))
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["spec"] == body  # stored as sent; the resolved spec is the preset's
    expected = validate_spec(spec_for("fig9_standard", "quick", TINY)).model_dump(mode="json")
    assert job["resolved_spec"] == expected and "fig9_standard [quick budget" in expected["name"]
    assert wait_state(client, key, job["id"], {"SUCCEEDED", "FAILED"})["state"] == "SUCCEEDED"
    report = client.get(f"/v1/jobs/{job['id']}/report", headers=auth(key)).json()
    assert report["spec"] == expected

    listing = client.get(f"/v1/jobs/{job['id']}/figures", headers=auth(key)).json()
    names = {f["name"]: f for f in listing["figures"]}
    assert {"weight_grad_std", "activation_p98_std", "activation_histograms_init", "test_error"} <= set(names)
    assert names["weight_grad_std"]["paper"] == "Fig 9"

    png = client.get(names["weight_grad_std"]["png"], headers=auth(key))
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG")
    svg = client.get(f"/v1/jobs/{job['id']}/figures/weight_grad_std.svg", headers=auth(key))
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert all(f'id="wgrad-layer{i}"' in svg.text for i in (1, 2, 3))  # one series per layer
    again = client.get(f"/v1/jobs/{job['id']}/figures/weight_grad_std.svg", headers=auth(key))
    assert again.content == svg.content  # served from the cache

    assert client.get(f"/v1/jobs/{job['id']}/figures/nope.png", headers=auth(key)).status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}/figures/weight_grad_std.gif", headers=auth(key)).status_code in (404,
                                                                                                              422)
    # Another tenant never sees it, cached or not.
    assert client.get(f"/v1/jobs/{job['id']}/figures/weight_grad_std.svg", headers=auth(other_key)).status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}/figures", headers=auth(other_key)).status_code == 404


def test_figures_of_an_unfinished_job_are_409(idle_client: TestClient, key: str) -> None:
    r = idle_client.post("/v1/experiments", json={"preset": "fig6_8_standard", "overrides": TINY}, headers=auth(key))
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert idle_client.get(f"/v1/jobs/{job_id}/figures", headers=auth(key)).status_code == 409
    assert idle_client.get(f"/v1/jobs/{job_id}/figures/activation_histograms_init.png",
                           headers=auth(key)).status_code == 409


def test_bad_preset_submissions_are_422(idle_client: TestClient, key: str) -> None:
    for body, field in (({"preset": "fig99"}, "preset"), ({"preset": "fig2_sigmoid", "budget": "huge"}, "budget"),
                        ({"preset": "fig2_sigmoid", "overrides": [1]}, "overrides"),
                        ({"preset": "fig2_sigmoid", "model": {}}, "model"),
                        ({"preset": "fig2_sigmoid", "overrides": {"train": {"lr": -1}}}, "train.lr")):
        r = idle_client.post("/v1/experiments", json=body, headers=auth(key))
        assert r.status_code == 422, (body, r.text)
        assert r.json()["errors"][0]["field"] == field, r.json()


def test_mnist_preset_without_files_is_refused_at_submission(idle_client: TestClient, key: str) -> None:
    r = idle_client.post("/v1/experiments", json={"preset": "table1_tanh_n_mnist"}, headers=auth(key))
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["dataset"] == "mnist"
    assert "mnist" in problem["detail"] and "GLOROT_DATA_DIR" in problem["detail"]
