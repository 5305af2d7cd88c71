"""Run one experiment end to end: build data and model, train with snapshots, return the report.

``run_experiment`` is the single entry point the CLI, the local runner and the Celery worker call,
so a job computes the same thing whichever way it was dispatched.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from glorot_core.activations import get_activation
from glorot_core.allocator import keep_freed_memory
from glorot_core.cost_surface import report_section as cost_surface_section
from glorot_core.data import check_fits, open_dataset
from glorot_core.errors import SpecNotRunnable
from glorot_core.instruments.host import to_host
from glorot_core.instruments.snapshot import Monitor, error_rate, measure
from glorot_core.json_numbers import json_safe
from glorot_core.losses import LOSSES
from glorot_core.models import build_mlp
from glorot_core.progress import CancelCheck, Progress, ProgressCallback
from glorot_core.report import build_report, snapshot_entry
from glorot_core.spec import ExperimentSpec
from glorot_core.training import train

if TYPE_CHECKING:
    from glorot_core.diagnose_model import ModelFiles

LSUV_EXAMPLES = 500


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU; an explicit ``cuda`` without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SpecNotRunnable(f"device {name!r} requested but CUDA is not available here")
    return torch.device(name)


def data_root(spec: ExperimentSpec) -> str | None:
    """The data folder: the spec's ``data.root``, else ``$GLOROT_DATA_DIR/<dataset>`` when set."""
    if spec.data.root:
        return spec.data.root
    base = os.environ.get("GLOROT_DATA_DIR")
    return str(Path(base) / spec.data.dataset) if base else None


def run_experiment(
    spec: ExperimentSpec,
    *,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    on_snapshot: Callable[[dict[str, Any]], None] | None = None,
    model_files: ModelFiles | None = None,
) -> dict[str, Any]:
    """Run ``spec`` and return its JSON-ready report (schema_version 1, docs/architecture.md).

    A spec whose ``model.source`` is not the built-in MLP is diagnosed by
    ``glorot_core.diagnose_model`` (``model_files``: the local copies of an uploaded model).

    ``on_snapshot`` receives each snapshot (the JSON-ready dict that will appear in the report's
    ``snapshots``) as soon as it is taken, on the training thread: it must be quick (hand the data
    to another thread for I/O). The service streams metric series with it.

    Raises ``Cancelled`` when ``should_cancel()`` turns True (checked about 4× a second) and
    ``DataUnavailable`` / ``SpecNotRunnable`` when the spec cannot run here. Divergence is not an
    exception: the report ends early with a ``diverged`` verdict naming the step and the layer.
    """
    if spec.model.source != "mlp":
        from glorot_core.diagnose_model import diagnose_model

        return diagnose_model(spec, files=model_files, progress=progress, should_cancel=should_cancel,
                              on_snapshot=on_snapshot)
    started = time.monotonic()
    keep_freed_memory()  # reuse freed tensor memory without page faults (glorot_core.allocator)
    if progress is not None:
        progress(Progress(0.0, 0, spec.train.steps, "setup", "building data and model"))
    device = resolve_device(spec.device)
    act = get_activation(spec.model.activation)
    d = spec.data
    root = data_root(spec)
    data = open_dataset(d.dataset, root=root, input_range=d.input_range, seed=d.seed)
    check_fits(data, spec.model.input_dim, spec.model.num_classes)  # idx / npz: dims read from the files
    x_test, y_test = (t.to(device) for t in data.fixed_set("test", d.test_examples))
    x_mon, y_mon = (t.to(device) for t in data.fixed_set("monitor", spec.diagnostics.monitor_examples))
    init_data = None
    if spec.model.init == "lsuv":
        init_data = open_dataset(d.dataset, root=root, input_range=d.input_range,
                                 seed=d.seed + 1).next_batch(LSUV_EXAMPLES)[0]
    model, init_info = build_mlp(spec.model, seed=spec.train.seed, init_data=init_data)
    model.to(device)
    loss_fn = LOSSES[spec.train.loss]
    mon = Monitor(x_mon, y_mon, act, loss_fn, spec.diagnostics.jacobian, spec.diagnostics.histogram_bins,
                  spec.diagnostics.gradient_basis, curvature=spec.diagnostics.curvature)
    counts = torch.bincount(y_test.cpu(), minlength=spec.model.num_classes)
    majority_error = 1.0 - float(counts.max()) / max(int(counts.sum()), 1)
    taken: list[int] = []

    def snapshot(step: int, train_loss: torch.Tensor | None, final: bool = False) -> dict[str, Any]:
        # Everything measured at this step reaches the host in one synchronisation.
        final = final or step == spec.train.steps
        host = to_host({"measure": measure(model, mon, index=len(taken), final=final),
                        "test_error": error_rate(model, x_test, y_test), "train_loss": train_loss})
        taken.append(step)
        entry = json_safe(snapshot_entry(
            host["measure"], step=step, examples_seen=step * spec.train.batch_size,
            test_error=host["test_error"], train_loss=host["train_loss"],
            elapsed_s=time.monotonic() - started,
        ))
        if on_snapshot is not None:
            on_snapshot(entry)
        return entry

    result = train(model, data.next_batch, spec.train, loss_fn, every=spec.diagnostics.every,
                   snapshot=snapshot, progress=progress, should_cancel=should_cancel)
    snapshots = result.snapshots
    end: dict[str, Any] = {"steps_done": result.steps_done,
                           "examples_seen": result.steps_done * spec.train.batch_size,
                           "diverged": result.divergence is not None}
    if result.divergence is not None:
        dv = result.divergence
        end["diverged_at"] = {"step": dv.step, "reason": dv.reason, "loss": dv.loss, "layer": dv.layer}
        # The state at divergence, without the Jacobian: its spectra of non-finite matrices mean nothing.
        mon.jacobian = mon.jacobian.model_copy(update={"mode": "off"})
        snapshots.append(snapshot(result.steps_done, None, final=True))
    if progress is not None:
        progress(Progress(1.0, result.steps_done, spec.train.steps, "report", "building the report"))
    report = build_report(spec, device=device, activation=act, points=model.probe_points(), init_info=init_info,
                          data_root=root, majority_error=majority_error, snapshots=snapshots, end=end,
                          started=started)
    surface = spec.diagnostics.cost_surface
    if surface.enabled:  # Fig 5 at the end of the run (glorot_core/cost_surface.py)
        report["cost_surface"] = json_safe(cost_surface_section(
            model, x_mon, y_mon, extent=surface.extent, points=surface.points, step=result.steps_done))
    return report
