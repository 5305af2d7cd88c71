"""The paper's data sets: Shapeset-3x2 (generated online), MNIST and CIFAR-10 (local files, never downloaded),
and any data set of the user's own as IDX files (``idx``, any image size) or one ``.npz`` of arrays (``npz``).

``open_dataset(name, root, input_range, seed)`` is what the training loop uses. It returns an object
with

* ``next_batch(batch_size) -> (x, y)``: the training stream. Shapeset-3x2 is online and infinite (stream 0
  of the data seed, never repeating an image); the file sets are reshuffled every epoch with a
  permutation drawn from ``(seed, epoch)`` and are served epoch after epoch.
* ``fixed_set(split, n) -> (x, y)``: fixed, deterministic evaluation sets. ``"test"``: the test split
  (first ``n`` examples when ``n`` is given). ``"monitor"``: the first ``n`` (default 300) test examples,
  the paper's "fixed monitor set of 300 test examples". ``"validation"``: the validation split.
  For Shapeset-3x2 the test images are stream :data:`~glorot_core.data.shapeset.STREAM_TEST` (1) and the
  validation images stream :data:`~glorot_core.data.shapeset.STREAM_VALIDATION` (2) of the *same* data
  seed: independent image sequences, so disjoint from training (stream 0) and from each other, and
  reproducible from the seed alone; the monitor set is the first ``n`` images of the test stream, so it
  is also a prefix of any larger Shapeset test set. ``n`` is required for Shapeset's test and validation.

x is float32 (n, input_dim) in ``input_range``; y is int64 (n,). For ``idx`` and ``npz`` the data set's
``input_dim`` and ``num_classes`` are derived from the files (``check_fits`` compares them with a spec).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch

from glorot_core.data._files import check_range, to_features
from glorot_core.data.cifar10 import load_cifar10, load_cifar10_uint8
from glorot_core.data.idx import load_idx_uint8, load_mnist, load_mnist_uint8
from glorot_core.data.npz import read_npz
from glorot_core.data.shapeset import (
    CLASS_NAMES,
    STREAM_TEST,
    STREAM_TRAIN,
    STREAM_VALIDATION,
    ShapesetStream,
    generate,
    generate_range,
)
from glorot_core.errors import DataUnavailable, SpecNotRunnable

__all__ = [
    "CLASS_NAMES",
    "DATASET_ALIASES",
    "MONITOR_EXAMPLES",
    "STREAM_TEST",
    "STREAM_TRAIN",
    "STREAM_VALIDATION",
    "Dataset",
    "FileDataset",
    "ShapesetDataset",
    "ShapesetStream",
    "check_fits",
    "generate",
    "generate_range",
    "load_cifar10",
    "load_mnist",
    "open_dataset",
]

FixedSplit = Literal["test", "monitor", "validation"]
MONITOR_EXAMPLES = 300  # the paper's monitor set size
DATASET_ALIASES = {
    "shapeset3x2": "shapeset3x2", "shapeset": "shapeset3x2", "shapeset-3x2": "shapeset3x2",
    "shapeset_3x2": "shapeset3x2", "mnist": "mnist", "cifar10": "cifar10", "cifar-10": "cifar10",
    "idx": "idx", "npz": "npz",
}


@runtime_checkable
class Dataset(Protocol):
    """What the training loop needs from a data set."""

    name: str
    input_dim: int
    num_classes: int

    def next_batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]: ...

    def fixed_set(self, split: FixedSplit, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]: ...


def _check_fixed(split: str, n: int | None) -> None:
    if split not in ("test", "monitor", "validation"):
        raise ValueError(f"fixed_set split must be 'test', 'monitor' or 'validation', got {split!r}")
    if n is not None and n < 1:
        raise ValueError(f"n must be >= 1, got {n}")


class ShapesetDataset:
    """Shapeset-3x2: online training stream plus fixed test/monitor/validation sets from one data seed."""

    name = "shapeset3x2"
    input_dim = 1024
    num_classes = 9

    def __init__(self, seed: int = 0, input_range: tuple[float, float] = (-1.0, 1.0), chunk: int = 10_000,
                 start: int = 0) -> None:
        self.seed = int(seed)
        self.input_range = check_range(input_range)
        self._stream = ShapesetStream(self.seed, self.input_range, chunk, start=start, stream=STREAM_TRAIN)
        self._cache: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def position(self) -> int:
        """Training images handed out so far (pass as ``start`` to resume the same stream)."""
        return self._stream.position

    def next_batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._stream.next_batch(batch_size)

    def fixed_set(self, split: FixedSplit, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Test = stream 1, monitor = first n (default 300) of stream 1, validation = stream 2 of the seed."""
        _check_fixed(split, n)
        if split == "monitor":
            n = MONITOR_EXAMPLES if n is None else n
        elif n is None:
            raise ValueError(f"Shapeset-3x2 is infinite: give the number of {split} examples n")
        key = (split, n)
        if key not in self._cache:
            stream = STREAM_VALIDATION if split == "validation" else STREAM_TEST
            self._cache[key] = generate_range(self.seed, 0, n, self.input_range, stream)
        return self._cache[key]


