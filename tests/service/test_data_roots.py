"""Data roots in the service are names of folders under the data directory, never paths a tenant picks.

The API refuses a path with a 422 naming ``data.root``; the worker resolves a name under
``GLOROT_DATA_DIR`` and fails a missing one with a message that names only the name, so a tenant
learns nothing about the worker's file system (``jobs.data_roots``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from service_support import TINY_SPEC, auth, make_settings, new_key, wait_state
from sqlalchemy.orm import Session, sessionmaker

from glorot_core.errors import DataUnavailable
from glorot_core.spec import validate_spec
from glorot_service.app import build_app
from jobs.data_roots import name_problem, resolve_data_root
from jobs.settings import Settings

NPZ_SPEC: dict[str, Any] = {**TINY_SPEC, "model": {"hidden": [8], "input_dim": 4, "num_classes": 2},
                            "data": {"dataset": "npz", "root": "toy", "test_examples": 20}}

PATHS = ["/etc", "/nonexistent", "../secrets", "toy/../../etc", "~root", "~/x", "C:\\data", "a\\b", ".", "..",
         ".hidden", "", "toy/", "/"]


def _spec(root: str | None) -> dict[str, Any]:
    return {**NPZ_SPEC, "data": {**NPZ_SPEC["data"], "root": root}}


def _write_toy(folder: Path) -> None:
    """A tiny two-class .npz data set: 4 inputs, 120 examples."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    x = (rng.standard_normal((120, 4)) + y[:, None]).astype(np.float32)
    np.savez(folder / "toy.npz", x=x, y=y)


@pytest.mark.parametrize("root", PATHS)
def test_api_refuses_paths_naming_data_root(idle_client: TestClient, key: str, root: str) -> None:
    r = idle_client.post("/v1/experiments", json=_spec(root), headers=auth(key))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in r.json()["errors"]] == ["data.root"], r.json()


def test_api_accepts_folder_names(idle_client: TestClient, key: str) -> None:
    for root in ("toy", "mnist", "cifar-10_v1.2", "shared/mnist/raw"):
        r = idle_client.post("/v1/experiments", json=_spec(root), headers=auth(key))
        assert r.status_code == 202, (root, r.text)


def test_openapi_states_the_name_pattern(idle_client: TestClient) -> None:
    schema = idle_client.get("/openapi.json").json()
    root = schema["components"]["schemas"]["DataSpec"]["properties"]["root"]
    assert any(branch.get("pattern") for branch in root["anyOf"]), root


def test_allow_list(tmp_path: Path) -> None:
    settings = make_settings("sqlite://", tmp_path, data_roots=["mnist"])
    assert name_problem("mnist", settings) is None
    assert name_problem("toy", settings) is not None
    assert name_problem(None, settings) is None


def test_worker_resolves_names_under_the_data_dir_and_reveals_no_path(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write_toy(data / "toy")
    settings = make_settings("sqlite://", tmp_path, data_dir=data)
    spec = resolve_data_root(validate_spec(_spec("toy")), settings)
    assert Path(spec.data.root or "") == data / "toy"
    # A missing name: the message names the name, never the data folder's path.
    with pytest.raises(DataUnavailable) as missing:
        resolve_data_root(validate_spec(_spec("nope")), settings)
    assert "'nope'" in str(missing.value) and str(data) not in str(missing.value)
    # A path that reached the worker anyway (a job stored before the check) is refused before any
    # file-system look: an existing and a missing path get the same kind of answer.
    answers = []
    for path in (str(tmp_path), str(tmp_path / "does-not-exist")):
        with pytest.raises(DataUnavailable) as refused:
            resolve_data_root(validate_spec(_spec(path)), settings)
        answers.append(str(refused.value).replace(path, "<root>"))
    assert answers[0] == answers[1]
    # No data dir configured: refused without reading anything.
    with pytest.raises(DataUnavailable, match="no data folder configured"):
        resolve_data_root(validate_spec(_spec("toy")), make_settings("sqlite://", tmp_path))
    # A generated data set needs no folder.
    shapes = validate_spec(TINY_SPEC)
    assert resolve_data_root(shapes, settings) is shapes


def test_a_named_data_set_runs_and_a_missing_one_fails_cleanly(
        db_url: str, tmp_path: Path, factory: sessionmaker[Session]) -> None:
    data = tmp_path / "data"
    _write_toy(data / "toy")
    settings: Settings = make_settings(db_url, tmp_path, data_dir=data)
    key = new_key(factory, settings, "data-roots")
    with TestClient(build_app(settings)) as client:
        ok = client.post("/v1/experiments", json=_spec("toy"), headers=auth(key)).json()["id"]
        job = wait_state(client, key, ok, {"SUCCEEDED", "FAILED", "CANCELLED"})
        assert job["state"] == "SUCCEEDED", job["error"]
        bad = client.post("/v1/experiments", json=_spec("elsewhere"), headers=auth(key)).json()["id"]
        job = wait_state(client, key, bad, {"SUCCEEDED", "FAILED", "CANCELLED"})
        assert job["state"] == "FAILED" and "DataUnavailable" in job["error"] and "'elsewhere'" in job["error"]
        assert str(data) not in job["error"] and str(tmp_path) not in job["error"]
