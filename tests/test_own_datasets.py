"""The user's own data sets (issue 9 item 10): IDX files of any image size (``idx``) and one ``.npz`` of
arrays (``npz``), with input_dim and num_classes derived from the files, checked against the spec, size
limits, and errors that name the file and the shape found."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from glorot_core.data import open_dataset
from glorot_core.data.idx import load_mnist_uint8
from glorot_core.errors import DataUnavailable, SpecNotRunnable
from glorot_core.runner import run_experiment
from glorot_core.spec import validate_spec


def _idx(data: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, data.ndim]) + struct.pack(f">{data.ndim}I", *data.shape) + data.tobytes()


def _digits(n: int, classes: int, side: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """side×side uint8 images whose class k is a bright k-th horizontal band on noise: learnable in a few
    dozen updates, so a run shows the data really reached the model."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.integers(0, 60, (n, side, side))
    band = side // classes
    for i, k in enumerate(y):
        x[i, k * band:(k + 1) * band] += 180
    return x.astype(np.uint8), y.astype(np.uint8)


def _write_idx(root: Path, side: int = 8, classes: int = 3) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", 300, 0), ("t10k", 60, 1)):
        x, y = _digits(n, classes, side, seed)
        (root / f"{prefix}-images-idx3-ubyte").write_bytes(_idx(x))
        (root / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx(y))


def _spec(dataset: str, root: Path, input_dim: int, classes: int, **data: Any) -> Any:
    return validate_spec({
        "device": "cpu",
        "model": {"input_dim": input_dim, "num_classes": classes, "hidden": [32, 32], "init": "normalized"},
        "data": {"dataset": dataset, "root": str(root), "test_examples": 100, **data},
        "train": {"steps": 200, "lr": 0.1},
        "diagnostics": {"every": 100, "monitor_examples": 40, "jacobian": {"examples": 2}},
    })


def _check_report(report: dict[str, Any], input_dim: int, classes: int) -> None:
    json.dumps(report, allow_nan=False)
    assert [s["step"] for s in report["snapshots"]] == [0, 100, 200]
    assert report["layers"][0]["fan_in"] == input_dim and report["layers"][-1]["fan_out"] == classes
    first, last = report["snapshots"][0], report["snapshots"][-1]
    assert last["test_error"] < first["test_error"] and last["test_error"] < report["resolved"]["majority_class_error"]
    assert all(lay["jacobian"] is not None for lay in last["layers"][:-1])


def test_an_8x8_idx_data_set_trains_and_reports(tmp_path: Path) -> None:
    _write_idx(tmp_path)
    data = open_dataset("idx", tmp_path)
    assert (data.input_dim, data.num_classes, data.example_shape) == (64, 3, (8, 8))
    assert data.fixed_set("test")[0].shape == (60, 64)
    _check_report(run_experiment(_spec("idx", tmp_path, 64, 3)), 64, 3)


def test_an_npz_data_set_trains_and_reports(tmp_path: Path) -> None:
    """Float features are used as given; without x_test the last sixth is the test split."""
    x, y = _digits(420, 4, 8, 2)
    features = (x.astype(np.float32) / 255.0 - 0.5).reshape(420, 2, 32)  # (n, 2, 32): 64 inputs
    np.savez_compressed(tmp_path / "mine.npz", x=features, y=y.astype(np.int64))
    data = open_dataset("npz", tmp_path)  # the folder holds exactly one .npz
    assert (data.input_dim, data.num_classes) == (64, 4)
    xt, yt = data.fixed_set("test")
    assert xt.shape == (70, 64) and torch.equal(xt, torch.from_numpy(features[-70:].reshape(70, 64)))
    assert torch.equal(yt, torch.from_numpy(y[-70:].astype(np.int64)))
    assert data.fixed_set("validation")[0].shape == (58, 64)  # (420 − 70) // 6
    _check_report(run_experiment(_spec("npz", tmp_path / "mine.npz", 64, 4)), 64, 4)


def test_npz_uint8_pixels_use_input_range_and_x_test(tmp_path: Path) -> None:
    x = np.tile(np.arange(12, dtype=np.uint8)[:, None], (1, 5)) * 20
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(12) % 2, x_test=x[:3], y_test=np.array([0, 1, 1]))
    data = open_dataset("npz", tmp_path / "d.npz", input_range=(0.0, 1.0))
    xt, yt = data.fixed_set("test")
    assert yt.tolist() == [0, 1, 1] and torch.allclose(xt[:, 0], torch.tensor([0.0, 20, 40]) / 255)
    assert data.fixed_set("validation")[1].shape == (2,)


def test_a_spec_that_does_not_fit_the_files_is_refused_naming_both(tmp_path: Path) -> None:
    _write_idx(tmp_path, side=8)
    with pytest.raises(SpecNotRunnable) as err:
        run_experiment(_spec("idx", tmp_path, 784, 10))
    msg = str(err.value)
    assert str(tmp_path) in msg and "(8, 8)" in msg and "set it to 64" in msg and "set it to 3" in msg


def test_mnist_with_other_image_sizes_points_to_idx(tmp_path: Path) -> None:
    _write_idx(tmp_path, side=8)
    with pytest.raises(DataUnavailable, match=r"\(300, 8, 8\).*'idx'"):
        load_mnist_uint8(tmp_path, "train")


@pytest.mark.parametrize("case", ["no_y", "one_test", "labels_float", "labels_short", "nan", "object",
                                  "scalar_x", "too_wide", "too_big", "not_zip", "two_files"])
def test_npz_errors_name_the_file_and_what_was_found(tmp_path: Path, case: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "d.npz"
    x, y = np.zeros((12, 3), np.float32), np.arange(12) % 2
    arrays: dict[str, Any] = {"x": x, "y": y}
    expect = str(path)
    if case == "no_y":
        arrays = {"x": x, "labels": y}
        expect = "no array 'y'"
    elif case == "one_test":
        arrays["x_test"] = x
        expect = "x_test / y_test"
    elif case == "labels_float":
        arrays["y"] = y.astype(np.float32)
        expect = "dtype float32"
    elif case == "labels_short":
        arrays["y"] = y[:5]
        expect = r"shape \(5,\); expected \(12,\)"
    elif case == "nan":
        x[3, 1] = np.nan
        expect = "non-finite"
    elif case == "object":
        arrays["x"] = np.array([{"a": 1}] * 12, dtype=object).reshape(12, 1)
        expect = "without pickles"
    elif case == "scalar_x":
        arrays["x"] = np.zeros(12, np.float32)
        expect = r"shape \(12,\)"
    elif case == "too_wide":
        arrays["x"] = np.zeros((12, 300, 300), np.uint8)
        expect = "90000 inputs per example"
    elif case == "too_big":
        monkeypatch.setenv("GLOROT_MAX_DATA_BYTES", "100")
        expect = "above the limit of 100"
    if case == "not_zip":
        path.write_bytes(b"x and y, honest")
        expect = "not an .npz"
    else:
        np.savez(path, **arrays)
    root = path
    if case == "two_files":
        np.savez(tmp_path / "other.npz", x=x, y=y)
        root, expect = tmp_path, "2 .npz files"
    with pytest.raises(DataUnavailable, match=expect) as err:
        open_dataset("npz", root)
    assert str(tmp_path) in str(err.value)
