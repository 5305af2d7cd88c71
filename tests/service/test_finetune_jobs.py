"""Fine-tuning an uploaded model through the API (issue 8 item 5): accepted when the uploaded .npz has
labels and the job's report has a snapshot per ``diagnostics.every`` steps; refused with a 422 naming
``train.steps`` when the data have no labels (random inputs, or an .npz without ``labels``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from service_support import auth, wait_state

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/upload_fixtures.py
from upload_fixtures import CNN_ARCH, CNN_INPUT, write_cnn_files


def _post(c: TestClient, key: str, route: str, path: Path, meta: dict[str, Any] | None = None) -> str:
    data = {"metadata": json.dumps(meta)} if meta is not None else None
    r = c.post(route, headers=auth(key), files={"file": (path.name, path.read_bytes())}, data=data)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_fine_tuning_needs_labels_and_then_snapshots_every_k_steps(client: TestClient, key: str,
                                                                  tmp_path: Path) -> None:
    model_id = _post(client, key, "/v1/models", write_cnn_files(tmp_path)["safetensors"],
                     {"format": "safetensors", "architecture": CNN_ARCH, "input": CNN_INPUT})
    x = np.random.default_rng(0).normal(size=(40, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "labelled.npz", inputs=x, labels=np.arange(40) % 10)
    np.savez(tmp_path / "unlabelled.npz", inputs=x)
    labelled = _post(client, key, "/v1/data", tmp_path / "labelled.npz")
    unlabelled = _post(client, key, "/v1/data", tmp_path / "unlabelled.npz")
    spec = {"model": {"source": "uploaded", "model_id": model_id}, "train": {"steps": 4, "lr": 0.01},
            "diagnostics": {"every": 2, "monitor_examples": 20, "jacobian": {"mode": "off"}}}
    for data in ({"dataset": "npz", "upload_id": unlabelled}, {"dataset": "random", "shape": [1, 8, 8]}):
        r = client.post("/v1/experiments", headers=auth(key), json={**spec, "data": data})
        assert r.status_code == 422, r.text
        assert [e["field"] for e in r.json()["errors"]] == ["train.steps"]
        assert "labels" in r.json()["errors"][0]["message"]
    r = client.post("/v1/experiments", headers=auth(key), json={**spec, "data": {"dataset": "npz",
                                                                                 "upload_id": labelled}})
    assert r.status_code == 202, r.text
    job = wait_state(client, key, r.json()["id"], {"SUCCEEDED", "FAILED", "CANCELLED"})
    assert job["state"] == "SUCCEEDED", job["error"]
    report = client.get(f"/v1/jobs/{job['id']}/report", headers=auth(key)).json()
    assert [s["step"] for s in report["snapshots"]] == [0, 2, 4]
    assert [s["examples_seen"] for s in report["snapshots"]] == [0, 20, 40]
    assert all(s["train_loss"] > 0 for s in report["snapshots"][1:])
