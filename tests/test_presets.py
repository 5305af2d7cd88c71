"""Presets (glorot_core.presets): every one validates at both budgets, covers the figures and Table 1
cells it should, states its reductions, merges overrides, and the Fig 2 preset shows the paper's
fact within its quick budget."""

from __future__ import annotations

import re

import pytest

from glorot_core.presets import BUDGETS, PRESETS, PresetError, spec_for
from glorot_core.runner import run_experiment
from glorot_core.spec import validate_spec


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_validates_at_both_budgets(name: str) -> None:
    preset = PRESETS[name]
    for budget in BUDGETS:
        spec = validate_spec(spec_for(name, budget))
        b = preset.budgets[budget]
        assert spec.train.steps == b.steps and spec.diagnostics.every == b.every
        assert name in spec.name and budget in spec.name
        # The paper's setup (§2.3): 1000 units per hidden layer, mini-batches of 10, 300 monitor examples.
        assert set(spec.model.hidden) == {1000} and spec.train.batch_size == 10
        assert spec.diagnostics.monitor_examples == 300
        d = preset.describe()["budgets"][budget]
        assert d["cost"]["updates"] == b.steps and d["cost"]["examples"] == 10 * b.steps


def test_quick_budgets_are_reduced_and_say_so() -> None:
    for name, preset in PRESETS.items():
        quick, paper = preset.budgets["quick"], preset.budgets["paper"]
        assert quick.steps <= paper.steps, name
        # ≤ 10 min on 2 CPU cores: the 5×1000 network trains at ≳100 updates/s there, so ≤ 30,000 updates.
        assert quick.steps <= 30_000, name
        if quick.steps < paper.steps:
            assert "REDUCED" in quick.note and "REDUCED" in spec_for(name, "quick")["name"], name
        assert preset.quick_shows and preset.claim


def test_presets_cover_every_figure_and_table1_cell() -> None:
    reproduced = " | ".join(r for p in PRESETS.values() for r in p.reproduces)
    for fig in (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12):
        assert re.search(rf"Fig {fig}\b", reproduced), fig
    cells = {r for p in PRESETS.values() for r in p.reproduces if r.startswith("Table 1")}
    rows = ("Softsign", "Softsign N", "Tanh", "Tanh N", "Sigmoid")
    assert cells == {f"Table 1: {row} × {ds}" for row in rows for ds in ("Shapeset", "MNIST", "CIFAR-10")}
    assert all(p.paper_value is not None for p in PRESETS.values() if p.name.startswith("table1_"))
    assert PRESETS["fig3_tanh"].spec["model"]["activation"] == "tanh"
    assert PRESETS["fig3_softsign"].spec["model"]["activation"] == "softsign"
    assert {PRESETS[f"fig6_8_{i}"].spec["model"]["init"] for i in ("standard", "normalized")} == {"standard",
                                                                                                  "normalized"}


def test_overrides_merge_key_by_key() -> None:
    spec = spec_for("fig9_standard", "quick", {"train": {"steps": 7}, "model": {"hidden": [20, 20]}})
    assert spec["train"]["steps"] == 7 and spec["train"]["lr"] == 0.01  # siblings kept
    assert spec["model"]["hidden"] == [20, 20] and spec["model"]["activation"] == "tanh"
    assert PRESETS["fig9_standard"].spec["model"]["hidden"] == [1000] * 5  # the preset is not mutated


def test_unknown_preset_budget_and_bad_overrides_are_errors() -> None:
    with pytest.raises(PresetError) as e:
        spec_for("fig99")
    assert e.value.field == "preset"
    with pytest.raises(PresetError) as e:
        spec_for("fig2_sigmoid", "huge")
    assert e.value.field == "budget"
    with pytest.raises(PresetError) as e:
        spec_for("fig2_sigmoid", "quick", [1, 2])
    assert e.value.field == "overrides"


def test_fig2_quick_preset_shows_the_papers_fact() -> None:
    """Fig 2 within the quick budget (the fact shows by 1,000 updates: the top sigmoid layer's mean falls
    from 0.5 to < 0.1 while layer 3 rises above 0.6; the paper: ≈0.04 and ≈0.8)."""
    spec = validate_spec(spec_for("fig2_sigmoid", "quick", {"train": {"steps": 1000}, "diagnostics": {"every": 1000},
                                                            "data": {"test_examples": 500}, "device": "cpu"}))
    report = run_experiment(spec)
    means = [lay["activation"]["mean"] for lay in report["snapshots"][-1]["layers"]]
    assert means[3] < 0.1 and means[2] > 0.6, means


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_measure_gradients_on_the_papers_basis(name: str) -> None:
    """Figs 7-9 are drawn from each example's own gradients; every preset asks for that basis."""
    spec = validate_spec(spec_for(name, "quick"))
    assert spec.diagnostics.gradient_basis == "per_example"
