"""Shared helpers of the file-based data sets (MNIST, CIFAR-10): locating files, reading, splitting."""

from __future__ import annotations

import gzip
import math
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from glorot_core.errors import DataUnavailable

Split = Literal["train", "validation", "test"]
SPLITS: tuple[str, ...] = ("train", "validation", "test")
DEFAULT_MAX_DATA_BYTES = 4 << 30
"""Largest data file (after decompression) read into memory: 4 GiB, ≈80× MNIST's four files;
``GLOROT_MAX_DATA_BYTES`` overrides it. A gzip or compressed .npz is measured decompressed, so a small
file cannot expand into all of memory."""


def max_data_bytes() -> int:
    return int(os.environ.get("GLOROT_MAX_DATA_BYTES", DEFAULT_MAX_DATA_BYTES))


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
    """The file's content, gunzipped when it ends in .gz; unreadable files, and files larger than
    ``max_data_bytes()`` (decompressed), raise DataUnavailable."""
    limit = max_data_bytes()
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read(limit + 1)
        else:
            if path.stat().st_size > limit:
                raise DataUnavailable(f"{dataset}: {str(path)!r} is {path.stat().st_size:,} bytes, above the "
                                      f"limit of {limit:,} (GLOROT_MAX_DATA_BYTES)")
            raw = path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataUnavailable(f"{dataset}: cannot read {str(path)!r}: {exc}") from exc
    if len(raw) > limit:
        raise DataUnavailable(f"{dataset}: {str(path)!r} decompresses to more than the limit of {limit:,} bytes "
                              f"(GLOROT_MAX_DATA_BYTES)")
    return raw


def to_float(pixels: np.ndarray | torch.Tensor, input_range: tuple[float, float]) -> torch.Tensor:
    """uint8 pixels -> float32, byte / 255 mapped linearly from [0, 1] to ``input_range``."""
    lo, hi = check_range(input_range)
    t = torch.as_tensor(pixels)
    x = t.to(torch.float32).mul_((hi - lo) / 255.0)
    return x.add_(lo) if lo != 0.0 else x


def to_features(values: np.ndarray | torch.Tensor, input_range: tuple[float, float]) -> torch.Tensor:
    """Inputs as float32: uint8 values are pixels (``to_float``: byte / 255 mapped to ``input_range``);
    any other real dtype is taken as already preprocessed and only converted to float32."""
    t = torch.as_tensor(values)
    if t.dtype == torch.uint8:
        return to_float(t, input_range)
    return t.to(torch.float32)


def check_labels(dataset: str, path: Path, labels: np.ndarray, num_classes: int) -> None:
    if labels.size and int(labels.max()) >= num_classes:
        raise DataUnavailable(f"{dataset}: malformed {str(path)!r}: label {int(labels.max())} is not in "
                              f"0..{num_classes - 1}")
