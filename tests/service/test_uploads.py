"""The uploads API on both databases: a CNN uploaded as safetensors, state_dict and .pt2 lists the same
probe points; a planted pickle, TorchScript and a zip bomb are refused with nothing executed; 413 with
and without Content-Length; 415; 422 naming keys; tenant scoping; delete while a job uses it → 409;
blobs stored once per tenant in chunks and read back intact."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_support import auth, make_settings
from sqlalchemy.orm import Session, sessionmaker

from glorot_service.app import build_app
from jobs import blobs
from jobs.db import transaction
from jobs.models import Blob, BlobChunk, Job, JobState, Tenant
from jobs.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/upload_fixtures.py, shared with the unit tests
from upload_fixtures import CNN_ARCH, CNN_INPUT, evil_torch_save, plant_in_pt2, write_cnn_files

MAX_UPLOAD = 64 * 1024


@pytest.fixture
def up_client(db_url: str, tmp_path: Path, factory: sessionmaker[Session]) -> Iterator[TestClient]:
    """No runner; a small upload limit (64 KiB) and a chunk of 4 KiB so that files span several chunks."""
    settings = make_settings(db_url, tmp_path, max_upload_bytes=MAX_UPLOAD, upload_chunk_bytes=4096,
                             upload_check_timeout_s=300)
    with TestClient(build_app(settings, start_runner=False)) as c:
        yield c


def _meta(fmt: str) -> dict[str, Any]:
    return {"format": fmt} if fmt == "exported" else {"format": fmt, "architecture": CNN_ARCH, "input": CNN_INPUT}


def _upload(c: TestClient, key: str, path: Path, meta: dict[str, Any]) -> Any:
    return c.post("/v1/models", headers=auth(key), files={"file": (path.name, path.read_bytes())},
                  data={"metadata": json.dumps(meta)})


def _check_model_list_refusals(c: TestClient, key: str, other_key: str, cursor: str) -> None:
    """A models cursor is the caller's, for the models list only (400 elsewhere, as every list's cursor);
    bad ``limit``/``cursor`` values are 422 naming the parameter."""
    for who, path in ((other_key, "/v1/models"), (key, "/v1/jobs"), (key, "/v1/suites")):
        r = c.get(path, headers=auth(who), params={"cursor": cursor})
        assert r.status_code == 400 and r.json()["type"] == "urn:glorot:problem:invalid-cursor", (path, r.text)
    for query, field in (("limit=0", "limit"), ("limit=1&limit=2", "limit"), ("cursor=" + "x" * 2001, "cursor")):
        r = c.get(f"/v1/models?{query}", headers=auth(key))
        assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json"), r.text
        assert r.json()["errors"][0]["loc"] == ["query", field], r.json()


def test_same_cnn_in_three_formats(up_client: TestClient, key: str, other_key: str, tmp_path: Path,
                                   factory: sessionmaker[Session], settings: Settings) -> None:
    files = write_cnn_files(tmp_path)
    bodies = {}
    for fmt, path in files.items():
        r = _upload(up_client, key, path, {**_meta(fmt), "name": f"cnn-{fmt}"})
        assert r.status_code == 201, r.text
        bodies[fmt] = r.json()
        assert r.headers["location"] == f"/v1/models/{bodies[fmt]['id']}"
        assert bodies[fmt]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert bodies[fmt]["size"] == path.stat().st_size and bodies[fmt]["format"] == fmt
    points = [b["probe_points"] for b in bodies.values()]
    assert points[0] == points[1] == points[2]
    assert [(p["name"], p["shape"]) for p in points[0]] == [("1", [4, 6, 6]), ("5", [10])]

    listed = up_client.get("/v1/models", headers=auth(key), params={"limit": 2}).json()
    assert len(listed["items"]) == 2 and listed["next_cursor"]
    rest = up_client.get("/v1/models", headers=auth(key), params={"cursor": listed["next_cursor"]}).json()
    assert rest["next_cursor"] is None
    # newest first (uploaded one after another), each once
    assert [m["id"] for m in listed["items"] + rest["items"]] == [b["id"] for b in bodies.values()][::-1]
    _check_model_list_refusals(up_client, key, other_key, listed["next_cursor"])
    one = bodies["exported"]["id"]
    assert up_client.get(f"/v1/models/{one}", headers=auth(key)).json()["probe_points"] == points[0]
    # another tenant sees nothing and cannot delete
    assert up_client.get(f"/v1/models/{one}", headers=auth(other_key)).status_code == 404
    assert up_client.get("/v1/models", headers=auth(other_key)).json()["items"] == []
    assert up_client.delete(f"/v1/models/{one}", headers=auth(other_key)).status_code == 404

    # the stored blob is chunked and reads back byte for byte
    with factory() as s:
        blob = s.query(Blob).filter_by(sha256=bodies["exported"]["sha256"]).one()
        chunks = s.query(BlobChunk).filter_by(blob_id=blob.id).count()
        assert chunks == -(-blob.size // 4096) > 1
        assert blobs.read_to_file(s, blob.id, tmp_path / "back.pt2") == blob.sha256
    assert (tmp_path / "back.pt2").read_bytes() == files["exported"].read_bytes()

    # the same bytes again: a new model, the same blob (stored once)
    again = _upload(up_client, key, files["exported"], _meta("exported")).json()
    with factory() as s:
        assert s.query(Blob).filter_by(sha256=again["sha256"]).count() == 1


def test_delete_in_use_is_409(up_client: TestClient, key: str, tmp_path: Path,
                              factory: sessionmaker[Session]) -> None:
    files = write_cnn_files(tmp_path)
    model = _upload(up_client, key, files["safetensors"], _meta("safetensors")).json()
    with transaction(factory) as s:  # the spec does not take model sources yet: the job is inserted directly
        tenant = s.query(Tenant).filter_by(name="acme").one()
        job = Job(tenant_id=tenant.id, state=JobState.QUEUED,
                  spec={"model": {"source": "uploaded", "model_id": model["id"]}})
        s.add(job)
    r = up_client.delete(f"/v1/models/{model['id']}", headers=auth(key))
    assert r.status_code == 409 and r.json()["type"].endswith("upload-in-use")
    with transaction(factory) as s:
        s.query(Job).filter_by(id=job.id).update({"state": JobState.CANCELLED})
    assert up_client.delete(f"/v1/models/{model['id']}", headers=auth(key)).status_code == 204
    assert up_client.get(f"/v1/models/{model['id']}", headers=auth(key)).status_code == 404
    with factory() as s:  # its blob went with it
        assert s.query(Blob).filter_by(sha256=model["sha256"]).count() == 0


def test_planted_pickle_refused_nothing_stored(up_client: TestClient, key: str, tmp_path: Path,
                                               factory: sessionmaker[Session]) -> None:
    files = write_cnn_files(tmp_path)
    marker = tmp_path / "executed"
    planted = tmp_path / "planted.pt2"
    plant_in_pt2(files["exported"], planted, evil_torch_save(marker))
    for fmt, path in (("exported", planted), ("state_dict", tmp_path / "evil.pt")):
        if fmt == "state_dict":
            path.write_bytes(evil_torch_save(marker))
        r = _upload(up_client, key, path, _meta(fmt))
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["type"].endswith("unsafe-pickle")
    assert not marker.exists()
    with factory() as s:
        assert s.query(Blob).count() == 0


def test_limits_and_refusals(up_client: TestClient, key: str, tmp_path: Path) -> None:
    big = tmp_path / "big.safetensors"
    big.write_bytes(b"\0" * (MAX_UPLOAD + 1))
    r = _upload(up_client, key, big, _meta("safetensors"))  # with Content-Length
    assert r.status_code == 413, r.text

    boundary = "xyz"
    def chunked() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding: chunked
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n"
               f"{json.dumps(_meta('safetensors'))}\r\n--{boundary}\r\nContent-Disposition: form-data; "
               "name=\"file\"; filename=\"big\"\r\n\r\n").encode()
        for _ in range(MAX_UPLOAD // 4096 + 2):
            yield b"\0" * 4096
        yield f"\r\n--{boundary}--\r\n".encode()
    r = up_client.post("/v1/models", headers={**auth(key), "Content-Type": f"multipart/form-data; boundary={boundary}"},
                       content=chunked())
    assert r.status_code == 413, r.text

    small = tmp_path / "m.onnx"
    small.write_bytes(b"onnx")
    assert _upload(up_client, key, small, {"format": "onnx"}).status_code == 415
    assert up_client.post("/v1/models", headers=auth(key), json={"format": "exported"}).status_code == 415
    r = _upload(up_client, key, small, {"format": "safetensors"})
    assert r.status_code == 422 and "architecture" in r.json()["detail"]
    r = _upload(up_client, key, small, _meta("safetensors"))
    assert r.status_code == 422 and r.json()["type"].endswith("corrupt-file")


def test_npz_data(up_client: TestClient, key: str, other_key: str, tmp_path: Path) -> None:
    import numpy as np

    path = tmp_path / "probe.npz"
    np.savez(path, inputs=np.zeros((6, 1, 8, 8), np.float32), labels=np.arange(6))
    r = up_client.post("/v1/data", headers=auth(key), files={"file": ("probe.npz", path.read_bytes())})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["examples"] == 6 and body["arrays"]["inputs"]["shape"] == [6, 1, 8, 8]
    assert up_client.get(f"/v1/data/{body['id']}", headers=auth(key)).json()["sha256"] == body["sha256"]
    assert up_client.get(f"/v1/data/{body['id']}", headers=auth(other_key)).status_code == 404
    bad = tmp_path / "bad.npz"
    np.savez(bad, inputs=np.array([object()] * 3, dtype=object))
    r = up_client.post("/v1/data", headers=auth(key), files={"file": ("bad.npz", bad.read_bytes())})
    assert r.status_code == 422 and r.json()["type"].endswith("unsupported-array")
