"""The whole check of an uploaded model file: safety, loading, probe points — in-process or in a child.

:func:`inspect_model_file` does it in the calling process (the library and the safety tests use it:
nothing in it executes the file's contents). :func:`inspect_in_child` runs the same in a fresh Python
process that caps its own memory (``RLIMIT_DATA``) and CPU time (``RLIMIT_CPU``) before importing
torch, under a wall-clock timeout: a hostile or simply huge model costs that process, never the API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glorot_core.uploads.archive import ArchiveLimits
from glorot_core.uploads.errors import UploadRefused
from glorot_core.uploads.metadata import UploadMetadata, parse_metadata
from glorot_core.uploads.probe_points import ProbePointInfo


@dataclass(frozen=True)
class InspectLimits:
    """Bounds of one inspection: the archive's, the parameter count, and the child's memory and time."""

    archive: ArchiveLimits = field(default_factory=ArchiveLimits)
    max_parameters: int = 200_000_000
    memory_mb: int | None = 4096
    timeout_s: float = 120.0


@dataclass(frozen=True)
class ModelInfo:
    """What an accepted model is: its probe points and its input (per-example shape and dtype)."""

    probe_points: list[ProbePointInfo]
    input_shape: tuple[int, ...]
    input_dtype: str
    parameters: int

    def to_dict(self) -> dict[str, Any]:
        return {"probe_points": [p.to_dict() for p in self.probe_points], "input": {
            "shape": list(self.input_shape), "dtype": self.input_dtype}, "parameters": self.parameters}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelInfo:
        return cls([ProbePointInfo(p["name"], p["kind"], tuple(p["shape"]), p["activation"],
                                   p.get("role", "activation")) for p in d["probe_points"]],
                   tuple(d["input"]["shape"]), d["input"]["dtype"], int(d["parameters"]))


@dataclass
class LoadedModel:
    """A checked and loaded model, in eval mode: ``module`` is the described ``nn.Sequential`` or, for an
    exported program, ``program.module()`` (an ``fx.GraphModule``; ``program`` keeps the program itself).
    ``batch`` is the batch size an exported program was traced with when it is static (it then only runs
    on batches of that size), None when any size runs."""

    module: Any
    input_shape: tuple[int, ...]
    input_dtype: str
    parameters: int
    program: Any = None
    batch: int | None = None


def load_model(path: Path, metadata: UploadMetadata | dict[str, Any],
               limits: InspectLimits | None = None) -> LoadedModel:
    """Check and load the model at ``path`` as ``metadata`` declares it, with the safe loaders of the
    upload check (:mod:`glorot_core.uploads.loaders`); :class:`UploadRefused` if it is not accepted."""
    import torch

    from glorot_core.uploads import loaders

    limits = limits or InspectLimits()
    meta = metadata if isinstance(metadata, UploadMetadata) else parse_metadata(metadata)
    if meta.format == "exported":
        ep = loaders.load_exported(path, limits.archive, limits.max_parameters)
        user_inputs = [s.arg.name for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
        vals = [n.meta.get("val") for n in ep.graph.nodes if n.op == "placeholder" and n.name in user_inputs]
        if len(vals) != 1 or not isinstance(vals[0], torch.Tensor):
            raise UploadRefused(422, "input-mismatch", f"the program takes {len(vals)} tensor inputs; "
                                "exactly one (the batch of examples) is supported")
        shape, dtype = tuple(int(d) for d in vals[0].shape[1:]), str(vals[0].dtype).removeprefix("torch.")
        if meta.input is not None and (list(shape) != meta.input.shape or dtype != meta.input.dtype):
            raise UploadRefused(422, "input-mismatch", f"metadata.input says {meta.input.shape} {meta.input.dtype}"
                                f", the program takes {list(shape)} {dtype}")
        batch = vals[0].shape[0]
        params = sum(int(v.numel()) for v in ep.state_dict.values())
        return LoadedModel(ep.module(), shape, dtype, params, program=ep,
                           batch=batch if isinstance(batch, int) else None)
    assert meta.architecture is not None  # parse_metadata requires it for weight formats
    state = (loaders.load_safetensors(path) if meta.format == "safetensors"
             else loaders.load_state_dict_file(path, limits.archive))
    net = loaders.into_architecture(state, meta.architecture, limits.max_parameters)
    if meta.input is not None:
        shape, dtype = tuple(meta.input.shape), meta.input.dtype
    else:  # an MLP (parse_metadata requires an input for a CNN)
        shape, dtype = meta.architecture.input_shape(), "float32"  # type: ignore[union-attr]
    return LoadedModel(net, shape, dtype, sum(int(p.numel()) for p in net.parameters()))


def inspect_model_file(path: Path, metadata: UploadMetadata | dict[str, Any],
                       limits: InspectLimits | None = None) -> ModelInfo:
    """Check and load the model at ``path`` as ``metadata`` declares it; :class:`UploadRefused` if it is
    not accepted (docs/uploads.md lists every refusal)."""
    import torch

    from glorot_core.uploads.probe_points import graph_probe_points, sequential_probe_points

    loaded = load_model(path, metadata, limits)
    if loaded.program is not None:
        points = graph_probe_points(loaded.program.graph)
    else:
        points = sequential_probe_points(loaded.module, loaded.input_shape, getattr(torch, loaded.input_dtype))
    if not points:
        raise UploadRefused(422, "no-probe-points", "the model has no probe point to observe (no tanh, sigmoid, "
                            "relu, gelu, silu, softsign, … module or op, no residual sum, no normalisation)")
    return ModelInfo(points, loaded.input_shape, loaded.input_dtype, loaded.parameters)


def inspect_in_child(path: Path, metadata: dict[str, Any], limits: InspectLimits | None = None) -> ModelInfo:
    """:func:`inspect_model_file` in a child process with ``limits`` (module docstring). A child that
    runs out of memory or time, or dies, is a 422: the file is not one we can load."""
    limits = limits or InspectLimits()
    request = {"path": str(path), "metadata": metadata, "memory_mb": limits.memory_mb,
               "cpu_s": int(limits.timeout_s) + 1, "max_parameters": limits.max_parameters,
               "max_entries": limits.archive.max_entries,
               "max_uncompressed_bytes": limits.archive.max_uncompressed_bytes}
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH", "TMPDIR")}
    env.update({"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    try:
        proc = subprocess.run([sys.executable, "-m", "glorot_core.uploads.child"], input=json.dumps(request),
                              capture_output=True, text=True, timeout=limits.timeout_s, env=env,
                              cwd=str(Path(__file__).resolve().parents[2]))
    except subprocess.TimeoutExpired:
        raise UploadRefused(422, "model-load-timeout", f"checking the model took longer than {limits.timeout_s:g} s; "
                            "refused") from None
    lines = proc.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else None
    except ValueError:
        answer = None
    if proc.returncode != 0 or not isinstance(answer, dict):
        if "MemoryError" in proc.stderr or "alloc" in proc.stderr.lower():
            raise UploadRefused(422, "model-too-large", f"loading the model needs more than {limits.memory_mb} MiB")
        raise UploadRefused(422, "model-load-failed", f"the model could not be loaded (checker exit code "
                            f"{proc.returncode})")
    if "refused" in answer:
        raise UploadRefused.from_dict(answer["refused"])
    return ModelInfo.from_dict(answer["info"])
