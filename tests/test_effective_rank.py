"""Effective rank (Roy & Vetterli 2007) and participation ratio on matrices whose answer is known."""

from __future__ import annotations

import math

import pytest
import torch

from glorot_core.instruments.effective_rank import effective_rank
from glorot_core.runner import run_experiment
from glorot_core.spec import validate_spec


def _hadamard(n: int) -> torch.Tensor:
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def _values(z: torch.Tensor) -> dict[str, float]:
    return {k: float(v) for k, v in effective_rank(z).items()}


def test_equal_orthogonal_directions_count_exactly() -> None:
    # Columns 1..16 of a 64×64 Hadamard matrix: orthogonal to the all-ones column (so already centred),
    # orthogonal to each other, equal norms: 16 equal singular values, p_j = 1/16, erank = exp(ln 16).
    z = _hadamard(64)[:, 1:17].float() * 0.3
    r = _values(z)
    assert r["entropy"] == pytest.approx(16.0, rel=1e-6)
    assert r["participation_ratio"] == pytest.approx(16.0, rel=1e-6)
    assert r["fraction"] == pytest.approx(1.0, rel=1e-6)  # 16 of min(64 − 1, 16) dimensions


def test_unequal_singular_values_follow_the_definition() -> None:
    # Scaled orthogonal columns have singular values proportional to the scales.
    scales = torch.tensor([1.0, 1.0, 2.0, 4.0], dtype=torch.float64)
    z = (_hadamard(32)[:, 1:5] * scales).float()
    p = scales / scales.sum()
    expected = math.exp(-float((p * p.log()).sum()))
    assert _values(z)["entropy"] == pytest.approx(expected, rel=1e-5)
    sq = scales**2
    assert _values(z)["participation_ratio"] == pytest.approx(float(sq.sum() ** 2 / (sq**2).sum()), rel=1e-5)


def test_rank_one_and_constant_offsets() -> None:
    g = torch.Generator().manual_seed(0)
    u = torch.randn(200, 1, generator=g)
    v = torch.randn(1, 50, generator=g)
    r = _values(u @ v + 3.0)  # one direction plus a constant (centred away)
    assert r["entropy"] == pytest.approx(1.0, abs=1e-4) and r["participation_ratio"] == pytest.approx(1.0, abs=1e-4)
    assert _values(torch.full((10, 4), 0.7))["entropy"] == 0.0  # nothing varies


def test_a_bottleneck_bounds_the_rank_of_every_layer_above_it() -> None:
    # With a linear activation, Z_2 = Z_1 W_2 + b_2 and so on: rank(Z_i − mean) ≤ rank(Z_1 − mean) ≤ 3.
    spec = validate_spec({"model": {"hidden": [3, 16, 16], "activation": "linear", "init": "normalized"},
                          "data": {"test_examples": 50}, "train": {"steps": 0},
                          "diagnostics": {"monitor_examples": 100, "jacobian": {"mode": "off"}}, "device": "cpu"})
    layers = run_experiment(spec)["snapshots"][0]["layers"]
    ranks = [lay["effective_rank"]["entropy"] for lay in layers]
    assert 1.0 < ranks[0] <= 3.0 + 1e-6
    assert all(1.0 < r <= 3.0 + 1e-6 for r in ranks[1:])
