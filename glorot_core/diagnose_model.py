"""Diagnose an uploaded (or local) model: every registered instrument at each of its probe points.

``run_experiment`` delegates here when ``model.source`` is not the built-in MLP. The model file is
checked and loaded with the same safe loaders as the upload check (``glorot_core.uploads.inspect.
load_model``), in the calling process (in the service: the job's own process, which has memory and
time limits). The probe data (``data``) become the monitor set; one forward and one backward pass
over it (``glorot_core.uploads.capture``) give each probe point's s, z and ∂C/∂s, and the DEFAULT
registry's instruments run on them exactly as on a built-in model's layers. The report has the
built-in schema (one snapshot, at step 0, or with ``train.steps`` > 0 and labelled data one per
``diagnostics.every`` fine-tuning steps: :func:`_fine_tune`); each layer entry carries its probe point's ``name``.

Jacobians: per block between consecutive probe points and end to end (input, or a token model's
embedding output, → logits), exact or matrix-free by torch.func on the model's graph
(``glorot_core.uploads.jacobians``; :func:`_jacobians`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glorot_core.activations import Activation
from glorot_core.allocator import keep_freed_memory
from glorot_core.data import open_dataset
from glorot_core.errors import SpecNotRunnable
from glorot_core.instruments.base import SnapshotCapture
from glorot_core.instruments.gradients import gradient_stats
from glorot_core.instruments.host import to_host
from glorot_core.instruments.monitor import Monitor
from glorot_core.instruments.probe import ProbePoint
from glorot_core.instruments.registry import DEFAULT
from glorot_core.instruments.snapshot import error_rate
from glorot_core.json_numbers import json_safe
from glorot_core.losses import LOSSES, cross_entropy
from glorot_core.progress import CancelCheck, Progress, ProgressCallback
from glorot_core.report import build_report, snapshot_entry
from glorot_core.spec import DataSpec, ExperimentSpec, FileModelSpec, JacobianSpec
from glorot_core.training import train
from glorot_core.uploads.activations import activation_named
from glorot_core.uploads.capture import RawCapture, UploadedCapture, capture, fold, per_example_cost
from glorot_core.uploads.finetune import ArrayStream, FlatInputs
from glorot_core.uploads.inspect import InspectLimits, LoadedModel, load_model
from glorot_core.uploads.jacobians import uploaded_jacobian_spectra
from glorot_core.uploads.probe_data import NpzData, RandomData, TokenData
from glorot_core.uploads.probe_points import kind_of
from glorot_core.uploads.segments import graph_view

Tensor = torch.Tensor

POOLED = {"dense": ("examples", "units"), "conv": ("examples", "channels", "height", "width"),
          "sequence": ("examples", "tokens", "features"), "tensor": ("examples", "entries")}
UNITS = {"dense": "units", "conv": "channels (positions are samples)", "sequence": "features (tokens are samples)",
         "tensor": "entries"}
CONVENTIONS = {
    "layers": "probe point i = 1..L in forward order, after each activation (role activation: s = the "
              "activation's input, z = its output) and at block outputs (role residual: a residual sum; role "
              "norm: a normalisation's output; s = z, no activation, saturation null); name = the module path",
    "cost": "labels: -log P(y|x) (softmax of the output); no labels: the mean squared output per example, "
            "C = sum_n mean_k y_{n,k}^2",
    "pooling": "scalar statistics pool every axis of a probe point (layers[].pooled); units (dead units, "
               "effective rank) are dense units, conv channels (examples x positions as samples) or "
               "sequence features (examples x tokens as samples)",
    "weight_grad": "dC/dW of the mean cost for the one Linear/Conv2d weight that feeds s directly; none otherwise",
    "jacobian": "layer i: J^i = dz_{i+1}/dz_i per example between consecutive probe points (from/to), everything "
                "not downstream of z_i held fixed; none for the last; end_to_end: input (token models: embedding "
                "output) -> logits",
}


@dataclass(frozen=True)
class ModelFiles:
    """Local copies of an uploaded model (and of its uploaded ``.npz`` probe data), and the metadata the
    model was declared with; the service's worker fetches them before the run."""

    model_path: Path
    metadata: dict[str, Any]
    data_path: Path | None = None


