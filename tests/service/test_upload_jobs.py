"""A job on an uploaded model, through the API: submitted with {"source": "uploaded", "model_id": ID}, its
blob fetched by the worker (sha256 checked), loaded in the job's process, and diagnosed (issue 8, item 3)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from service_support import auth, wait_state

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/upload_fixtures.py
from upload_fixtures import CNN_ARCH, CNN_INPUT, write_cnn_files


def _upload(c: TestClient, key: str, path: Path, meta: dict[str, Any]) -> Any:
    r = c.post("/v1/models", headers=auth(key), files={"file": (path.name, path.read_bytes())},
               data={"metadata": json.dumps(meta)})
    assert r.status_code == 201, r.text
    return r.json()


def test_job_on_an_uploaded_model_succeeds_with_probe_point_names(client: TestClient, key: str, other_key: str,
                                                                  tmp_path: Path) -> None:
    files = write_cnn_files(tmp_path)
    model = _upload(client, key, files["safetensors"], {"format": "safetensors", "architecture": CNN_ARCH,
                                                         "input": CNN_INPUT})
    spec = {"model": {"source": "uploaded", "model_id": model["id"]},
            "data": {"dataset": "random", "shape": [1, 8, 8]}, "diagnostics": {"monitor_examples": 20}}
    r = client.post("/v1/experiments", headers=auth(key), json=spec)
    assert r.status_code == 202, r.text
    job = wait_state(client, key, r.json()["id"], {"SUCCEEDED", "FAILED", "CANCELLED"})
    assert job["state"] == "SUCCEEDED", job["error"]
    report = client.get(f"/v1/jobs/{job['id']}/report", headers=auth(key)).json()
    names = [p["name"] for p in model["probe_points"]]
    assert [lay["name"] for lay in report["layers"]] == names == ["1", "5"]
    assert [lay["name"] for lay in report["snapshots"][0]["layers"]] == names
    assert report["snapshots"][0]["layers"][0]["activation"]["std"] > 0

    # Another tenant cannot name this model; an unknown id is a 422 naming model.model_id.
    for k, model_id in ((other_key, model["id"]), (key, "no-such-model")):
        r = client.post("/v1/experiments", headers=auth(k),
                        json={**spec, "model": {"source": "uploaded", "model_id": model_id}})
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["field"] == "model.model_id"
    # A local file path is for offline runs only.
    r = client.post("/v1/experiments", headers=auth(key),
                    json={**spec, "model": {"source": "file", "path": "/etc/passwd", "format": "exported"}})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "model.source"
