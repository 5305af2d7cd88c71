"""MNIST (IDX) and CIFAR-10 (binary) loaders and the file data sets of open_dataset, on tiny files in tmp_path.

Every example i carries its own index as its pixel value (and i % 10 as its label), so splits and
shuffles can be checked example by example.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from glorot_core.data import load_cifar10, load_mnist, open_dataset
from glorot_core.errors import DataUnavailable


def _idx(data: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, data.ndim]) + struct.pack(f">{data.ndim}I", *data.shape) + data.tobytes()


def _write_mnist(root: Path, n_train: int = 60, n_test: int = 10, gz: bool = False, dotted: bool = False) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n, offset in (("train", n_train, 0), ("t10k", n_test, 100)):
        idx = np.arange(offset, offset + n)
        images = np.repeat((idx % 256).astype(np.uint8)[:, None, None], 28, 1).repeat(28, 2)
        labels = (idx % 10).astype(np.uint8)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte"
            if dotted:
                name = name.replace("-idx", ".idx")
            payload = _idx(arr)
            if gz:
                (root / f"{name}.gz").write_bytes(gzip.compress(payload))
            else:
                (root / name).write_bytes(payload)


def _ids(x: torch.Tensor, input_range=(-1.0, 1.0)) -> list[int]:
    """The example index encoded in each row (every pixel of the row holds it)."""
    lo, hi = input_range
    v = ((x - lo) / (hi - lo) * 255).round().to(torch.int64)
    assert torch.all(v == v[:, :1]), "every pixel of an example holds the same value"
    return v[:, 0].tolist()


# ------------------------------------------------------------------ MNIST

def test_mnist_splits_and_range(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    x, y = load_mnist(tmp_path, "train", input_range=(-1.0, 1.0))
    assert x.shape == (50, 784) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert _ids(x) == list(range(50)) and y.tolist() == [i % 10 for i in range(50)]
    xv, yv = load_mnist(tmp_path, "validation")
    assert _ids(xv) == list(range(50, 60)) and yv.tolist() == [i % 10 for i in range(50, 60)]
    xt, _ = load_mnist(tmp_path, "test", input_range=(0.0, 1.0))
    assert xt.shape == (10, 784) and _ids(xt, (0.0, 1.0)) == list(range(100, 110))
    # byte / 255 mapped linearly: example 1 holds byte 1
    assert float(x[1, 0]) == pytest.approx(-1 + 2 / 255, abs=1e-6)
    assert float(xt[0, 0]) == pytest.approx(100 / 255, abs=1e-6)


def test_mnist_validation_is_the_last_sixth(tmp_path: Path) -> None:
    """floor(N/6) validation examples from the end (60,000 -> 50,000 / 10,000, as in the paper)."""
    _write_mnist(tmp_path / "odd", n_train=65)
    assert _ids(load_mnist(tmp_path / "odd", "validation")[0]) == list(range(55, 65))
    assert len(load_mnist(tmp_path / "odd", "train")[1]) == 55
    _write_mnist(tmp_path / "tiny", n_train=5)
    with pytest.raises(DataUnavailable):
        load_mnist(tmp_path / "tiny", "train")


def test_mnist_gz_dotted_and_torchvision_layout(tmp_path: Path) -> None:
    _write_mnist(tmp_path / "a", gz=True)
    _write_mnist(tmp_path / "b" / "MNIST" / "raw", dotted=True)
    xa, ya = load_mnist(tmp_path / "a", "validation")
    xb, yb = load_mnist(tmp_path / "b", "validation")
    assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_mnist_missing_file_names_folder_and_file(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    load_mnist(tmp_path, "train")  # the train files are still there
    with pytest.raises(DataUnavailable) as err:
        load_mnist(tmp_path, "test")
    assert "t10k-labels-idx1-ubyte" in str(err.value) and str(tmp_path) in str(err.value)
    with pytest.raises(DataUnavailable, match="does not exist"):
        load_mnist(tmp_path / "nowhere", "train")


@pytest.mark.parametrize("damage", ["magic", "truncated", "count", "label", "dims", "badgz"])
def test_mnist_malformed_files(tmp_path: Path, damage: str) -> None:
    _write_mnist(tmp_path)
    img = tmp_path / "train-images-idx3-ubyte"
    lab = tmp_path / "train-labels-idx1-ubyte"
    if damage == "magic":
        raw = bytearray(img.read_bytes())
        raw[2] = 0x0D  # float data, not unsigned bytes
        img.write_bytes(bytes(raw))
    elif damage == "truncated":
        img.write_bytes(img.read_bytes()[:-5])
    elif damage == "count":
        lab.write_bytes(_idx(np.zeros(59, dtype=np.uint8)))
    elif damage == "label":
        lab.write_bytes(_idx(np.full(60, 10, dtype=np.uint8)))
    elif damage == "dims":
        img.write_bytes(_idx(np.zeros((60, 32, 32), dtype=np.uint8)))
    else:
        img.unlink()
        (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataUnavailable):
        load_mnist(tmp_path, "train")


def test_mnist_bad_split(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    with pytest.raises(ValueError):
        load_mnist(tmp_path, "valid")  # type: ignore[arg-type]


# ------------------------------------------------------------------ CIFAR-10

def _write_cifar(folder: Path, per_batch: int = 4) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for b, name in enumerate(names):
        idx = np.arange(b * per_batch, (b + 1) * per_batch)
        rec = np.empty((per_batch, 3073), dtype=np.uint8)
        rec[:, 0] = idx % 10
        rec[:, 1:] = (idx % 256)[:, None]
        (folder / name).write_bytes(rec.tobytes())


def test_cifar10_splits(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "cifar-10-batches-bin")
    x, y = load_cifar10(tmp_path, "train")
    assert x.shape == (16, 3072) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert _ids(x) == list(range(16)) and y.tolist() == [i % 10 for i in range(16)]
    xv, _ = load_cifar10(tmp_path, "validation")
    assert _ids(xv) == list(range(16, 20))
    xt, yt = load_cifar10(tmp_path / "cifar-10-batches-bin", "test", input_range=(0.0, 1.0))
    assert _ids(xt, (0.0, 1.0)) == list(range(20, 24)) and yt.tolist() == [0, 1, 2, 3]


def test_cifar10_pixel_order_is_the_records(tmp_path: Path) -> None:
    rec = np.zeros((1, 3073), dtype=np.uint8)
    rec[0, 0] = 7
    rec[0, 1:] = np.arange(3072) % 256
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        (tmp_path / name).write_bytes(rec.tobytes())
    x, y = load_cifar10(tmp_path, "test", input_range=(0.0, 255.0))
    assert y.tolist() == [7]
    assert torch.equal(x[0].round().to(torch.int64), torch.arange(3072) % 256)


@pytest.mark.parametrize("damage", ["size", "label", "empty", "missing"])
def test_cifar10_malformed(tmp_path: Path, damage: str) -> None:
    _write_cifar(tmp_path)
    target = tmp_path / "data_batch_3.bin"
    if damage == "size":
        target.write_bytes(target.read_bytes() + b"\x00")
    elif damage == "label":
        raw = bytearray(target.read_bytes())
        raw[0] = 10
        target.write_bytes(bytes(raw))
    elif damage == "empty":
        target.write_bytes(b"")
    else:
        target.unlink()
    with pytest.raises(DataUnavailable) as err:
        load_cifar10(tmp_path, "train")
    assert "data_batch_3.bin" in str(err.value)
    load_cifar10(tmp_path, "validation")  # other splits do not need that file


# ------------------------------------------------------------------ open_dataset on files

def test_open_dataset_file_training_stream_epochs(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    ds = open_dataset("mnist", tmp_path, (-1.0, 1.0), seed=3)
    assert (ds.input_dim, ds.num_classes) == (784, 10)
    epoch1 = [i for _ in range(5) for i in _ids(ds.next_batch(10)[0])]
    assert sorted(epoch1) == list(range(50)) and epoch1 != list(range(50))  # a shuffled pass over train only
    x, y = ds.next_batch(70)  # crosses into epoch 3
    ids = _ids(x)
    assert sorted(ids[:50]) == list(range(50)) and ids[:50] != epoch1
    assert y.tolist() == [i % 10 for i in ids]
    # same seed, same order; other seed, other order
    again = open_dataset("mnist", tmp_path, (-1.0, 1.0), seed=3)
    assert _ids(again.next_batch(50)[0]) == epoch1
    other = open_dataset("mnist", tmp_path, (-1.0, 1.0), seed=4)
    assert _ids(other.next_batch(50)[0]) != epoch1


def test_open_dataset_file_fixed_sets(tmp_path: Path) -> None:
    _write_cifar(tmp_path, per_batch=6)
    ds = open_dataset("cifar10", tmp_path, (0.0, 1.0), seed=0)
    xt, yt = ds.fixed_set("test")
    assert _ids(xt, (0.0, 1.0)) == list(range(30, 36))
    xm, ym = ds.fixed_set("monitor", 4)
    assert torch.equal(xm, xt[:4]) and torch.equal(ym, yt[:4])
    assert ds.fixed_set("monitor")[0].shape == (6, 3072)  # 300 asked, only 6 test examples exist
    assert _ids(ds.fixed_set("validation")[0], (0.0, 1.0)) == list(range(24, 30))
    with pytest.raises(ValueError):
        ds.fixed_set("train")  # type: ignore[arg-type]


def test_open_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailable):
        open_dataset("mnist", None)
    with pytest.raises(DataUnavailable) as err:
        open_dataset("cifar10", tmp_path)
    assert "data_batch_1.bin" in str(err.value) and str(tmp_path) in str(err.value)
    with pytest.raises(ValueError):
        open_dataset("imagenet", tmp_path)
