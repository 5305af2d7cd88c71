"""The example specs in examples/ are valid, and the ones the README names are what it says they are.

A newcomer runs these files by path (`glorot validate examples/…`, `glorot submit examples/…`), so a
spec that stopped validating after a schema change would break the README's first commands.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest

from glorot_core.spec import validate_spec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SPECS = sorted(EXAMPLES.glob("*.json"))


def test_there_are_examples() -> None:
    names = {p.name for p in SPECS}
    assert {"tanh-standard.json", "tanh-normalized.json", "fig2-sigmoid.json"} <= names


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_example_validates(path: Path) -> None:
    spec = validate_spec(json.loads(path.read_text()))
    assert spec.name == path.stem, "an example's name is its file name, so reports say which file ran"


def test_readme_spec_block_is_the_tanh_standard_example() -> None:
    """The README shows examples/tanh-standard.json in full; the two must not drift apart."""
    readme = (ROOT / "README.md").read_text()
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", readme, flags=re.S)]
    assert json.loads((EXAMPLES / "tanh-standard.json").read_text()) in blocks


def test_fig2_example_is_the_papers_fig2_network() -> None:
    """Paper Fig 2: sigmoid, four hidden layers of 1000, standard init, SGD on mini-batches of 10 of
    Shapeset-3x2; ε = 0.1 is the rate at which the top layer's saturation shows within 1,000 updates."""
    spec = validate_spec(json.loads((EXAMPLES / "fig2-sigmoid.json").read_text()))
    assert spec.model.activation == "sigmoid" and spec.model.init == "standard"
    assert spec.model.hidden == [1000] * 4
    assert spec.data.dataset == "shapeset3x2"
    assert spec.train.batch_size == 10 and spec.train.optimizer == "sgd" and spec.train.momentum == 0
    assert spec.train.loss == "cross_entropy" and spec.train.lr == 0.1
    assert spec.train.steps >= 1000
    assert spec.diagnostics.monitor_examples == 300


def test_normalized_example_differs_from_standard_only_in_init() -> None:
    std = validate_spec(json.loads((EXAMPLES / "tanh-standard.json").read_text()))
    norm = validate_spec(json.loads((EXAMPLES / "tanh-normalized.json").read_text()))
    assert norm.model.init == "normalized"
    assert norm.model_dump(exclude={"name": True, "model": {"init"}}) == \
        std.model_dump(exclude={"name": True, "model": {"init"}})


def test_every_example_path_in_the_docs_exists() -> None:
    docs = [ROOT / "README.md", EXAMPLES / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for doc in docs:
        for name in re.findall(r"examples/([\w.-]+\.json)", doc.read_text()):
            assert (EXAMPLES / name).is_file(), f"{doc.name} names examples/{name}, which does not exist"
    rows = re.findall(r"^\| `([\w.-]+\.json)` \|", (EXAMPLES / "README.md").read_text(), flags=re.M)
    assert set(rows) == {p.name for p in SPECS}, "examples/README.md's table has a row for every example"


def _save_model_module() -> Any:
    spec = importlib.util.spec_from_file_location("save_model", EXAMPLES / "save_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_save_model_writes_one_network_in_both_upload_forms(tmp_path: Path) -> None:
    """examples/save_model.py's two forms are accepted by the upload check and are the same network: the
    same probe points (the two tanh, named by their module index), input and parameter count, and the
    exported graph runs on another batch size than its example's (it was exported with a dynamic batch)."""
    import torch

    from glorot_core.uploads.inspect import inspect_model_file, load_model

    module = _save_model_module()
    paths = module.save(tmp_path / "my-model")
    assert {p.name for p in paths.values()} == set(module.FILES.values())
    exported = inspect_model_file(paths["exported"], {"format": "exported"})
    weights_meta = {"format": "safetensors", "architecture": json.loads(paths["architecture"].read_text()),
                    "input": {"shape": module.INPUT_SHAPE}}
    weights = inspect_model_file(paths["safetensors"], weights_meta)
    assert exported.to_dict() == weights.to_dict()
    assert [(p.name, p.activation) for p in exported.probe_points] == [("1", "tanh"), ("5", "tanh")]
    assert list(exported.input_shape) == module.INPUT_SHAPE == [1, 32, 32]  # a Shapeset-3x2 image
    loaded = load_model(paths["exported"], {"format": "exported"})
    assert loaded.batch is None
    x = torch.randn(3, *module.INPUT_SHAPE)
    same = load_model(paths["safetensors"], weights_meta).module
    assert torch.allclose(loaded.module(x), same(x))  # eval mode, same weights: the same logits
    assert loaded.module(x).shape == (3, 9)  # one logit per Shapeset class


def test_tiny_cnn_specs_name_what_save_model_writes() -> None:
    """The offline spec reads the .pt2 at the path save_model.py writes by default; the service spec names
    an uploaded model through a placeholder id, on a data set with labels so it can be fine-tuned."""
    module = _save_model_module()
    offline = validate_spec(json.loads((EXAMPLES / "tiny-cnn-file.json").read_text()))
    assert offline.model.source == "file" and offline.model.format == "exported"
    assert offline.model.path == f"my-model/{module.FILES['exported']}"
    uploaded = validate_spec(json.loads((EXAMPLES / "tiny-cnn-uploaded.json").read_text()))
    assert uploaded.model.source == "uploaded" and uploaded.model.model_id == "MODEL_ID"
    assert uploaded.data.dataset == "shapeset3x2" and uploaded.train.steps > 0
