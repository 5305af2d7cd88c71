"""Uploaded files are checked before anything of them runs: a pickle planted anywhere, TorchScript and
zip bombs are refused with a 4xx and the marker file a planted pickle would create never appears; the
same CNN gives the same probe points in every format; mismatched weights name every bad key.

These run the checks in-process (``inspect_model_file``): if anything executed the file's contents it
would be this test process, so a missing marker proves nothing ran."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from upload_fixtures import (
    CNN_ARCH,
    CNN_INPUT,
    evil_pickle,
    evil_torch_save,
    plant_in_pt2,
    small_cnn,
    torchscript_file,
    write_cnn_files,
    zip_bomb,
)

from glorot_core.uploads.errors import UploadRefused
from glorot_core.uploads.inspect import inspect_model_file
from glorot_core.uploads.metadata import MODEL_FORMATS


def _meta(fmt: str) -> dict[str, object]:
    return {"format": fmt} if fmt == "exported" else {"format": fmt, "architecture": CNN_ARCH, "input": CNN_INPUT}


@pytest.fixture(scope="module")
def cnn_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_cnn_files(tmp_path_factory.mktemp("cnn"))


def test_same_cnn_same_probe_points_in_every_format(cnn_files: dict[str, Path]) -> None:
    infos = {fmt: inspect_model_file(p, _meta(fmt)) for fmt, p in cnn_files.items()}
    lists = {fmt: [p.to_dict() for p in info.probe_points] for fmt, info in infos.items()}
    assert lists["safetensors"] == lists["state_dict"] == lists["exported"]
    # after each activation module, named by its index in the Sequential, per-example shapes
    assert [(p["name"], p["kind"], p["shape"], p["activation"]) for p in lists["exported"]] == [
        ("1", "conv", [4, 6, 6], "tanh"), ("5", "dense", [10], "softsign")]
    assert {info.parameters for info in infos.values()} == {sum(p.numel() for p in small_cnn().parameters())}


@pytest.mark.parametrize("fmt", MODEL_FORMATS)
@pytest.mark.parametrize("payload", ["bare pickle", "torch.save pickle"])
def test_pickle_refused_under_every_format_name(tmp_path: Path, fmt: str, payload: str) -> None:
    marker = tmp_path / "executed"
    path = tmp_path / "model.bin"
    path.write_bytes(evil_pickle(marker) if payload == "bare pickle" else evil_torch_save(marker))
    with pytest.raises(UploadRefused) as e:
        inspect_model_file(path, _meta(fmt))
    assert 400 <= e.value.status < 500
    assert not marker.exists()


@pytest.mark.parametrize("payload", ["bare pickle", "torch.save pickle"])
def test_pickle_planted_in_a_valid_pt2_refused(tmp_path: Path, cnn_files: dict[str, Path], payload: str) -> None:
    marker = tmp_path / "executed"
    planted = tmp_path / "planted.pt2"
    plant_in_pt2(cnn_files["exported"], planted,
                 evil_pickle(marker) if payload == "bare pickle" else evil_torch_save(marker))
    with pytest.raises(UploadRefused) as e:
        inspect_model_file(planted, _meta("exported"))
    assert e.value.status == 422 and e.value.slug == "unsafe-pickle"
    assert "sample_inputs" in e.value.detail
    assert not marker.exists()


@pytest.mark.parametrize("fmt", MODEL_FORMATS)
def test_torchscript_refused(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "scripted.pt"
    torchscript_file(path)
    with pytest.raises(UploadRefused) as e:
        inspect_model_file(path, _meta(fmt))
    assert 400 <= e.value.status < 500
    if fmt != "safetensors":  # safetensors never opens a zip: the header parse fails first
        assert e.value.slug == "torchscript-refused"


@pytest.mark.parametrize("fmt", ["state_dict", "exported"])
def test_zip_bomb_refused_from_its_directory(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "bomb.pt2"
    zip_bomb(path)
    assert path.stat().st_size < (2 << 20)  # a small file that inflates 100× or more
    with pytest.raises(UploadRefused) as e:
        inspect_model_file(path, _meta(fmt))
    assert (e.value.status, e.value.slug) == (422, "archive-too-large")


def test_weights_mismatch_names_every_key(tmp_path: Path) -> None:
    state = small_cnn().state_dict()
    state["4.weight"] = torch.zeros(10, 35)  # mis-shaped
    del state["0.bias"]  # missing
    state["9.weight"] = torch.zeros(1)  # unexpected
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(UploadRefused) as e:
        inspect_model_file(path, _meta("safetensors"))
    assert (e.value.status, e.value.slug) == (422, "weights-mismatch")
    assert e.value.extra["missing_keys"] == ["0.bias"]
    assert e.value.extra["unexpected_keys"] == ["9.weight"]
    assert e.value.extra["mis_shaped_keys"] == [{"key": "4.weight", "expected": [10, 36], "got": [10, 35]}]


def test_unknown_format_is_415() -> None:
    with pytest.raises(UploadRefused) as e:
        inspect_model_file(Path("unused"), {"format": "onnx"})
    assert e.value.status == 415
