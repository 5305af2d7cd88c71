"""Probe data for uploaded models: the data descriptions a spec will name, and ``.npz`` checks.

Descriptions (the ``data`` section for an uploaded model): ``{"dataset": "random", "shape": [...],
"distribution": "normal" | "uniform"}``, ``{"dataset": "tokens", "vocab_size": V, "sequence_length":
T}`` and ``{"dataset": "npz", "upload_id": ID}`` for an array file uploaded to ``POST /v1/data``.

An ``.npz`` is checked without loading any array (:func:`inspect_npz`): the zip's directory is
bounded like any archive, every member must be an ``.npy`` whose header parses with pickles off and
whose declared size matches its bytes; ``inputs`` (numeric, examples first) is required, ``labels``
(integers, one per example) optional. Object arrays — pickles — are refused.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from glorot_core.uploads.archive import ArchiveLimits, open_checked_zip
from glorot_core.uploads.errors import UploadRefused

#: What an upload id may look like (the service issues UUIDs): printable, no path characters, no NUL.
UPLOAD_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"

MAX_EXAMPLES = 1_000_000


def _no_text_or_bool(value: Any) -> Any:
    """Numbers are strict, as everywhere in a spec: ``"8"`` or ``true`` is refused, not coerced."""
    if isinstance(value, str | bytes | bool):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


_Number = BeforeValidator(_no_text_or_bool)
Dim = Annotated[int, Field(ge=1, le=65_536), _Number]
Seed = Annotated[int, Field(ge=0, le=2**64 - 1), _Number]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RandomData(_Strict):
    """Random inputs of one example's ``shape`` drawn from N(0, 1) or U(-1, 1)."""

    dataset: Literal["random"]
    shape: list[Dim] = Field(min_length=1, max_length=4)
    distribution: Literal["normal", "uniform"] = "normal"
    seed: Seed = Field(0, description="seed of the random inputs")


class TokenData(_Strict):
    """Random token ids in ``[0, vocab_size)``, ``sequence_length`` per example, for token models."""

    dataset: Literal["tokens"]
    vocab_size: Annotated[int, Field(ge=2, le=10_000_000), _Number]
    sequence_length: Dim
    seed: Seed = Field(0, description="seed of the random token ids")


class NpzData(_Strict):
    """An uploaded ``.npz`` (``POST /v1/data``)."""

    dataset: Literal["npz"]
    upload_id: str = Field(min_length=1, max_length=64, pattern=UPLOAD_ID_PATTERN)


def inspect_npz(path: str, limits: ArchiveLimits | None = None) -> dict[str, Any]:
    """``{"examples": N, "arrays": {name: {"shape", "dtype"}}}`` of the ``.npz`` at ``path``, checked
    from headers only (module docstring); :class:`UploadRefused` otherwise."""
    arrays: dict[str, dict[str, Any]] = {}
    with open_checked_zip(path, limits or ArchiveLimits(max_entries=64), what=".npz file") as z:
        for info in z.infolist():
            if not info.filename.endswith(".npy"):
                raise UploadRefused(422, "corrupt-file", f"member {info.filename!r} of the .npz is not an .npy array")
            with z.open(info) as f:
                try:
                    version = np.lib.format.read_magic(f)
                    reader = {(1, 0): np.lib.format.read_array_header_1_0,
                              (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                    if reader is None:
                        raise ValueError(f"unsupported .npy version {version}")
                    shape, _fortran, dtype = reader(f)
                    header_len = f.tell()
                except ValueError as e:
                    raise UploadRefused(422, "corrupt-file", f"array {info.filename!r}: {e}") from None
            if dtype.hasobject or dtype.kind not in "biuf":
                raise UploadRefused(422, "unsupported-array", f"array {info.filename!r} has dtype {dtype}; only "
                                    "numeric arrays are accepted (object arrays are pickles)")
            if info.file_size - header_len != math.prod(shape) * dtype.itemsize:
                raise UploadRefused(422, "corrupt-file", f"array {info.filename!r}: its data does not match "
                                    f"its declared shape {list(shape)}")
            arrays[info.filename.removesuffix(".npy")] = {"shape": list(shape), "dtype": str(dtype)}
    inputs = arrays.get("inputs")
    if inputs is None or not inputs["shape"]:
        raise UploadRefused(422, "missing-inputs", "the .npz needs an array 'inputs' of shape (examples, …) "
                            f"(found: {', '.join(sorted(arrays)) or 'nothing'})")
    n = inputs["shape"][0]
    if not 1 <= n <= MAX_EXAMPLES:
        raise UploadRefused(422, "invalid-inputs", f"'inputs' holds {n} examples; 1 to {MAX_EXAMPLES} are accepted")
    labels = arrays.get("labels")
    if labels is not None and (labels["shape"] != [n] or np.dtype(labels["dtype"]).kind not in "iu"):
        raise UploadRefused(422, "invalid-labels", f"'labels' must be integers of shape [{n}]; got "
                            f"{labels['dtype']} {labels['shape']}")
    return {"examples": n, "arrays": arrays}
