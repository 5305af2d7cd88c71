"""The example specs in examples/ are valid, and the ones the README names are what it says they are.

A newcomer runs these files by path (`glorot validate examples/…`, `glorot submit examples/…`), so a
spec that stopped validating after a schema change would break the README's first commands.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

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
    listed = set(re.findall(r"`([\w.-]+\.json)`", (EXAMPLES / "README.md").read_text()))
    assert listed == {p.name for p in SPECS}, "examples/README.md lists every example"
