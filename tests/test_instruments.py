"""Instrument primitives: fixed-bin histograms count every value, moments skip non-finite values,
percentiles are nearest-rank, the snapshot reaches the host in one tree."""

from __future__ import annotations

import math

import pytest
import torch

from glorot_core.instruments.activation_stats import activation_stats, percentiles
from glorot_core.instruments.histogram import LinearBins, OctaveBins, fixed_histogram
from glorot_core.instruments.host import to_host
from glorot_core.instruments.summary import tensor_summary
from glorot_core.json_numbers import json_safe

NONFINITE = torch.tensor([float("nan"), float("inf"), float("-inf")])


def _values(kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if kind == "linear":
        body = torch.tanh(torch.randn(50_000, generator=g) * 2)
        return torch.cat([body, torch.tensor([1.0, -1.0, 0.0, 2.0, -3.0]), NONFINITE])
    mags = 10 ** (torch.rand(50_000, generator=g) * 15 - 12)
    body = mags * torch.sign(torch.randn(50_000, generator=g))
    return torch.cat([body, torch.tensor([0.0, 100.0, -100.0, 1e-13]), NONFINITE])


@pytest.mark.parametrize(("bins", "kind"), [(LinearBins(-1, 1, 50), "linear"), (OctaveBins(), "octave")])
def test_arithmetic_bins_agree_with_bucketize(bins, kind: str) -> None:
    v = _values(kind)
    fast = tensor_summary(v, bins)["histogram"]
    exact = fixed_histogram(v, bins.edges())
    total = int(fast["counts"].sum() + fast["underflow"] + fast["overflow"] + fast["nonfinite"])
    assert total == v.numel()
    assert int(fast["nonfinite"]) == 3 == int(exact["nonfinite"])
    # Only values exactly on an edge may be binned differently (float rounding, mirror convention).
    on_edges = int(torch.isin(v, bins.edges()).sum()) + 2
    assert int((fast["counts"] - exact["counts"]).abs().sum()) <= 2 * on_edges
    assert abs(int(fast["overflow"]) - int(exact["overflow"])) <= on_edges


def test_moments_ignore_but_count_nonfinite_values() -> None:
    x = torch.randn(10_001, generator=torch.Generator().manual_seed(1)) * 0.01 + 0.5
    s = tensor_summary(torch.cat([x, NONFINITE]), LinearBins(0, 1, 10))
    assert float(s["mean"]) == pytest.approx(float(x.double().mean()), rel=1e-9)
    assert float(s["std"]) == pytest.approx(float(x.double().std()), rel=1e-5)
    assert int(s["nonfinite"]) == 3


def test_scale_is_applied_to_moments_and_bins() -> None:
    x = torch.randn(1000, generator=torch.Generator().manual_seed(2)) * 1e-3
    a = tensor_summary(x, OctaveBins(), scale=1 / 300)
    b = tensor_summary(x / 300, OctaveBins())
    assert float(a["std"]) == pytest.approx(float(b["std"]), rel=1e-6)
    assert torch.equal(a["histogram"]["counts"], b["histogram"]["counts"])


def test_percentiles_are_nearest_rank() -> None:
    v = torch.arange(1, 101, dtype=torch.float32)[torch.randperm(100)]
    assert [float(p) for p in percentiles(v)] == [2.0, 98.0]


def test_to_host_rebuilds_the_tree_and_json_safe_keeps_nonfinite() -> None:
    tree = {"a": torch.tensor(1.5), "b": [torch.tensor([1, 2]), {"c": torch.tensor([[1.0, float("nan")]])}],
            "d": "text", "e": None}
    host = to_host(tree)
    assert host["a"] == 1.5 and host["b"][0] == [1, 2] and host["d"] == "text" and host["e"] is None
    assert isinstance(host["b"][0][0], int) and math.isnan(host["b"][1]["c"][0][1])
    assert json_safe(host)["b"][1]["c"] == [[1.0, "NaN"]]


def test_one_pass_gradient_moments_agree_with_float64() -> None:
    # Gradients are centred; even a mean of 10 std keeps the one-pass variance within ε·(1 + 100).
    g = torch.randn(1_000_000, generator=torch.Generator().manual_seed(3)) * 1e-4 + 1e-3
    s = tensor_summary(torch.cat([g, NONFINITE]), OctaveBins(), centred=True)
    assert float(s["mean"]) == pytest.approx(float(g.double().mean()), rel=1e-6)
    assert float(s["std"]) == pytest.approx(float(g.double().std()), rel=1e-4)
    assert int(s["nonfinite"]) == 3


@pytest.mark.parametrize("case", ["spread", "one_bin", "ties", "saturated"])
def test_binned_percentiles_equal_the_sorted_nearest_rank(case: str) -> None:
    """The CPU path reads p2 and p98 through the histogram's bins; it must give exactly the values of
    rank ⌈p·n⌉ of the sorted data, whether the two ranks fall in different bins, the same bin, on
    ties or on the closed last edge (+1.0)."""
    g = torch.Generator().manual_seed(7)
    n = 30_011
    v = {"spread": torch.tanh(torch.randn(n, generator=g)),
         "one_bin": 0.3 + 1e-4 * torch.rand(n, generator=g),
         "ties": torch.randint(-3, 4, (n,), generator=g).float() / 4,
         "saturated": torch.where(torch.rand(n, generator=g) < 0.5, torch.ones(n),
                                  torch.tanh(torch.randn(n, generator=g)))}[case]
    bins = LinearBins(-1.0, 1.0, 200)
    out = activation_stats(v.view(1, -1), bins)
    ordered = torch.sort(v).values
    for p, key in ((0.02, "p2"), (0.98, "p98")):
        assert float(out[key]) == float(ordered[math.ceil(p * n) - 1])


@pytest.mark.parametrize("name", ["tanh", "softsign", "sigmoid", "relu"])
def test_saturation_counts_follow_the_activations_rule(name: str) -> None:
    """The saturated counts (low, high, units saturated on every example) equal those of the rule's
    masks, whichever path computes them (tanh and softsign: one |z| ≥ bound pass), with values exactly on
    the thresholds and asymptotes, a NaN (never saturated) and a unit saturated on every example."""
    from glorot_core.activations import get_activation
    from glorot_core.instruments.saturation import saturation_stats

    act = get_activation(name)
    lo, hi = act.output_range
    gen = torch.Generator().manual_seed(3)
    z = act(torch.randn(200, 40, generator=gen) * 3)
    t = act.saturation_threshold or 0.0
    z[0, :4] = torch.tensor([lo + t, hi - t, lo, hi]).clamp(-1e9, 1e9)
    z[1, 5] = float("nan")
    z[:, 6] = hi if math.isfinite(hi) else 0.0  # saturated on every example (relu: dead at 0)
    if name == "relu":
        z[:, 6] = 0.0
    low, high = act.saturation_masks(z)
    out = saturation_stats(z, act)
    n = z.numel()
    assert round(float(out["low"]) * n) == int(low.sum())
    assert round(float(out["high"]) * n) == int(high.sum())
    assert round(float(out["dead_units"]) * 40) == int((low | high).all(dim=0).sum()) >= 1
