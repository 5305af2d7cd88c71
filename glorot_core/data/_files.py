"""Shared helpers of the file-based data sets (MNIST, CIFAR-10): locating files, reading, splitting."""

from __future__ import annotations

import gzip
import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from glorot_core.errors import DataUnavailable

Split = Literal["train", "validation", "test"]
SPLITS: tuple[str, ...] = ("train", "validation", "test")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def check_range(input_range: tuple[float, float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in input_range)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"input_range must be two finite numbers (low, high) with low < high, got {input_range}")
    return lo, hi


def find_file(dataset: str, root: str | Path, folders: tuple[str, ...], names: tuple[str, ...]) -> Path:
    """The first existing ``root/folder/name`` (also ``name.gz``); DataUnavailable naming what was expected."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataUnavailable(f"{dataset}: data folder {str(root)!r} does not exist (expected file {names[0]!r} "
                              f"in it; glorot never downloads data, put the files there yourself)")
    for folder in folders:
        for name in names:
            for candidate in (root / folder / name, root / folder / f"{name}.gz"):
                if candidate.is_file():
                    return candidate
    where = " or ".join(repr(str(root / f)) if f else repr(str(root)) for f in folders)
    raise DataUnavailable(f"{dataset}: file {names[0]!r} (or {names[0]}.gz) not found in folder {where}; "
                          f"glorot never downloads data, put the files there yourself")


def read_bytes(dataset: str, path: Path) -> bytes:
    """The file's content, gunzipped when it ends in .gz; unreadable files raise DataUnavailable."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataUnavailable(f"{dataset}: cannot read {str(path)!r}: {exc}") from exc


def to_float(pixels: np.ndarray | torch.Tensor, input_range: tuple[float, float]) -> torch.Tensor:
    """uint8 pixels -> float32, byte / 255 mapped linearly from [0, 1] to ``input_range``."""
    lo, hi = check_range(input_range)
    t = torch.as_tensor(pixels)
    x = t.to(torch.float32).mul_((hi - lo) / 255.0)
    return x.add_(lo) if lo != 0.0 else x


def check_labels(dataset: str, path: Path, labels: np.ndarray, num_classes: int) -> None:
    if labels.size and int(labels.max()) >= num_classes:
        raise DataUnavailable(f"{dataset}: malformed {str(path)!r}: label {int(labels.max())} is not in "
                              f"0..{num_classes - 1}")
