"""MNIST from local IDX files (never downloaded).

Expected in ``root`` (or ``root/MNIST/raw``, the torchvision layout, or ``root/mnist``), each optionally
gzipped (``.gz``); the dotted variant ``train-images.idx3-ubyte`` is accepted too::

    train-images-idx3-ubyte  train-labels-idx1-ubyte  t10k-images-idx3-ubyte  t10k-labels-idx1-ubyte

Splits as in the paper (50k train / 10k validation / 10k test): ``validation`` is the last ``N // 6``
examples of the N-example training file and ``train`` the first ``N - N // 6`` (N = 60,000 gives exactly
50,000 / 10,000); ``test`` is the whole t10k file. The 1/6 rule keeps small files (tests) usable.
Inputs: 784 = 28x28 pixels row-major, byte / 255 mapped linearly to ``input_range``.

The data set ``idx`` reads the same four files with images of any size, (n, h, w), (n, h, w, c) or
(n, d): ``input_dim`` is the product of the per-example dimensions and ``num_classes`` the largest
label + 1, both derived from the files by ``FileDataset`` and checked against the spec by the caller.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from glorot_core.data._files import Split, check_labels, check_split, find_file, read_bytes, to_float
from glorot_core.errors import DataUnavailable

__all__ = ["MAX_CLASSES", "MAX_INPUT_DIM", "MNIST_FILES", "load_idx_uint8", "load_mnist", "load_mnist_uint8",
           "read_idx"]

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_FOLDERS = ("", "MNIST/raw", "mnist")
_UBYTE = 0x08
MAX_INPUT_DIM = 65_536
"""Inputs per example accepted from a file (the spec's widest layer)."""
MAX_CLASSES = 65_536
"""Classes accepted from a file's labels (the spec's widest output)."""


def read_idx(path: Path, dataset: str = "MNIST") -> np.ndarray:
    """An IDX file of unsigned bytes as a uint8 array of its stated shape; checks magic number and size.

    Format: two zero bytes, the type code 0x08 (unsigned byte), the number of dimensions d, then d
    big-endian uint32 sizes, then the data.
    """
    raw = read_bytes(dataset, path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _UBYTE or raw[3] == 0:
        raise DataUnavailable(f"{dataset}: {str(path)!r} is not an IDX file of unsigned bytes "
                              f"(bad magic number {raw[:4].hex() or 'empty'}, expected 000008xx)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataUnavailable(f"{dataset}: {str(path)!r} is truncated inside its header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise DataUnavailable(f"{dataset}: {str(path)!r} has {len(raw)} bytes, its header {dims} implies {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()  # writable, owns its memory


def _read_pair(root: str | Path, which: str, dataset: str = "MNIST") -> tuple[np.ndarray, np.ndarray, Path]:
    """Images (n, …) and int64 labels (n,) of the train or t10k file pair, checked against each other."""
    img_name, lab_name = MNIST_FILES[which]
    img_path = find_file(dataset, root, _FOLDERS, (img_name, img_name.replace("-idx", ".idx")))
    lab_path = find_file(dataset, root, _FOLDERS, (lab_name, lab_name.replace("-idx", ".idx")))
    images = read_idx(img_path, dataset)
    labels = read_idx(lab_path, dataset)
    if images.ndim < 2:
        raise DataUnavailable(f"{dataset}: {str(img_path)!r} holds shape {images.shape}, expected (n, ...) "
                              f"with at least one dimension per example")
    if labels.ndim != 1:
        raise DataUnavailable(f"{dataset}: {str(lab_path)!r} holds shape {labels.shape}, expected (n,)")
    if labels.shape[0] != images.shape[0]:
        raise DataUnavailable(f"{dataset}: {str(img_path)!r} has {images.shape[0]} images but {str(lab_path)!r} "
                              f"has {labels.shape[0]} labels")
    if images.shape[0] == 0:
        raise DataUnavailable(f"{dataset}: {str(img_path)!r} holds no examples")
    dim = int(np.prod(images.shape[1:], dtype=np.int64))
    if not 1 <= dim <= MAX_INPUT_DIM:
        raise DataUnavailable(f"{dataset}: {str(img_path)!r} holds shape {images.shape}: {dim} inputs per "
                              f"example, the limit is {MAX_INPUT_DIM}")
    check_labels(dataset, lab_path, labels, 10 if dataset == "MNIST" else MAX_CLASSES)
    return images, labels.astype(np.int64), img_path


def _read_mnist_pair(root: str | Path, which: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels, path = _read_pair(root, which)
    if images.shape[1:] != (28, 28):
        raise DataUnavailable(f"MNIST: {str(path)!r} holds shape {images.shape}, expected (n, 28, 28); "
                              f"for IDX files of another image size use data set 'idx'")
    return images.reshape(images.shape[0], 784), labels


def _split_train(dataset: str, root: str | Path, images: np.ndarray, labels: np.ndarray,
                 split: str) -> tuple[np.ndarray, np.ndarray]:
    """The first N − N//6 training examples (``train``) or the last N//6 (``validation``)."""
    n_val = images.shape[0] // 6
    if n_val == 0:
        raise DataUnavailable(f"{dataset}: the training file in {str(root)!r} has {images.shape[0]} examples, "
                              f"fewer than the 6 needed to set a validation sixth aside")
    cut = images.shape[0] - n_val
    if split == "train":
        return images[:cut], labels[:cut]
    return images[cut:], labels[cut:]


def load_idx_uint8(root: str | Path, split: Split) -> tuple[np.ndarray, np.ndarray]:
    """Data set ``idx``: raw bytes uint8 (n, ...) as stored and labels int64 (n,), splits as for MNIST."""
    check_split(split)
    if split == "test":
        return _read_pair(root, "test", "IDX")[:2]
    images, labels, _ = _read_pair(root, "train", "IDX")
    return _split_train("IDX", root, images, labels, split)


def load_mnist_uint8(root: str | Path, split: Split) -> tuple[np.ndarray, np.ndarray]:
    """Raw pixels uint8 (n, 784) and labels int64 (n,) of one split (see the module docstring)."""
    check_split(split)
    if split == "test":
        return _read_mnist_pair(root, "test")
    images, labels = _read_mnist_pair(root, "train")
    return _split_train("MNIST", root, images, labels, split)


def load_mnist(
    root: str | Path, split: Split, input_range: tuple[float, float] = (-1.0, 1.0)
) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST ``split`` from the IDX files in ``root``: x float32 (n, 784) in ``input_range``, y int64 (n,).

    Missing or malformed files raise :class:`glorot_core.errors.DataUnavailable`.
    """
    images, labels = load_mnist_uint8(root, split)
    return to_float(np.ascontiguousarray(images), input_range), torch.from_numpy(np.array(labels))
