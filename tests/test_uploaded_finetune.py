"""Fine-tuning uploaded models when the data have labels (issue 8 item 5): ``train.steps`` SGD steps of the
built-in loop, with snapshots every ``diagnostics.every`` steps taken by the same instruments.

Checks: a small CNN on an easy, linearly separable set (fixed seed) gets several snapshots and a falling
loss; an uploaded copy of a built-in MLP fine-tuned on Shapeset follows the built-in run step for step
(same weights, same batches, same SGD: equal to float32 rounding); without labels the spec is refused
naming ``train.steps``.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import save_file
from torch import nn

from glorot_core.diagnose_model import ModelFiles
from glorot_core.errors import SpecNotRunnable
from glorot_core.models import build_mlp
from glorot_core.runner import run_experiment
from glorot_core.spec import ExperimentSpec, validate_spec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from upload_fixtures import CNN_ARCH, CNN_INPUT, save_builtin_mlp

TWO_CLASS_CNN_ARCH: dict[str, Any] = {**CNN_ARCH, "layers": [
    *CNN_ARCH["layers"][:4], {**CNN_ARCH["layers"][4], "out_features": 2}]}
"""The fixtures' CNN (conv, tanh, max-pool, flatten) with a plain 2-way linear read-out in place of its 10
softsign outputs: the data set here has two classes, and logits held in (-1, 1) keep the loss above 0.8
(a third of its start, ln 10), so the loss could not be seen falling to a quarter."""
QUIET = {"jacobian": {"mode": "off"}, "curvature": {"mode": "off"}}


def _cnn_files(tmp_path: Path, labels: bool = True) -> tuple[Path, Path]:
    """A 1×8×8 → 2 CNN and a separable set: class 0 brightens the top half (+1), class 1 the bottom half,
    on N(0, 0.3²) noise; a linear read-out of the two halves' means separates them with margin ≫ noise."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 2))
    save_file(net.state_dict(), str(tmp_path / "cnn.safetensors"))
    g = np.random.default_rng(0)
    y = g.integers(0, 2, 200)
    x = g.normal(0, 0.3, (200, 1, 8, 8)).astype(np.float32)
    x[y == 0, :, :4, :] += 1.0
    x[y == 1, :, 4:, :] += 1.0
    arrays = {"inputs": x, "labels": y} if labels else {"inputs": x}
    np.savez(tmp_path / "data.npz", **arrays)
    return tmp_path / "cnn.safetensors", tmp_path / "data.npz"


def _cnn_spec(model: Path, steps: int, diagnostics: dict[str, Any] | None = None) -> ExperimentSpec:
    return validate_spec({
        "model": {"source": "file", "path": str(model), "format": "safetensors", "architecture": TWO_CLASS_CNN_ARCH,
                  "input": CNN_INPUT},
        "data": {"dataset": "npz", "upload_id": "probe"}, "train": {"steps": steps, "lr": 0.1, "batch_size": 10},
        "diagnostics": {"every": 10, "monitor_examples": 60, **(diagnostics or QUIET)}, "device": "cpu"})


def _run(spec: ExperimentSpec, data: Path) -> dict[str, Any]:
    return run_experiment(spec, model_files=ModelFiles(Path(spec.model.path), spec.model.metadata(), data))


