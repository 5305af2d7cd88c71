"""Run one experiment end to end: build data and model, train with snapshots, write the report.

``run_experiment`` is the single entry point the CLI, the local runner and the Celery worker call,
so a job computes the same thing whichever way it was dispatched.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import glorot_core
from glorot_core.activations import get_activation
from glorot_core.errors import SpecNotRunnable
from glorot_core.instruments.host import to_host
from glorot_core.instruments.saturation import saturation_rule
from glorot_core.instruments.snapshot import Monitor, error_rate, measure
from glorot_core.json_numbers import json_safe
from glorot_core.losses import LOSSES
from glorot_core.models import build_mlp
from glorot_core.progress import CancelCheck, Progress, ProgressCallback
from glorot_core.report import SCHEMA_VERSION, layer_descriptions, snapshot_entry
from glorot_core.spec import ExperimentSpec
from glorot_core.training import train
from glorot_core.verdicts import diagnose

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
) -> dict[str, Any]:
    """Run ``spec`` and return its JSON-ready report (DESIGN.md, schema_version 1).

    ``on_snapshot`` receives each snapshot (the JSON-ready dict that will appear in the report's
    ``snapshots``) as soon as it is taken, on the training thread: it must be quick (hand the data
    to another thread for I/O). The service streams metric series with it.

    Raises ``Cancelled`` when ``should_cancel()`` turns True (checked about 4× a second) and
    ``DataUnavailable`` / ``SpecNotRunnable`` when the spec cannot run here. Divergence is not an
    exception: the report ends early with a ``diverged`` verdict naming the step and the layer.
    """
    from glorot_core.data import check_fits, open_dataset

    started = time.monotonic()
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
    mon = Monitor(x_mon, y_mon, act, loss_fn, spec.diagnostics.jacobian, spec.diagnostics.histogram_bins)
    counts = torch.bincount(y_test.cpu(), minlength=spec.model.num_classes)
    majority_error = 1.0 - float(counts.max()) / max(int(counts.sum()), 1)

    def snapshot(step: int, train_loss: torch.Tensor | None) -> dict[str, Any]:
        # Everything measured at this step reaches the host in one synchronisation.
        host = to_host({"measure": measure(model, mon), "test_error": error_rate(model, x_test, y_test),
                        "train_loss": train_loss})
        entry = json_safe(snapshot_entry(
            host["measure"], step=step, examples_seen=step * spec.train.batch_size,
            test_error=host["test_error"], train_loss=host["train_loss"],
            elapsed_s=time.monotonic() - started, activation=act,
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
        snapshots.append(snapshot(result.steps_done, None))
    if progress is not None:
        progress(Progress(1.0, result.steps_done, spec.train.steps, "report", "building the report"))
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "spec": spec.model_dump(mode="json"),
        "resolved": {
            "glorot_version": glorot_core.__version__,
            "torch_version": torch.__version__,
            "python": platform.python_version(),
            "device": str(device),
            "dtype": "float32",
            "init": init_info,
            "data_root": root,
            "majority_class_error": majority_error,
            "saturation_rule": saturation_rule(act),
            "saturation_threshold": act.saturation_threshold,
            "conventions": {
                "layers": "hidden layer i = 1..L: s_i = z_{i-1} W_i + b_i, z_i = f(s_i), z_0 = x",
                "jacobian": "layer i: J^i = dz_{i+1}/dz_i = diag(f'(s_{i+1})) W_{i+1}^T; none for the last hidden",
                "backprop_grad": "dC/ds_i per monitor example (cost summed over examples)",
                "weight_grad": "dC/dW_i of the mean cost over the monitor set",
                "train_loss": "mean mini-batch cost since the previous snapshot",
                "non_finite_numbers": "written as the strings NaN, Infinity, -Infinity",
            },
        },
        "layers": layer_descriptions(spec.model.widths, act.name),
        "snapshots": snapshots,
        "end": {**end, "elapsed_s": time.monotonic() - started},
        "theory": {
            "equations": "paper §4.2 eqs 5-7 (linear regime) and mean-field chi = n_in Var[W] E[f'(s)^2]",
            "at_init": [lay["theory"] for lay in snapshots[0]["layers"]],
        },
    }
    report["verdicts"] = diagnose(report, majority_error)
    # Snapshots were made JSON-safe as they were taken; the rest (e.g. a diverged loss of inf) here.
    return {k: v if k == "snapshots" else json_safe(v) for k, v in report.items()}


def run_cli(args: argparse.Namespace) -> int:
    """``glorot run SPEC -o REPORT``: validate, run with a progress bar on a terminal, write JSON."""
    from pydantic import ValidationError

    from glorot_core.cli import _load_json, format_validation_error
    from glorot_core.errors import Cancelled, GlorotError
    from glorot_core.spec import validate_spec

    try:
        spec = validate_spec(_load_json(args.spec))
    except ValidationError as e:
        print(format_validation_error(e), file=sys.stderr)
        return 1
    bar = None
    if not args.no_progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=max(spec.train.steps, 1), unit="step", file=sys.stderr)

    def on_progress(p: Progress) -> None:
        if bar is not None:
            bar.n = p.step
            bar.set_description(p.phase)
            bar.refresh()

    try:
        report = run_experiment(spec, progress=on_progress)
    except (GlorotError, Cancelled) as e:
        print(f"glorot run: {e}", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.close()
    text = json.dumps(report, indent=1)
    if args.output == "-":
        print(text)
    else:
        Path(args.output).write_text(text)
        for v in report["verdicts"]:
            print(f"[{v['severity']}] {v['code']}: {v['message']}", file=sys.stderr)
    return 0
