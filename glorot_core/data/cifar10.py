"""CIFAR-10 from the local binary version (never downloaded).

Expected in ``root`` or ``root/cifar-10-batches-bin/`` (the folder the official archive unpacks to):
``data_batch_1.bin`` .. ``data_batch_5.bin`` and ``test_batch.bin`` (each optionally gzipped, ``.gz``).
Every record is 1 label byte (0..9) followed by 3072 pixel bytes: the 32x32 red plane, then green, then
blue, each row-major. The official files hold 10,000 records each; any non-zero whole number of records
is accepted (tests write tiny files).

Splits as in the paper (40k train / 10k validation / 10k test): ``train`` = data batches 1-4,
``validation`` = data batch 5, ``test`` = the test batch. Inputs: the 3072 bytes of a record in file
order (channel-major), byte / 255 mapped linearly to ``input_range``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from glorot_core.data._files import Split, check_labels, check_split, find_file, read_bytes, to_float
from glorot_core.errors import DataUnavailable

__all__ = ["CIFAR10_FILES", "RECORD_BYTES", "load_cifar10", "load_cifar10_uint8", "read_cifar_batch"]

RECORD_BYTES = 1 + 3072
CIFAR10_FILES: dict[str, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{i}.bin" for i in range(1, 5)),
    "validation": ("data_batch_5.bin",),
    "test": ("test_batch.bin",),
}
_FOLDERS = ("", "cifar-10-batches-bin")


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch file: pixels uint8 (n, 3072) and labels int64 (n,); checks size and labels."""
    raw = read_bytes("CIFAR-10", path)
    if len(raw) == 0 or len(raw) % RECORD_BYTES:
        raise DataUnavailable(f"CIFAR-10: malformed {str(path)!r}: {len(raw)} bytes is not a whole, non-zero "
                              f"number of {RECORD_BYTES}-byte records (1 label byte + 3072 pixel bytes)")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    check_labels("CIFAR-10", path, labels, 10)
    return records[:, 1:].copy(), labels


def load_cifar10_uint8(root: str | Path, split: Split) -> tuple[np.ndarray, np.ndarray]:
    """Raw pixels uint8 (n, 3072) and labels int64 (n,) of one split (see the module docstring)."""
    check_split(split)
    paths = [find_file("CIFAR-10", root, _FOLDERS, (name,)) for name in CIFAR10_FILES[split]]
    parts = [read_cifar_batch(p) for p in paths]
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def load_cifar10(
    root: str | Path, split: Split, input_range: tuple[float, float] = (-1.0, 1.0)
) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 ``split`` from the binary batches in ``root``: x float32 (n, 3072), y int64 (n,).

    Missing or malformed files raise :class:`glorot_core.errors.DataUnavailable`.
    """
    pixels, labels = load_cifar10_uint8(root, split)
    return to_float(pixels, input_range), torch.from_numpy(labels)