def test_cnn_fine_tuned_with_labels_has_snapshots_and_its_loss_falls(tmp_path: Path) -> None:
    model, data = _cnn_files(tmp_path)
    report = _run(_cnn_spec(model, 30, {"curvature": {"mode": "init"}, "jacobian": {"mode": "off"}}), data)
    snaps = report["snapshots"]
    assert [s["step"] for s in snaps] == [0, 10, 20, 30]
    assert [s["examples_seen"] for s in snaps] == [0, 100, 200, 300]
    assert report["end"] == {**report["end"], "steps_done": 30, "examples_seen": 300, "diverged": False}
    assert snaps[0]["train_loss"] is None and all(s["train_loss"] > 0 for s in snaps[1:])
    assert all(s["test_error"] is None for s in snaps)  # an uploaded .npz has no held-out test set
    losses = [s["monitor_loss"] for s in snaps]
    assert all(b < a for a, b in itertools.pairwise(losses)), losses
    assert losses[-1] < 0.25 * losses[0] and snaps[-1]["monitor_error"] == 0.0
    assert snaps[-1]["train_loss"] < snaps[1]["train_loss"]
    for s in snaps:  # every snapshot has every probe point's statistics
        assert [lay["name"] for lay in s["layers"]] == ["1"]
        assert s["layers"][0]["activation"]["std"] > 0 and s["layers"][0]["backprop_grad"]["std"] > 0
    assert snaps[0]["curvature"]["lambda_max"] > 0 and all(s["curvature"] is None for s in snaps[1:])
    # snapshot 0 is the plain diagnosis of the uploaded weights
    plain = _run(_cnn_spec(model, 0), data)["snapshots"][0]
    assert plain["layers"][0]["activation"]["std"] == pytest.approx(snaps[0]["layers"][0]["activation"]["std"],
                                                                   rel=1e-6)
    assert plain["monitor_loss"] == pytest.approx(snaps[0]["monitor_loss"], rel=1e-6)


def test_uploaded_mlp_fine_tuned_on_a_data_set_follows_the_built_in_run(tmp_path: Path) -> None:
    """The same weights trained by the same loop on the same Shapeset batches: train loss, test error and
    the layers' statistics agree with the built-in MLP's run to float32 rounding (summation order differs
    between nn.Linear and the MLP's own layers: relative 1e-4)."""
    arch = {"kind": "mlp", "input_dim": 1024, "hidden": [32, 16], "num_classes": 9, "activation": "tanh"}
    common = {"data": {"test_examples": 100}, "train": {"steps": 20, "lr": 0.05},
              "diagnostics": {"every": 10, "monitor_examples": 60, **QUIET}, "device": "cpu"}
    builtin = validate_spec({"model": {k: v for k, v in arch.items() if k != "kind"}, **common})
    mlp, _ = build_mlp(builtin.model, seed=builtin.train.seed)
    save_builtin_mlp(mlp, tmp_path / "mlp.safetensors")
    uploaded = validate_spec({"model": {"source": "file", "path": str(tmp_path / "mlp.safetensors"),
                                        "format": "safetensors", "architecture": arch}, **common})
    a, b = run_experiment(builtin), run_experiment(uploaded)
    assert [s["step"] for s in b["snapshots"]] == [s["step"] for s in a["snapshots"]] == [0, 10, 20]
    for sa, sb in zip(a["snapshots"], b["snapshots"], strict=True):
        for key in ("train_loss", "test_error", "monitor_loss"):
            assert (sb[key] is None) == (sa[key] is None)
            if sa[key] is not None:
                assert sb[key] == pytest.approx(sa[key], rel=1e-4, abs=1e-6), (sa["step"], key)
        for la, lb in zip(sa["layers"], sb["layers"], strict=True):
            assert lb["activation"]["std"] == pytest.approx(la["activation"]["std"], rel=1e-4)
            assert lb["backprop_grad"]["std"] == pytest.approx(la["backprop_grad"]["std"], rel=1e-4)
    assert b["snapshots"][-1]["test_error"] is not None


def test_fine_tuning_without_labels_is_refused_naming_train_steps(tmp_path: Path) -> None:
    model = {"source": "uploaded", "model_id": "m1"}
    for data in ({"dataset": "random", "shape": [1, 8, 8]}, {"dataset": "tokens", "vocab_size": 9,
                                                            "sequence_length": 4}):
        with pytest.raises(ValidationError) as e:
            validate_spec({"model": model, "data": data, "train": {"steps": 5}})
        (err,) = e.value.errors()
        assert err["loc"] == ("train", "steps") and err["type"] == "fine_tuning_needs_labels"
        assert "needs labels" in err["msg"]
    # an uploaded .npz is checked when the job is submitted (tests/service) and again when it runs
    cnn, data_path = _cnn_files(tmp_path, labels=False)
    with pytest.raises(SpecNotRunnable, match=r"needs labels: the uploaded \.npz has no 'labels'"):
        _run(_cnn_spec(cnn, 5), data_path)
