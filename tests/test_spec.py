"""ExperimentSpec validation: defaults follow the paper, every error names the field at fault."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from glorot_core.spec import ExperimentSpec, validate_spec


def _locs(data: dict, **kw) -> dict[tuple, str]:
    with pytest.raises(ValidationError) as info:
        validate_spec(data, **kw)
    return {tuple(e["loc"]): e["msg"] for e in info.value.errors()}


def test_defaults_are_the_papers_setup() -> None:
    spec = validate_spec({})
    assert spec.model.widths == [1024, 1000, 1000, 1000, 1000, 1000, 9]
    assert spec.train.batch_size == 10 and spec.train.momentum == 0 and spec.train.optimizer == "sgd"
    assert spec.model.bias_init == 0
    assert spec.diagnostics.monitor_examples == 300
    assert spec.data.dataset == "shapeset3x2"


def test_field_level_errors() -> None:
    locs = _locs({"model": {"activation": "swish", "hidden": [0, 70_000]}, "train": {"lr": 0},
                  "diagnostics": {"jacobian": {"mode": "fast"}}})
    assert ("model", "activation") in locs and "swish" in locs[("model", "activation")]
    assert ("model", "hidden", 0) in locs and ("model", "hidden", 1) in locs
    assert ("train", "lr") in locs
    assert ("diagnostics", "jacobian", "mode") in locs


def test_unknown_fields_are_rejected() -> None:
    assert ("model", "hiden") in _locs({"model": {"hiden": [10]}})


def test_parameter_cap_is_configurable_and_points_at_hidden() -> None:
    spec = {"model": {"hidden": [1000, 1000]}}
    assert validate_spec(spec).model.parameter_count == 1024 * 1000 + 1000 + 1000 * 1000 + 1000 + 1000 * 9 + 9
    locs = _locs(spec, max_parameters=1_000_000)
    assert "above the cap" in locs[("model", "hidden")]


def test_dataset_shape_mismatch_names_both_fields() -> None:
    locs = _locs({"data": {"dataset": "mnist"}})
    assert set(locs) == {("model", "input_dim"), ("model", "num_classes")}
    ok = validate_spec({"data": {"dataset": "mnist"}, "model": {"input_dim": 784, "num_classes": 10}})
    assert ok.model.widths[0] == 784


def test_spec_round_trips_through_json() -> None:
    spec = validate_spec({"name": "x", "model": {"hidden": [7, 5], "init": "lsuv"}})
    assert ExperimentSpec.model_validate_json(spec.model_dump_json()) == spec


def test_validate_cli_prints_field_paths(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": {"lr": -1}, "model": {"activation": "nope"}}))
    r = subprocess.run([sys.executable, "-m", "glorot_core.cli", "validate", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1
    assert "train.lr" in r.stderr and "model.activation" in r.stderr
    good = tmp_path / "good.json"
    good.write_text("{}")
    r = subprocess.run([sys.executable, "-m", "glorot_core.cli", "validate", str(good)], capture_output=True, text=True)
    assert r.returncode == 0 and "ok" in r.stdout


def test_snapshot_count_is_capped_with_a_hint() -> None:
    locs = _locs({"train": {"steps": 5_000_000}, "diagnostics": {"every": 1000}})
    assert "use every >= 2,502" in locs[("diagnostics", "every")]
    spec = validate_spec({"train": {"steps": 5_000_000}, "diagnostics": {"every": 2502}})
    assert spec.train.steps // spec.diagnostics.every + 1 <= 2000
