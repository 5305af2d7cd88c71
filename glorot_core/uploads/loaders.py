"""One loader per format; each returns the network in eval mode, and refuses what it cannot load safely.

* ``safetensors``: the header is parsed by safetensors itself (bounded JSON, offsets checked against
  the file), tensors are read without any pickle, then loaded into the described architecture.
* ``state_dict``: a ``torch.save`` of the state dict, read only with ``weights_only=True`` after the
  zip and TorchScript checks (:mod:`glorot_core.uploads.archive`).
* ``exported``: a ``torch.export`` ``.pt2``: zip checks, TorchScript refused, every pickled member
  loaded with the weights-only unpickler first (:func:`check_exported_archive`), and only then
  ``torch.export.load``; the graph must be made of ATen ops.

Weights go in with ``load_state_dict(strict=True)``; a mismatch is a 422 that names every missing,
unexpected and mis-shaped key.
"""

from __future__ import annotations

import json
import math
import operator
import zipfile
from pathlib import Path, PurePosixPath

import torch
from torch import nn

from glorot_core.uploads.architecture import CNNArchitecture, MLPArchitecture, parameter_count
from glorot_core.uploads.archive import (
    ArchiveLimits,
    open_checked_zip,
    read_member,
    refuse_torchscript,
    weights_only_load,
)
from glorot_core.uploads.errors import UploadRefused

#: Members of a .pt2 read as text/JSON by torch.export.load (never unpickled).
_TEXT_MEMBERS = frozenset({"archive_format", "archive_version", "version", "byteorder", "serialization_id"})


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UploadRefused(422, "corrupt-file", f"not a readable safetensors file: {str(e)[:300]}") from None


def load_state_dict_file(path: Path, limits: ArchiveLimits) -> dict[str, torch.Tensor]:
    if _is_zip(path):  # torch.save's format; a bare pickle (the legacy format) goes to the unpickler as is
        with open_checked_zip(str(path), limits, what="state_dict file") as z:
            refuse_torchscript(z, what="state_dict file")
    obj = weights_only_load(path, what="the state_dict file", limits=limits)
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in obj.items()):
        raise UploadRefused(422, "corrupt-file", "a state_dict file must hold a dict of name → tensor "
                            "(torch.save(model.state_dict(), path))")
    return obj


def _is_zip(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == b"PK\x03\x04"


def into_architecture(state: dict[str, torch.Tensor], arch: MLPArchitecture | CNNArchitecture,
                      max_parameters: int) -> nn.Module:
    """The described network with ``state`` loaded strictly; 422 naming every key that does not fit."""
    count = parameter_count(arch)
    if count > max_parameters:
        raise UploadRefused(422, "model-too-large", f"the architecture has {count} parameters; at most "
                            f"{max_parameters} are accepted", parameters=count)
    net = arch.build()
    expected = net.state_dict()
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    mis_shaped = [{"key": k, "expected": list(expected[k].shape), "got": list(state[k].shape)}
                  for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or mis_shaped:
        parts = [f"missing: {', '.join(missing)}" if missing else "",
                 f"unexpected: {', '.join(unexpected)}" if unexpected else "",
                 "mis-shaped: " + ", ".join(f"{m['key']} {m['got']} (expected {m['expected']})" for m in mis_shaped)
                 if mis_shaped else ""]
        raise UploadRefused(422, "weights-mismatch", "the weights do not fit the architecture; "
                            + "; ".join(p for p in parts if p)[:2000],
                            missing_keys=missing, unexpected_keys=unexpected, mis_shaped_keys=mis_shaped)
    try:
        net.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    except RuntimeError as e:
        raise UploadRefused(422, "weights-mismatch", f"the weights do not load: {str(e)[:500]}") from None
    return net.eval()


def check_exported_archive(path: Path, limits: ArchiveLimits) -> None:
    """Refuse a ``.pt2`` unless every member is either text/JSON, a raw tensor the weights/constants
    config declares unpickled, or a pickle the weights-only unpickler loads. Nothing is executed."""
    with open_checked_zip(str(path), limits, what=".pt2 archive") as z:
        refuse_torchscript(z, what=".pt2 archive")
        names = z.namelist()
        raw: set[str] = set()
        for name in names:
            p = PurePosixPath(name)
            if p.name.endswith("_config.json") and p.parent.name in ("weights", "constants"):
                raw |= _raw_members(z, name, p.parent)
        if not any(PurePosixPath(n).name == "archive_format" for n in names):
            raise UploadRefused(422, "corrupt-file", "not a torch.export archive (no archive_format member)")
        for name in names:
            p = PurePosixPath(name)
            if name.endswith("/") or p.name in _TEXT_MEMBERS or p.suffix == ".json" or name in raw:
                continue
            weights_only_load(read_member(z, name), what=f"member {name!r} of the .pt2 archive", limits=limits)


def _raw_members(z: zipfile.ZipFile, config_name: str, folder: PurePosixPath) -> set[str]:
    """Members that ``config_name`` (a weights/constants config) declares raw tensor bytes."""
    try:
        config = json.loads(read_member(z, config_name))["config"]
        return {str(folder / str(entry["path_name"])) for entry in config.values()
                if isinstance(entry, dict) and entry.get("use_pickle") is False and "path_name" in entry}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UploadRefused(422, "corrupt-file", f"{config_name!r} is not a valid config: {e}") from None


#: Graph call targets accepted besides ATen/prims ops.
_ALLOWED_CALLABLES = frozenset({operator.getitem})


def load_exported(path: Path, limits: ArchiveLimits, max_parameters: int) -> torch.export.ExportedProgram:
    """The checked archive (:func:`check_exported_archive`) loaded with ``torch.export.load``."""
    check_exported_archive(path, limits)
    try:
        ep = torch.export.load(str(path))
    except Exception as e:  # whatever the loader says, the file is not a program we take
        first = str(e).strip().splitlines()
        raise UploadRefused(422, "corrupt-file", "torch.export.load failed: "
                            f"{(first[0] if first else type(e).__name__)[:300]}") from None
    for node in ep.graph.nodes:
        if node.op == "call_function":
            t = node.target
            ns = getattr(t, "namespace", None)
            if not (isinstance(t, torch._ops.OpOverload) and ns in ("aten", "prims")) and t not in _ALLOWED_CALLABLES:
                raise UploadRefused(422, "unsupported-op", f"the graph calls {t!s:.100}; only standard ATen ops "
                                    "are accepted", op=str(t)[:100])
    count = sum(math.prod(v.shape) for v in ep.state_dict.values())
    if count > max_parameters:
        raise UploadRefused(422, "model-too-large", f"the program has {count} parameters; at most "
                            f"{max_parameters} are accepted", parameters=count)
    return ep
