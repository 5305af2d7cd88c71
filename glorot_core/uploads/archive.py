"""Zip and pickle safety: what is checked before any loader sees a file.

A ``torch.save`` file and a ``torch.export`` ``.pt2`` are zip archives. Three dangers, each refused
before anything is loaded:

* **zip bombs**: a few MB that inflate to GBs. The central directory is read (never the members),
  and the entry count, the declared total uncompressed size and each member's compression ratio are
  bounded. Reads later stop at the declared sizes (``zipfile`` enforces them), so the declaration
  cannot lie about what is read.
* **TorchScript**: its archives carry ``constants.pkl`` and ``code/`` (Python source the loader
  compiles and runs); they are refused outright, under any format name.
* **pickles**: unpickling runs code. Every pickled member is loaded with PyTorch's weights-only
  unpickler (``torch.load(weights_only=True)``: tensors, containers and primitive types only; any
  other global is refused) before anything else; a member that fails is refused with its name.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch

from glorot_core.uploads.errors import UploadRefused

#: A member compressed more than this many times, and bigger than ``RATIO_FLOOR`` bytes, is a bomb:
#: PyTorch writes its archives uncompressed (ratio 1), deflate reaches ~1000× only on degenerate data.
MAX_RATIO = 100
RATIO_FLOOR = 1 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds of a zip archive: member count and total declared uncompressed bytes."""

    max_entries: int = 10_000
    max_uncompressed_bytes: int = 4 << 30


def open_checked_zip(source: str | io.BytesIO, limits: ArchiveLimits, *, what: str = "archive") -> zipfile.ZipFile:
    """The archive at ``source``, opened after its directory passed the bomb checks (module docstring)."""
    try:
        z = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise UploadRefused(422, "corrupt-file", f"the {what} is not a readable zip archive: {e}") from None
    try:
        infos = z.infolist()
        if len(infos) > limits.max_entries:
            raise UploadRefused(422, "archive-too-large", f"the {what} has {len(infos)} entries; at most "
                                f"{limits.max_entries} are accepted", entries=len(infos))
        total = sum(i.file_size for i in infos)
        if total > limits.max_uncompressed_bytes:
            raise UploadRefused(422, "archive-too-large", f"the {what} inflates to {total} bytes; at most "
                                f"{limits.max_uncompressed_bytes} are accepted", uncompressed_bytes=total)
        for i in infos:
            if i.file_size > RATIO_FLOOR and i.file_size > MAX_RATIO * max(i.compress_size, 1):
                raise UploadRefused(422, "archive-too-large", f"member {i.filename!r} of the {what} inflates "
                                    f"{i.file_size // max(i.compress_size, 1)}× (a zip bomb?); refused",
                                    member=i.filename)
    except BaseException:
        z.close()
        raise
    return z


def refuse_torchscript(z: zipfile.ZipFile, *, what: str = "archive") -> None:
    """TorchScript archives (``constants.pkl``, ``code/``) are refused: loading one compiles its code."""
    for name in z.namelist():
        parts = PurePosixPath(name).parts
        if (parts and parts[-1] == "constants.pkl") or "code" in parts[1:-1] or (parts and parts[0] == "code"):
            raise UploadRefused(422, "torchscript-refused", f"the {what} is a TorchScript archive (member "
                                f"{name!r}); TorchScript runs code when loaded and is not accepted — upload "
                                "weights (safetensors) or a torch.export program (.pt2)", member=name)


def read_member(z: zipfile.ZipFile, name: str) -> bytes:
    """A member's bytes; ``zipfile`` stops at the declared size, which the directory check bounded."""
    with z.open(name) as f:
        return f.read()


def weights_only_load(data: bytes | Path, *, what: str, limits: ArchiveLimits) -> object:
    """``torch.load(weights_only=True)`` of ``data`` (bytes of a torch.save zip or a bare pickle, or a
    file already checked by the caller), after the zip checks for bytes that are a zip: anything but
    tensors, containers and primitives is refused."""
    if isinstance(data, bytes) and data[:4] == b"PK\x03\x04":
        with open_checked_zip(io.BytesIO(data), limits, what=what) as inner:
            refuse_torchscript(inner, what=what)
    try:
        source = io.BytesIO(data) if isinstance(data, bytes) else str(data)
        return torch.load(source, weights_only=True, map_location="cpu", mmap=False)
    except pickle.UnpicklingError as e:
        raise UploadRefused(422, "unsafe-pickle", f"{what} is a pickle that the weights-only unpickler "
                            f"refuses (it would run code or build arbitrary objects): {_first_line(e)}") from None
    except Exception as e:  # any other failure: not a loadable file
        raise UploadRefused(422, "corrupt-file", f"{what} cannot be read as tensors: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]
