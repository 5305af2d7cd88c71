"""The weight gradient of the mean cost, G = gᵀz / N, summarised without forming it (instruments.mean_cost).

Its moments come from two N×N Gram matrices and must equal those of the formed G (float64 reference)
to float32 rounding; its histogram counts a fixed balanced sample of G's entries, whose bin fractions
must estimate the whole G's as an independent uniform sample of the same size would, even when rows
and columns of G differ in scale by orders of magnitude.
"""

from __future__ import annotations

import math

import pytest
import torch

from glorot_core.activations import get_activation
from glorot_core.instruments.gradients import WeightGradient
from glorot_core.instruments.histogram import OctaveBins
from glorot_core.instruments.mean_cost import SAMPLE, _balanced_bands, mean_cost_summary, sampled_entries
from glorot_core.instruments.monitor import Monitor
from glorot_core.instruments.probe import weight_gradient
from glorot_core.instruments.snapshot import capture_mlp
from glorot_core.instruments.summary import octave_counts, tensor_summary
from glorot_core.losses import cross_entropy
from glorot_core.models import build_mlp
from glorot_core.spec import JacobianSpec, ModelSpec

BINS = OctaveBins()


def _factors(n: int, j: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """∂C/∂s-like g whose column j is scaled by 10^(−3j/J) and z whose columns are scaled by 10^(−2k/K),
    a tenth of them constant 0 (background pixels): row and column scales ordered by index, so that a
    sample taking contiguous rows or columns would be biased."""
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(n, j, generator=gen) * 1e-3 * torch.logspace(0, -3, j).unsqueeze(0)
    z = torch.tanh(torch.randn(n, k, generator=gen) + 0.3) * torch.logspace(0, -2, k).unsqueeze(0)
    z[:, ::10] = 0.0
    return g, z


def _reference(g: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return (g.double().T @ z.double()).reshape(-1) / g.shape[0]


def test_gram_moments_equal_those_of_the_formed_gradient() -> None:
    """Mean and std over all J·K entries against float64 G: the Grams are float32 sums of J or K products
    (relative error ≲ 1e-7·√K each), so the std agrees to 1e-5 relative and the mean (a sum of terms of
    both signs) to 1e-5 of the std."""
    g, z = _factors(64, 600, 700)
    out = mean_cost_summary(g, z, BINS)
    ref = _reference(g, z)
    assert out["histogram_sample"] > 0  # the Gram path, not the formed G
    assert int(out["nonfinite"]) == 0
    assert float(out["std"]) == pytest.approx(float(ref.std()), rel=1e-5)
    assert float(out["mean"]) == pytest.approx(float(ref.mean()), abs=1e-5 * float(ref.std()))


def test_non_finite_columns_are_counted_and_left_out_of_the_moments() -> None:
    """A NaN in g's column 10 and an Inf in z's column 21 make row 10 and column 21 of G non-finite, and
    nothing else: J + K − 1 entries. The moments are over the others; the histogram counts the sample's
    own non-finite entries, the sampled ones of row 10 or column 21."""
    g, z = _factors(64, 600, 700, seed=1)
    g[3, 10] = float("nan")
    z[5, 21] = float("inf")
    out = mean_cost_summary(g, z, BINS)
    ref = _reference(g, z)
    finite = ref[torch.isfinite(ref)]
    assert int(out["nonfinite"]) == ref.numel() - finite.numel() == 600 + 700 - 1
    assert float(out["std"]) == pytest.approx(float(finite.std()), rel=1e-5)
    assert float(out["mean"]) == pytest.approx(float(finite.mean()), abs=1e-5 * float(finite.std()))
    rows, cols, bands = _balanced_bands(600, 700, SAMPLE, g.device)
    in_sample = ((rows == 10).reshape(bands, -1, 1) | (cols == 21).reshape(bands, 1, -1)).sum()
    h = out["histogram"]
    assert int(h["nonfinite"]) == int(in_sample) > 0
    assert int(h["counts"].sum() + h["underflow"] + h["overflow"] + h["nonfinite"]) == out["histogram_sample"]


def test_the_sample_is_balanced_and_fixed() -> None:
    """Every sampled row and column appears in exactly one band, all but J mod B and K mod B of them are
    sampled, the sample has ≤ SAMPLE entries, and the same entries are drawn for the same shape."""
    j, k = 1000, 1024
    rows, cols, bands = _balanced_bands(j, k, SAMPLE, torch.device("cpu"))
    assert bands == math.ceil(j * k / SAMPLE) == 16
    assert rows.unique().numel() == rows.numel() == bands * (j // bands) >= j - bands
    assert cols.unique().numel() == cols.numel() == bands * (k // bands) >= k - bands
    assert bands * (j // bands) * (k // bands) <= SAMPLE
    g, z = _factors(32, j, k)
    entries = sampled_entries(g, z)
    assert torch.equal(entries, sampled_entries(g, z))
    # entry (b, r, c) is G[rows[b, r], cols[b, c]]
    full = (g.T @ z / g.shape[0])
    rb, cb = rows.reshape(bands, -1), cols.reshape(bands, -1)
    expect = torch.stack([full[rb[b]][:, cb[b]] for b in range(bands)]).reshape(-1)
    torch.testing.assert_close(entries, expect, rtol=1e-5, atol=1e-12)


def test_the_sample_histogram_estimates_the_whole_as_a_uniform_sample_would() -> None:
    """Bin fractions of the balanced sample against those of every entry of G, whose row scales span
    three decades and column scales two (plus zero columns), ordered by index. An independent uniform
    sample of S entries gives each bin holding p of G a binomial fraction with standard error
    √(p(1−p)/S); over the ≤ 40 populated bins, |z| ≤ 4.5 fails by chance with probability < 3·10⁻⁴.
    A contiguous block (the first rows and columns) of the same size misses the small-scale half and
    fails the same check, which shows the check can fail."""
    n, j, k = 48, 1000, 1000
    g, z = _factors(n, j, k, seed=2)
    out = mean_cost_summary(g, z, BINS)
    full, _ = octave_counts((g.T @ z / n).reshape(-1), BINS)
    s = out["histogram_sample"]
    sample_counts = torch.cat([out["histogram"]["underflow"].reshape(1), out["histogram"]["counts"],
                               out["histogram"]["overflow"].reshape(1)])

    def worst_z(counts: torch.Tensor, size: int) -> float:
        p = full.double() / full.sum()
        se = torch.sqrt(p * (1 - p) / size)
        keep = p * size >= 20
        return float(((counts.double() / size - p) / se)[keep].abs().max())

    assert worst_z(sample_counts, s) <= 4.5
    side = math.isqrt(s)
    block = (g[:, :side].T @ z[:, :side] / n).reshape(-1)
    assert worst_z(octave_counts(block, BINS)[0], block.numel()) > 4.5


def test_small_or_wide_gradients_are_formed_and_counted_whole() -> None:
    """Where J·K ≤ SAMPLE, or the Grams would cost more than G (N·(J+K) ≥ J·K), every entry is counted."""
    for n, j, k in ((50, 200, 300), (600, 300, 400)):
        g, z = _factors(n, j, k)
        out = mean_cost_summary(g, z, BINS)
        assert "histogram_sample" not in out
        whole = tensor_summary(weight_gradient(g, z), BINS, centred=True)
        assert torch.equal(out["histogram"]["counts"], whole["histogram"]["counts"])
        assert float(out["std"]) == float(whole["std"])


def test_the_instrument_on_an_mlp_capture_summarises_the_layers_gradient() -> None:
    """On the built-in MLP's capture (700-wide layers, 300 monitor examples), the weight_grad section is
    the Gram summary of that layer's ∂C/∂W of the mean cost (the capture's own weight_grad) for the
    large layers, and the whole-gradient summary for the input layer's 16·700 weights."""
    torch.manual_seed(0)
    model, _ = build_mlp(ModelSpec(hidden=[700, 700], input_dim=16))
    x, y = torch.rand(300, 16), torch.randint(0, 9, (300,))
    mon = Monitor(x, y, get_activation("tanh"), cross_entropy, JacobianSpec(mode="off"), 50)
    snap, _ = capture_mlp(model, mon)
    first, second = (WeightGradient().measure_point(c, mon) for c in snap.points)
    assert "histogram_sample" not in first and second["histogram_sample"] > 0
    ref = snap.points[1].weight_grad.double().reshape(-1)
    assert float(second["std"]) == pytest.approx(float(ref.std()), rel=1e-5)
    assert float(second["mean"]) == pytest.approx(float(ref.mean()), abs=1e-5 * float(ref.std()))
