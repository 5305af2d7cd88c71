"""A data set from one ``.npz`` file of arrays (``numpy.savez`` / ``savez_compressed``), never pickles.

Arrays, by name (others in the file are ignored):

* ``x``: inputs, shape (n, ...) with at least one dimension per example; flattened row-major to
  ``input_dim`` = the product of the per-example dimensions (at most 65,536).
* ``y``: integer labels 0..k−1, shape (n,); ``num_classes`` = the largest label + 1 (at least 2).
* ``x_test``, ``y_test`` (optional, both or neither): the test split, same per-example shape.

uint8 inputs are pixels: byte / 255 mapped linearly to ``input_range``, like MNIST's. Any other real
dtype is taken as already preprocessed and only converted to float32 (``input_range`` does not apply);
it must be finite.

Splits, by the 1/6 rule of the MNIST loader: with ``x_test`` the test split is it, and the last N//6
of ``x`` is ``validation``, the rest ``train``. Without it, the last N//6 of ``x`` is ``test``, and of
the M examples left the last M//6 is ``validation``, the rest ``train``.

Limits: the file's arrays, decompressed, at most ``max_data_bytes()`` (4 GiB unless
``GLOROT_MAX_DATA_BYTES`` says otherwise), checked from the zip directory before anything is read.
Every error names the file and the shape or dtype found.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from glorot_core.data._files import Split, check_split, max_data_bytes
from glorot_core.data.idx import MAX_CLASSES, MAX_INPUT_DIM
from glorot_core.errors import DataUnavailable

__all__ = ["NpzArrays", "find_npz", "read_npz"]


@dataclass(frozen=True)
class NpzArrays:
    """The arrays of one .npz data set, already checked, and where they came from."""

    path: Path
    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None

    def split(self, split: Split) -> tuple[np.ndarray, np.ndarray]:
        """Inputs (n, ...) and int64 labels (n,) of one split (see the module docstring)."""
        check_split(split)
        x, y = self.x, self.y
        if self.x_test is None or self.y_test is None:
            n_test = x.shape[0] // 6
            if split == "test":
                return x[x.shape[0] - n_test:], y[x.shape[0] - n_test:]
            x, y = x[:x.shape[0] - n_test], y[:x.shape[0] - n_test]
        elif split == "test":
            return self.x_test, self.y_test
        cut = x.shape[0] - x.shape[0] // 6
        return (x[:cut], y[:cut]) if split == "train" else (x[cut:], y[cut:])


def find_npz(root: str | Path) -> Path:
    """``root`` itself when it is a file, else the only ``*.npz`` in the folder ``root``."""
    path = Path(root).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise DataUnavailable(f"npz: {str(path)!r} does not exist (data.root must be an .npz file or a folder "
                              f"holding one; glorot never downloads data)")
    found = sorted(path.glob("*.npz"))
    if len(found) != 1:
        raise DataUnavailable(f"npz: folder {str(path)!r} holds {len(found)} .npz files; expected exactly one "
                              f"(or give the file itself as data.root)")
    return found[0]


def read_npz(root: str | Path) -> NpzArrays:
    """Read and check the .npz data set at ``root`` (a file, or a folder holding exactly one)."""
    path = find_npz(root)
    where = repr(str(path))
    _check_size(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            names = set(f.files)
            missing = {"x", "y"} - names
            if missing:
                raise DataUnavailable(f"npz: {where} has no array {sorted(missing)[0]!r} (found: "
                                      f"{', '.join(sorted(names)) or 'none'}); expected x, y and optionally "
                                      f"x_test, y_test")
            if ("x_test" in names) != ("y_test" in names):
                raise DataUnavailable(f"npz: {where} has only one of x_test / y_test; give both or neither")
            arrays = {k: f[k] for k in ("x", "y", "x_test", "y_test") if k in names}
    except DataUnavailable:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:  # not a zip, pickled objects, damage
        raise DataUnavailable(f"npz: cannot read {where} as arrays without pickles: {exc}") from exc
    x, y = _inputs(where, "x", arrays["x"]), _labels(where, "y", arrays["y"], arrays["x"].shape[0])
    x_test = y_test = None
    if "x_test" in arrays:
        x_test = _inputs(where, "x_test", arrays["x_test"])
        y_test = _labels(where, "y_test", arrays["y_test"], x_test.shape[0])
        if x_test.shape[1:] != x.shape[1:]:
            raise DataUnavailable(f"npz: {where}: x_test has examples of shape {x_test.shape[1:]}, "
                                  f"x has {x.shape[1:]}")
    needed = 6 if x_test is not None else 7  # non-empty validation (and, without x_test, test) sixths
    if x.shape[0] < needed:
        aside = "a validation sixth" if x_test is not None else "test and validation sixths"
        raise DataUnavailable(f"npz: {where}: x holds {x.shape[0]} examples, fewer than the {needed} needed to "
                              f"set {aside} aside")
    return NpzArrays(path, x, y, x_test, y_test)


def _check_size(path: Path) -> None:
    """Refuse files whose arrays would decompress above the limit, before reading any of them."""
    limit = max_data_bytes()
    try:
        with zipfile.ZipFile(path) as z:
            total = sum(info.file_size for info in z.infolist())
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataUnavailable(f"npz: {str(path)!r} is not an .npz (zip) file: {exc}") from exc
    if total > limit:
        raise DataUnavailable(f"npz: {str(path)!r} holds {total:,} bytes of arrays, above the limit of {limit:,} "
                              f"(GLOROT_MAX_DATA_BYTES)")


def _inputs(where: str, name: str, a: np.ndarray) -> np.ndarray:
    if a.ndim < 2 or a.shape[0] == 0:
        raise DataUnavailable(f"npz: {where}: {name} has shape {a.shape}; expected (n, ...) with n >= 1 and at "
                              f"least one dimension per example")
    if a.dtype != np.uint8 and a.dtype.kind not in "iuf":
        raise DataUnavailable(f"npz: {where}: {name} has dtype {a.dtype}; expected uint8 pixels or real numbers")
    dim = int(np.prod(a.shape[1:], dtype=np.int64))
    if not 1 <= dim <= MAX_INPUT_DIM:
        raise DataUnavailable(f"npz: {where}: {name} has shape {a.shape}: {dim} inputs per example, the limit is "
                              f"{MAX_INPUT_DIM}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise DataUnavailable(f"npz: {where}: {name} holds non-finite values (NaN or ±Inf)")
    return a


def _labels(where: str, name: str, a: np.ndarray, n: int) -> np.ndarray:
    if a.ndim != 1 or a.shape[0] != n:
        raise DataUnavailable(f"npz: {where}: {name} has shape {a.shape}; expected ({n},), one label per example")
    if a.dtype.kind not in "iu":
        raise DataUnavailable(f"npz: {where}: {name} has dtype {a.dtype}; expected integer class labels")
    if a.size and (int(a.min()) < 0 or int(a.max()) >= MAX_CLASSES):
        raise DataUnavailable(f"npz: {where}: {name} holds labels {int(a.min())}..{int(a.max())}; expected "
                              f"0..{MAX_CLASSES - 1}")
    return a.astype(np.int64)
