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


@pytest.mark.parametrize(("data", "loc"), [
    ({"train": {"steps": "200"}}, ("train", "steps")),
    ({"train": {"steps": True}}, ("train", "steps")),
    ({"train": {"steps": 200.5}}, ("train", "steps")),
    ({"train": {"lr": "0.1"}}, ("train", "lr")),
    ({"train": {"lr": True}}, ("train", "lr")),
    ({"model": {"hidden": [16, "16"]}}, ("model", "hidden", 1)),
    ({"diagnostics": {"jacobian": {"end_to_end": 1}}}, ("diagnostics", "jacobian", "end_to_end")),
    ({"diagnostics": {"jacobian": {"end_to_end": "true"}}}, ("diagnostics", "jacobian", "end_to_end")),
    ({"schema_version": True}, ("schema_version",)),
])
def test_numbers_are_strict_not_coerced(data: dict, loc: tuple) -> None:
    assert loc in _locs(data)


def test_numbers_follow_json_schema() -> None:
    """A JSON integer is a valid float, and a float with no fraction is a valid integer (as in JSON Schema,
    which the OpenAPI description states and clients generate from)."""
    spec = validate_spec({"train": {"lr": 1, "momentum": 0, "steps": 200.0}, "data": {"input_range": [0, 1]}})
    assert spec.train.lr == 1.0 and isinstance(spec.train.lr, float)
    assert spec.train.steps == 200 and isinstance(spec.train.steps, int)
    assert spec.data.input_range == (0.0, 1.0)


def test_seeds_are_bounded_by_what_consumes_them() -> None:
    """torch.Generator.manual_seed takes an unsigned 64-bit word: the largest seed the spec accepts must
    work there, and the next one (which torch refuses with an overflow) must be refused by the spec."""
    import torch

    from glorot_core.spec import MAX_SEED

    spec = validate_spec({"train": {"seed": MAX_SEED}, "data": {"seed": MAX_SEED}})
    torch.Generator().manual_seed(spec.train.seed)
    with pytest.raises((RuntimeError, ValueError, OverflowError)):
        torch.Generator().manual_seed(MAX_SEED + 1)
    locs = _locs({"train": {"seed": 10**30}, "data": {"seed": MAX_SEED + 1}})
    assert {("train", "seed"), ("data", "seed")} <= set(locs)
    assert ("train", "seed") in _locs({"train": {"seed": -1}})


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_floats_must_be_finite(bad: float) -> None:
    assert ("data", "input_range", 0) in _locs({"data": {"input_range": [bad, 1.0]}})
    assert ("train", "lr") in _locs({"train": {"lr": bad}})
    assert ("model", "bias_init") in _locs({"model": {"bias_init": bad}})


def test_every_integer_has_an_upper_bound() -> None:
    """No integer field is unbounded: each one's JSON schema states its maximum."""
    schema = ExperimentSpec.model_json_schema()

    def integers(node: object, path: str) -> list[tuple[str, dict]]:
        found: list[tuple[str, dict]] = []
        if isinstance(node, dict):
            if node.get("type") == "integer":
                found.append((path, node))
            for k, v in node.items():
                found += integers(v, f"{path}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                found += integers(v, f"{path}/{i}")
        return found

    ints = integers(schema, "")
    assert "/$defs/TrainSpec/properties/seed" in dict(ints)  # the walk sees nested models
    unbounded = [p for p, node in ints if not {"maximum", "exclusiveMaximum", "const", "enum"} & node.keys()]
    assert unbounded == []


def test_readme_spec_example_validates() -> None:
    """The spec example in README.md is valid as written (and equals the defaults but for its name)."""
    import pathlib
    import re

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```json\n(.*?)```", readme, flags=re.S)
    assert blocks
    for block in blocks:
        data = json.loads(block)
        if "model" in data or "train" in data:
            spec = validate_spec(data)
            assert spec.model_dump(exclude={"name"}) == validate_spec({}).model_dump(exclude={"name"})