class FileDataset:
    """A file-based data set held in memory as stored (uint8 pixels or float features); batches are
    converted to float32 on the way out (``to_features``).

    ``input_dim`` / ``num_classes`` None: derived from the files (product of the per-example dimensions;
    largest train or test label + 1, at least 2). ``source`` names the file or folder in messages.
    """

    def __init__(self, name: str, input_dim: int | None,
                 loader: Callable[[str | Path, str], tuple[np.ndarray, np.ndarray]],
                 root: str | Path, input_range: tuple[float, float] = (-1.0, 1.0), seed: int = 0,
                 num_classes: int | None = 10, source: str | None = None) -> None:
        self.name = name
        self.root = root
        self.source = source or str(root)
        self.seed = int(seed)
        self.input_range = check_range(input_range)
        self._loader = loader
        # train and test are read now, so missing or malformed files fail at open time
        self._splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.example_shape: tuple[int, ...] = ()
        for split in ("train", "test"):
            self._split(split)
        self.input_dim = int(self._splits["train"][0].shape[1]) if input_dim is None else input_dim
        self.num_classes = self._derived_classes() if num_classes is None else num_classes
        self._n_train = int(self._splits["train"][1].shape[0])
        self.epoch = 0
        self._perm = self._permutation(0)
        self._offset = 0
        self._cache: dict[tuple[str, int | None], tuple[torch.Tensor, torch.Tensor]] = {}

    def _split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if split not in self._splits:
            pixels, labels = self._loader(self.root, split)
            shape = tuple(int(d) for d in pixels.shape[1:])
            if self.example_shape and shape != self.example_shape:
                raise DataUnavailable(f"{self.name}: {self.source!r}: the {split} examples have shape {shape}, "
                                      f"the training examples {self.example_shape}")
            self.example_shape = shape
            flat = np.ascontiguousarray(pixels).reshape(pixels.shape[0], -1)
            self._splits[split] = (torch.from_numpy(flat), torch.from_numpy(labels))
        return self._splits[split]

    def _derived_classes(self) -> int:
        top = max(int(labels.max()) for _, labels in self._splits.values() if labels.numel())
        if top < 1:
            raise DataUnavailable(f"{self.name}: {self.source!r}: every label is {top}; at least 2 classes needed")
        return top + 1

    def _permutation(self, epoch: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed % (1 << 64), epoch])
        return torch.from_numpy(rng.permutation(self._n_train))

    def next_batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The next ``batch_size`` training examples; a new shuffled epoch starts when one runs out."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        parts = []
        need = batch_size
        while need > 0:
            if self._offset == self._n_train:
                self.epoch += 1
                self._perm = self._permutation(self.epoch)
                self._offset = 0
            take = min(need, self._n_train - self._offset)
            parts.append(self._perm[self._offset:self._offset + take])
            self._offset += take
            need -= take
        idx = parts[0] if len(parts) == 1 else torch.cat(parts)
        pixels, labels = self._splits["train"]
        return to_features(pixels[idx], self.input_range), labels[idx]

    def fixed_set(self, split: FixedSplit, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``test``/``validation``: the split (first ``n`` if given); ``monitor``: first ``n`` (300) test examples.

        When the split holds fewer than ``n`` examples, all of them are returned.
        """
        _check_fixed(split, n)
        if split == "monitor":
            n = MONITOR_EXAMPLES if n is None else n
        key = (split, n)
        if key not in self._cache:
            pixels, labels = self._split("validation" if split == "validation" else "test")
            end = labels.shape[0] if n is None else min(n, labels.shape[0])
            self._cache[key] = (to_features(pixels[:end], self.input_range), labels[:end].clone())
        return self._cache[key]


def open_dataset(
    name: str,
    root: str | Path | None = None,
    input_range: tuple[float, float] = (-1.0, 1.0),
    seed: int = 0,
) -> ShapesetDataset | FileDataset:
    """The data set ``name`` ("shapeset3x2", "mnist", "cifar10", "idx" or "npz"); file sets read from ``root``.

    ``seed`` is the data seed: it fixes Shapeset's images (training, test, monitor) and the file sets'
    shuffling order. Missing or malformed files raise :class:`~glorot_core.errors.DataUnavailable`.
    ``idx``: a folder of MNIST-named IDX files with images of any size; ``npz``: an .npz file (or a
    folder holding exactly one), see :mod:`glorot_core.data.npz`.
    """
    key = DATASET_ALIASES.get(name.lower())
    if key is None:
        raise ValueError(f"unknown data set {name!r}; known: shapeset3x2, mnist, cifar10, idx, npz")
    if key == "shapeset3x2":
        return ShapesetDataset(seed, input_range)
    label = {"mnist": "MNIST", "cifar10": "CIFAR-10", "idx": "IDX", "npz": "npz"}[key]
    if root is None:
        raise DataUnavailable(f"{label} is read from local files: give the folder that holds them (data.root); "
                              f"glorot never downloads data")
    if key == "mnist":
        return FileDataset("mnist", 784, load_mnist_uint8, root, input_range, seed)
    if key == "cifar10":
        return FileDataset("cifar10", 3072, load_cifar10_uint8, root, input_range, seed)
    if key == "idx":
        return FileDataset("idx", None, load_idx_uint8, root, input_range, seed, num_classes=None)
    arrays = read_npz(root)
    return FileDataset("npz", None, lambda _root, split: arrays.split(split), root, input_range, seed,
                       num_classes=None, source=str(arrays.path))


def check_fits(data: ShapesetDataset | FileDataset, input_dim: int, num_classes: int) -> None:
    """Refuse a model whose input or output width differs from the data set's (SpecNotRunnable),
    saying what the files hold and what to set."""
    if (data.input_dim, data.num_classes) == (input_dim, num_classes):
        return
    shape = getattr(data, "example_shape", None) or (data.input_dim,)
    where = f" from {data.source!r}" if isinstance(data, FileDataset) else ""
    wrong = []
    if input_dim != data.input_dim:
        wrong.append(f"model.input_dim is {input_dim}: set it to {data.input_dim}")
    if num_classes != data.num_classes:
        wrong.append(f"model.num_classes is {num_classes}: set it to {data.num_classes}")
    raise SpecNotRunnable(f"data set {data.name!r}{where} has examples of shape {shape} ({data.input_dim} inputs) "
                          f"and labels 0..{data.num_classes - 1} ({data.num_classes} classes); " + "; ".join(wrong))
