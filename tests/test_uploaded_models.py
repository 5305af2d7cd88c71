"""Uploaded models diagnosed like built-in ones (issue 8, item 3): same statistics whatever the format,
the same as a spec-built MLP with the same weights, and probe points named by module path.

Equalities are to float32 tolerance: the same weights and inputs go through the same float32 ops, so
the statistics agree to rounding (relative 1e-5); weight gradients come from autograd here and from one
GEMM for the built-in MLP (summation order differs: relative 1e-4).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from glorot_core.errors import SpecNotRunnable
from glorot_core.models import build_mlp
from glorot_core.runner import run_experiment
from glorot_core.spec import ExperimentSpec, validate_spec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from upload_fixtures import CNN_ARCH, CNN_INPUT, TinyTransformer, save_builtin_mlp, small_cnn, write_cnn_files

SECTIONS = ("activation", "saturation", "backprop_grad", "weight_grad", "theory", "effective_rank")


def _scalars(block: Any, prefix: str = "") -> dict[str, float]:
    """Every number of a section, flattened (histogram counts included)."""
    out: dict[str, float] = {}
    if isinstance(block, dict):
        for k, v in block.items():
            out.update(_scalars(v, f"{prefix}{k}."))
    elif isinstance(block, list):
        for i, v in enumerate(block):
            out.update(_scalars(v, f"{prefix}{i}."))
    elif isinstance(block, (int, float)) and not isinstance(block, bool):
        out[prefix.rstrip(".")] = float(block)
    return out


def _assert_same(a: dict[str, Any], b: dict[str, Any], sections: tuple[str, ...], rel: float) -> None:
    for sec in sections:
        sa, sb = _scalars(a[sec]), _scalars(b[sec])
        assert sa.keys() == sb.keys(), sec
        for k in sa:
            assert sb[k] == pytest.approx(sa[k], rel=rel, abs=1e-9), f"{sec}.{k}"


def test_mlp_uploaded_as_safetensors_matches_the_spec_built_mlp(tmp_path: Path) -> None:
    arch = {"kind": "mlp", "input_dim": 1024, "hidden": [32, 16], "num_classes": 9, "activation": "tanh"}
    common = {"diagnostics": {"monitor_examples": 60}, "device": "cpu"}
    builtin = validate_spec({"model": {k: v for k, v in arch.items() if k != "kind"}, **common,
                             "diagnostics": {"monitor_examples": 60, "jacobian": {"mode": "off"}}})
    mlp, _ = build_mlp(builtin.model, seed=builtin.train.seed)
    save_builtin_mlp(mlp, tmp_path / "mlp.safetensors")
    uploaded = validate_spec({"model": {"source": "file", "path": str(tmp_path / "mlp.safetensors"),
                                        "format": "safetensors", "architecture": arch}, **common})
    r_builtin, r_uploaded = run_experiment(builtin), run_experiment(uploaded)  # both on Shapeset's monitor set
    a, b = r_builtin["snapshots"][0], r_uploaded["snapshots"][0]
    assert [lay["name"] for lay in b["layers"]] == ["1", "3"]  # module paths of the user's Sequential
    assert b["monitor_loss"] == pytest.approx(a["monitor_loss"], rel=1e-6)
    for la, lb in zip(a["layers"], b["layers"], strict=True):
        _assert_same(la, lb, ("activation", "saturation", "backprop_grad", "theory", "effective_rank"), 1e-5)
        _assert_same(la, lb, ("weight_grad",), 1e-4)
    assert r_uploaded["resolved"]["conventions"]["cost"].startswith("labels: -log P(y|x)")
    assert set(r_uploaded["snapshots"][0]["layers"][0]) >= {"index", "name", *SECTIONS}


def _cnn_spec(path: Path, fmt: str, examples: int) -> ExperimentSpec:
    model: dict[str, Any] = {"source": "file", "path": str(path), "format": fmt}
    if fmt != "exported":
        model |= {"architecture": CNN_ARCH, "input": CNN_INPUT}
    return validate_spec({"model": model, "data": {"dataset": "random", "shape": [1, 8, 8], "seed": 3},
                          "diagnostics": {"monitor_examples": examples}, "device": "cpu"})


def test_same_cnn_in_three_formats_gives_the_same_statistics(tmp_path: Path) -> None:
    files = write_cnn_files(tmp_path)  # the .pt2 is traced with a batch of 2: 51 examples need a padded chunk
    reports = {fmt: run_experiment(_cnn_spec(path, fmt, 51)) for fmt, path in files.items()}
    ref = reports["safetensors"]
    assert [(lay["name"], lay["kind"]) for lay in ref["layers"]] == [("1", "conv"), ("5", "dense")]
    assert ref["layers"][0]["pooled"] == ["examples", "channels", "height", "width"]
    for fmt in ("state_dict", "exported"):
        assert [lay["name"] for lay in reports[fmt]["layers"]] == ["1", "5"]
        for la, lb in zip(ref["snapshots"][0]["layers"], reports[fmt]["snapshots"][0]["layers"], strict=True):
            _assert_same(la, lb, ("activation", "saturation", "backprop_grad", "weight_grad", "effective_rank"), 1e-5)

    # The statistics are those of the network itself, computed here directly (no labels: C = Σ mean y²).
    net = small_cnn().eval()
    x = (torch.randn((51, 1, 8, 8), generator=torch.Generator().manual_seed(3))).requires_grad_(False)
    s = net[0](x).requires_grad_(True)
    z = net[1](s)
    out = net[2:](z)
    (g,) = torch.autograd.grad(out.square().mean(dim=1).sum(), s)
    conv = ref["snapshots"][0]["layers"][0]
    assert conv["activation"]["std"] == pytest.approx(float(z.detach().std(unbiased=False)), rel=1e-4)
    assert conv["backprop_grad"]["std"] == pytest.approx(float(g.std(unbiased=False)), rel=1e-3)
    # units of a conv map are its channels: a channel is dead only if saturated at every position of every example
    assert 0.0 <= conv["saturation"]["dead_units"] <= 1.0
    assert conv["effective_rank"]["entropy"] <= 4 + 1e-6  # at most the 4 channels


def test_transformer_probe_points_are_named_by_module_path(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = TinyTransformer().eval()
    path = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(net, (torch.zeros(4, 8, dtype=torch.int64),)), str(path))
    spec = validate_spec({"model": {"source": "file", "path": str(path), "format": "exported"},
                          "data": {"dataset": "tokens", "vocab_size": 50, "sequence_length": 8},
                          "diagnostics": {"monitor_examples": 30}, "device": "cpu"})
    report = run_experiment(spec)
    acts = [lay for lay in report["layers"] if lay["role"] == "activation"]  # block outputs: test_block_outputs
    assert [lay["name"] for lay in acts] == ["blocks.0.mlp.act", "blocks.1.mlp.act"]
    assert all(lay["kind"] == "sequence" and lay["shape"] == [8, 64] and lay["activation"] == "gelu"
               for lay in acts)
    for lay in report["snapshots"][0]["layers"]:
        if lay["index"] not in {a["index"] for a in acts}:
            continue
        assert lay["activation"]["std"] > 0 and lay["backprop_grad"]["std"] > 0
        assert lay["weight_grad"]["std"] > 0  # blocks.i.mlp.fc feeds the GELU directly
        assert lay["saturation"]["fraction"] == 0.0  # gelu never saturates
        assert 1.0 <= lay["effective_rank"]["entropy"] <= 64  # units are the 64 features


def test_probe_data_must_fit_the_model(tmp_path: Path) -> None:
    files = write_cnn_files(tmp_path)
    spec = validate_spec({"model": {"source": "file", "path": str(files["exported"]), "format": "exported"},
                          "data": {"dataset": "random", "shape": [1, 9, 9]}, "device": "cpu"})
    with pytest.raises(SpecNotRunnable, match=r"data.shape is \[1, 9, 9\]"):
        run_experiment(spec)


def test_uploaded_models_are_fine_tuned_only_on_labelled_data() -> None:
    model = {"source": "uploaded", "model_id": "m1"}
    assert validate_spec({"model": model}).model.source == "uploaded"
    with pytest.raises(ValidationError) as e:  # random inputs have no labels (tests/test_uploaded_finetune.py)
        validate_spec({"model": model, "data": {"dataset": "random", "shape": [4]}, "train": {"steps": 10}})
    assert {err["loc"] for err in e.value.errors()} == {("train", "steps")}
    assert validate_spec({"model": model, "train": {"steps": 10}}).train.steps == 10  # a data set has labels
    with pytest.raises(ValidationError) as e:
        validate_spec({"data": {"dataset": "tokens", "vocab_size": 10, "sequence_length": 4}})
    assert e.value.errors()[0]["loc"] == ("data", "dataset")  # probe data needs an uploaded model
    schema = ExperimentSpec.model_json_schema()
    assert len(schema["properties"]["model"]["oneOf"]) == 3 and len(schema["properties"]["data"]["oneOf"]) == 4