def diagnose_model(
    spec: ExperimentSpec,
    *,
    files: ModelFiles | None = None,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    on_snapshot: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """The report of ``spec``'s uploaded or local model (module docstring); ``SpecNotRunnable`` when the
    model or its probe data cannot run here, ``UploadRefused`` when the file is not accepted."""
    from glorot_core.runner import resolve_device

    started = time.monotonic()
    keep_freed_memory()
    if progress is not None:
        progress(Progress(0.0, 0, 0, "setup", "loading the model"))
    files = _files(spec, files)
    limits = InspectLimits(max_parameters=int(os.environ.get("GLOROT_MAX_PARAMETERS", 200_000_000)), memory_mb=None)
    loaded = load_model(files.model_path, files.metadata, limits)
    device = resolve_device(spec.device)
    x, y = probe_inputs(spec, loaded, files.data_path)
    module = loaded.module.to(device)
    x, y = x.to(device), (y.to(device) if y is not None else None)
    if should_cancel is not None and should_cancel():
        from glorot_core.errors import Cancelled

        raise Cancelled("cancelled")
    raw = _capture(module, x, y, loaded)
    if not raw.sites:
        raise SpecNotRunnable("the model has no probe point (no activation module or op to observe)")
    points, _ = _captures(raw)
    mon = Monitor(x, y if y is not None else torch.zeros(x.shape[0], dtype=torch.int64, device=device),
                  _main_activation(points), cross_entropy, spec.diagnostics.jacobian,
                  spec.diagnostics.histogram_bins, spec.diagnostics.gradient_basis,
                  curvature=spec.diagnostics.curvature)
    tuning = _tuning(spec, loaded, module, raw, files.data_path, device)
    first: list[RawCapture] = [raw]
    taken: list[int] = []

    def snapshot(step: int, train_loss: float | None, final: bool = False) -> dict[str, Any]:
        current = first.pop() if first else _capture(module, x, y, loaded)
        host = _measure(module, loaded, x, y, mon, current, index=len(taken),
                        final=final or step == spec.train.steps)
        test_error = None
        if tuning is not None and tuning.test is not None:
            test_error = float(error_rate(tuning.model, *tuning.test))
        taken.append(step)
        entry = json_safe(snapshot_entry(host, step=step, examples_seen=step * spec.train.batch_size,
                                         test_error=test_error, train_loss=train_loss,
                                         elapsed_s=time.monotonic() - started))
        if on_snapshot is not None:
            on_snapshot(entry)
        return entry

    snapshots, end = _fine_tune(spec, tuning, mon, snapshot, progress, should_cancel)
    majority = None
    if y is not None:
        counts = torch.bincount(y.cpu())
        majority = 1.0 - float(counts.max()) / max(int(counts.sum()), 1)
    report = build_report(spec, device=device, activation=_main_activation(points), points=points,
                          init_info={"scheme": "uploaded", "format": files.metadata.get("format")},
                          data_root=None, majority_error=majority, snapshots=snapshots, end=end, started=started)
    report["resolved"]["conventions"].update(CONVENTIONS)
    report["resolved"]["model"] = {"source": spec.model.source, "format": files.metadata.get("format"),
                                   "input": {"shape": list(loaded.input_shape), "dtype": loaded.input_dtype},
                                   "parameters": loaded.parameters, "labels": y is not None}
    for lay, p in zip(report["layers"], points, strict=True):
        lay.update({"kind": p.kind, "shape": list(p.shape), "pooled": list(p.pooled), "unit_axis": UNITS[p.kind],
                    "role": p.role})
    if progress is not None:
        progress(Progress(1.0, end["steps_done"], spec.train.steps, "report", "report built"))
    return report


def _measure(module: torch.nn.Module, loaded: LoadedModel, x: Tensor, y: Tensor | None, mon: Monitor,
             raw: RawCapture, *, index: int, final: bool) -> dict[str, Any]:
    """Every due instrument of the DEFAULT registry on the capture ``raw`` of the module's current weights:
    the host tree ``snapshot_entry`` takes (one host synchronisation)."""
    points, captures = _captures(raw)
    network = _network(raw, y, mon, points)
    snap = SnapshotCapture(captures, index=index, final=final,
                           network={"model": module, "jacobian_spectra": _jacobians(module, loaded, x, points),
                                    "uploaded": True, "cost": _mean_cost(module, loaded, x, y, mon)})
    host = to_host({"network": network, "sections": DEFAULT.measure(snap, mon)})
    host["points"] = points
    return host


def _mean_cost(module: torch.nn.Module, loaded: LoadedModel, x: Tensor, y: Tensor | None,
               mon: Monitor) -> Callable[[], Tensor]:
    """The capture's cost (``resolved.conventions.cost``) as a mean over the first
    ``diagnostics.curvature.examples`` monitor examples: what the curvature instrument differentiates twice."""
    n = min(mon.curvature.examples if mon.curvature is not None else x.shape[0], x.shape[0])
    run = FlatInputs(module, loaded.input_shape, x.dtype, loaded.batch, [])

    def cost() -> Tensor:
        return per_example_cost(run(x[:n]), y[:n] if y is not None else None).mean()

    return cost


@dataclass
class _Tuning:
    """What fine-tuning an uploaded model needs (``glorot_core.uploads.finetune``): the module behind the
    training loop's interface, the training stream and, for a data set, its fixed test set."""

    model: FlatInputs
    stream: Any
    test: tuple[Tensor, Tensor] | None


def _tuning(spec: ExperimentSpec, loaded: LoadedModel, module: torch.nn.Module, raw: RawCapture,
            data_path: Path | None, device: torch.device) -> _Tuning | None:
    """The fine-tuning set-up when ``train.steps`` > 0 (None otherwise); ``SpecNotRunnable`` without labels
    or with labels the model's output cannot score."""
    if spec.train.steps == 0:
        return None
    weights = [site.weight for site in raw.sites] + [raw.output_weight]
    model = FlatInputs(module, loaded.input_shape, getattr(torch, loaded.input_dtype), loaded.batch, weights)
    classes = int(raw.output.shape[-1]) if raw.output.dim() == 2 else 0
    d = spec.data
    if isinstance(d, DataSpec):
        from glorot_core.runner import data_root

        data = open_dataset(d.dataset, root=data_root(spec), input_range=d.input_range, seed=d.seed)
        _expect(data.num_classes <= classes, f"data set {d.dataset!r} has {data.num_classes} classes; the model "
                f"outputs {classes} logits per example")
        xt, yt = data.fixed_set("test", d.test_examples)
        return _Tuning(model, data, (xt.to(device), yt.to(device)))
    if not isinstance(d, NpzData) or data_path is None:
        raise SpecNotRunnable("fine-tuning (train.steps > 0) needs labelled data: a data set or an uploaded .npz")
    with np.load(data_path, allow_pickle=False) as z:
        _expect("labels" in z.files, "fine-tuning (train.steps > 0) needs labels: the uploaded .npz has no "
                "'labels' array")
        inputs, labels = np.asarray(z["inputs"]), np.asarray(z["labels"]).astype(np.int64)
    _expect(int(labels.max()) < classes and int(labels.min()) >= 0, f"the uploaded labels run from "
            f"{int(labels.min())} to {int(labels.max())}; the model outputs {classes} logits per example")
    return _Tuning(model, ArrayStream(torch.from_numpy(inputs), torch.from_numpy(labels), spec.train.seed), None)


def _fine_tune(spec: ExperimentSpec, tuning: _Tuning | None, mon: Monitor,
               snapshot: Callable[..., dict[str, Any]], progress: ProgressCallback | None,
               should_cancel: CancelCheck | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``train.steps`` SGD steps of the built-in loop (``glorot_core.training.train``: same optimizer
    options, windows, divergence replay) with ``snapshot`` at step 0, every ``diagnostics.every`` steps and
    the last; without steps, the one snapshot at step 0. Returns the snapshots and the report's ``end``."""
    if tuning is None:
        return [snapshot(0, None)], {"steps_done": 0, "examples_seen": 0, "diverged": False}
    result = train(tuning.model, tuning.stream.next_batch, spec.train, LOSSES[spec.train.loss],  # type: ignore[arg-type]
                   every=spec.diagnostics.every, snapshot=snapshot, progress=progress, should_cancel=should_cancel)
    end: dict[str, Any] = {"steps_done": result.steps_done,
                           "examples_seen": result.steps_done * spec.train.batch_size,
                           "diverged": result.divergence is not None}
    snapshots = result.snapshots
    if result.divergence is not None:
        dv = result.divergence
        end["diverged_at"] = {"step": dv.step, "reason": dv.reason, "loss": dv.loss, "layer": dv.layer}
        mon.jacobian = mon.jacobian.model_copy(update={"mode": "off"})  # no spectra of non-finite matrices
        snapshots.append(snapshot(result.steps_done, None, final=True))
    return snapshots, end


def _jacobians(module: torch.nn.Module, loaded: LoadedModel, x: Tensor,
               points: list[ProbePoint]) -> Callable[[JacobianSpec, int], dict[str, Any]]:
    """The Jacobian instrument's computation for this model: per block and end to end on the monitor
    inputs ``x`` (``glorot_core.uploads.jacobians``); the graph is built only when the instrument runs."""
    names = [p.name for p in points]

    def compute(spec: JacobianSpec, bins: int) -> dict[str, Any]:
        view = graph_view(module, exported=loaded.program is not None)
        return uploaded_jacobian_spectra(view, x, names, spec, bins, static_batch=loaded.batch)

    return compute


def _files(spec: ExperimentSpec, files: ModelFiles | None) -> ModelFiles:
    if isinstance(spec.model, FileModelSpec):
        return ModelFiles(Path(spec.model.path), spec.model.metadata(), files.data_path if files else None)
    if files is None:
        raise SpecNotRunnable("an uploaded model (source 'uploaded') runs in the service; offline, name the file "
                              "with {\"source\": \"file\", \"path\": …, \"format\": …}")
    return files


def _capture(module: torch.nn.Module, x: Tensor, y: Tensor | None, loaded: LoadedModel) -> RawCapture:
    try:
        return capture(module, x, y, graph=loaded.program is not None, batch=loaded.batch)
    except (RuntimeError, IndexError, ValueError) as e:
        first = str(e).strip().splitlines()
        raise SpecNotRunnable(f"the model does not run on the probe data (inputs {list(x.shape[1:])} {x.dtype}"
                              f"{', with labels' if y is not None else ''}): "
                              f"{first[0][:300] if first else type(e).__name__}") from None


def _captures(raw: RawCapture) -> tuple[list[ProbePoint], list[UploadedCapture]]:
    points, captures = [], []
    for i, (site, g, wg) in enumerate(zip(raw.sites, raw.grad_s, raw.weight_grads, strict=True), start=1):
        shape = tuple(int(d) for d in site.z.shape[1:])
        kind = kind_of(shape)
        linear = site.weight is not None and site.weight.dim() == 2
        point = ProbePoint(index=i, name=site.name, kind=kind, shape=shape, pooled=POOLED[kind],
                           activation=activation_named(site.activation),
                           fan_in=int(site.weight.shape[1]) if linear else None,
                           fan_out=None, role=site.role)
        dense = kind == "dense" and linear
        s_folded = fold(site.s)
        captures.append(UploadedCapture(
            point=point, s=s_folded, z=s_folded if site.z is site.s else fold(site.z), grad_s=fold(g),
            z_in=site.z_in.reshape(site.z_in.shape[0], -1) if dense and site.z_in is not None else None,
            weight=site.weight.detach() if linear and raw.output_weight is not None else None,
            given_weight_grad=wg))
        points.append(point)
    return points, captures


def _main_activation(points: list[ProbePoint]) -> Activation:
    """The run's activation (the report's saturation rule): the first activation point's, else ``none``."""
    return next((p.activation for p in points if p.role == "activation"), points[0].activation)


def _network(raw: RawCapture, y: Tensor | None, mon: Monitor, points: list[ProbePoint]) -> dict[str, Any]:
    n = raw.output.shape[0]
    out_w = raw.output_weight.detach().to(torch.float64) if raw.output_weight is not None else None
    return {
        "monitor_loss": raw.cost_sum / n,
        "monitor_error": (raw.output.argmax(-1) != y).float().mean() if y is not None else None,
        "input_var": mon.input_var,
        "output_grad_var": raw.grad_output.to(torch.float64).var(),
        "output_backward_gain": out_w.shape[0] * out_w.var() if out_w is not None else None,
        "output_weight_grad": gradient_stats(raw.output_weight_grad, mon.gradient_bins)
        if raw.output_weight_grad is not None else None,
        "activation": _main_activation(points),
    }


def probe_inputs(spec: ExperimentSpec, loaded: LoadedModel, data_path: Path | None) -> tuple[Tensor, Tensor | None]:
    """The monitor set (``diagnostics.monitor_examples`` examples) from ``spec.data``, shaped for the model."""
    n = spec.diagnostics.monitor_examples
    d = spec.data
    shape, dtype = loaded.input_shape, getattr(torch, loaded.input_dtype)
    if isinstance(d, RandomData):
        _expect(list(d.shape) == list(shape), f"data.shape is {list(d.shape)}; the model takes {list(shape)}")
        _expect(dtype.is_floating_point, f"the model takes {loaded.input_dtype} inputs (token ids?): "
                "use data {\"dataset\": \"tokens\", …}")
        g = torch.Generator().manual_seed(d.seed)
        x = torch.randn((n, *shape), generator=g) if d.distribution == "normal" \
            else torch.rand((n, *shape), generator=g) * 2 - 1
        return x.to(dtype), None
    if isinstance(d, TokenData):
        _expect(not dtype.is_floating_point, f"the model takes {loaded.input_dtype} inputs, not token ids")
        _expect(list(shape) == [d.sequence_length], f"data.sequence_length is {d.sequence_length}; the model "
                f"takes inputs of shape {list(shape)}")
        g = torch.Generator().manual_seed(d.seed)
        return torch.randint(0, d.vocab_size, (n, d.sequence_length), generator=g, dtype=dtype), None
    if isinstance(d, NpzData):
        if data_path is None:
            raise SpecNotRunnable("uploaded probe data (data.upload_id) are read in the service")
        with np.load(data_path, allow_pickle=False) as z:
            inputs = np.asarray(z["inputs"][:n])
            labels = np.asarray(z["labels"][:n]) if "labels" in z.files else None
        _expect(list(inputs.shape[1:]) == list(shape), f"the uploaded inputs have shape {list(inputs.shape[1:])} "
                f"per example; the model takes {list(shape)}")
        y = torch.from_numpy(labels.astype(np.int64)) if labels is not None else None
        return torch.from_numpy(inputs).to(dtype), y
    assert isinstance(d, DataSpec)
    from glorot_core.runner import data_root

    data = open_dataset(d.dataset, root=data_root(spec), input_range=d.input_range, seed=d.seed)
    x, y = data.fixed_set("monitor", n)
    per = int(np.prod(shape))
    _expect(x[0].numel() == per, f"data set {d.dataset!r} has {x[0].numel()} inputs per example; the model takes "
            f"{list(shape)} ({per})")
    return x.reshape(x.shape[0], *shape).to(dtype), y


def _expect(ok: bool, message: str) -> None:
    if not ok:
        raise SpecNotRunnable(message)
