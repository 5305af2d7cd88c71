"""Gradient bases: per-example weight gradients g_n z_nᵀ (paper eq. 3, Figs 8–9) beside those of the
mean cost, and eq. 7's prediction compared with a measurement on its own, per-example, basis.

The per-example moments are closed forms over all N·J·K products (exact up to float64 rounding); the
histogram counts a fixed uniform sample, so its bin fractions are binomial estimates of the
population's. The theory rows' predicted/measured weight-gradient variance ratio is checked at init
in the linear regime, with a tolerance derived in that test's docstring.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from glorot_core.instruments.histogram import OctaveBins
from glorot_core.instruments.mean_cost import SAMPLE as MEAN_COST_SAMPLE
from glorot_core.instruments.per_example import SAMPLE, outer_moments, per_example_summary, sampled_products
from glorot_core.instruments.summary import octave_counts
from glorot_core.runner import run_experiment
from glorot_core.spec import validate_spec

BINS = OctaveBins()


def _factors(n: int, j: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient-like g (centred, small) and activation-like z (bounded, not centred) rows."""
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(n, j, generator=gen) * 1e-3
    z = torch.tanh(torch.randn(n, k, generator=gen) * 0.7 + 0.2)
    return g, z


def _all_products(g: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return (g.unsqueeze(2) * z.unsqueeze(1)).reshape(-1)


def test_closed_form_moments_equal_those_of_every_product() -> None:
    """Mean, unbiased std and non-finite count over all g_nj·z_nk, against the explicit outer products
    in float64. The closed form sums each row of g and z in float32 (relative error ≲ 1e-7·√J per row,
    J ≤ 50 here) before multiplying in float64: agreement to 1e-5 relative, the mean (a sum of terms of
    both signs) to 1e-5 of the std."""
    g, z = _factors(40, 30, 50)
    g[3, 4] = float("nan")
    z[7, 2] = float("inf")
    z[7, 3] = float("-inf")
    full = _all_products(g.double(), z.double())
    finite = full[torch.isfinite(full)]
    mean, std, nonfinite = outer_moments(g, z)
    assert int(nonfinite) == full.numel() - finite.numel() == 50 + 2 * 30
    assert float(mean) == pytest.approx(float(finite.mean()), abs=1e-5 * float(finite.std()))
    assert float(std) == pytest.approx(float(finite.std()), rel=1e-5)
    g[3, 4], z[7, 2], z[7, 3] = 0.0, 0.0, 0.0  # without non-finite entries, the unmasked form is the same
    m2, s2, none = outer_moments(g, z, finite_only=False)
    m1, s1, zero = outer_moments(g, z)
    assert none is None and int(zero) == 0
    assert float(s2) == pytest.approx(float(s1), rel=1e-12)
    assert float(m2) == pytest.approx(float(m1), rel=1e-9, abs=1e-9 * float(s1))


def test_small_layers_count_every_product() -> None:
    """N·J·K ≤ SAMPLE: the histogram is that of all the products, exactly."""
    g, z = _factors(20, 30, 40)
    summary = per_example_summary(g, z, BINS)
    full, bad = octave_counts(_all_products(g, z), BINS)
    h = summary["histogram"]
    assert summary["histogram_sample"] == 20 * 30 * 40
    assert torch.equal(h["counts"], full[1:-1]) and int(h["underflow"]) == int(full[0])
    assert int(h["overflow"]) == int(full[-1]) and int(h["nonfinite"]) == int(bad) == 0


def test_sampled_histogram_estimates_the_population_histogram() -> None:
    """N·J·K = 4.2M > SAMPLE = 2^18: the sample is uniform with replacement, so each bin's count is
    Binomial(SAMPLE, p) with p the bin's fraction of all products. Every bin's fraction is within
    5σ = 5·√(p(1−p)/SAMPLE) (+1 count) of the population's (78 bins: a false alarm ≈ 78·6e-7). The
    sample is fixed: the same products at every snapshot."""
    g, z = _factors(64, 256, 256, seed=1)
    full, _ = octave_counts(_all_products(g, z), BINS)
    p = full.double() / full.sum()
    summary = per_example_summary(g, z, BINS)
    h = summary["histogram"]
    counts = torch.cat([h["underflow"].reshape(1), h["counts"], h["overflow"].reshape(1)]).double()
    assert summary["histogram_sample"] == SAMPLE == int(counts.sum()) + int(h["nonfinite"])
    tol = 5 * torch.sqrt(p * (1 - p) / SAMPLE) + 1.0 / SAMPLE
    assert torch.all((counts / SAMPLE - p).abs() <= tol), (counts / SAMPLE - p).abs().max()
    assert torch.equal(sampled_products(g, z), sampled_products(g, z))


def _gaussian_npz(tmp: Path, sigma: float, classes: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((2400, 1024)) * sigma).astype(np.float32)
    path = tmp / "gauss.npz"
    np.savez(path, x=x, y=rng.integers(0, classes, 2400))
    return str(path)


def _init_report(root: str, basis: str, seed: int = 0) -> dict:
    spec = validate_spec({"name": "basis", "model": {"init": "normalized", "activation": "tanh"},
                          "data": {"dataset": "npz", "root": root, "test_examples": 300},
                          "train": {"seed": seed},
                          "diagnostics": {"gradient_basis": basis, "jacobian": {"mode": "off"}}, "device": "cpu"})
    return run_experiment(spec)


@pytest.mark.parametrize("seed", [0, 1])
def test_weight_grad_variance_ratio_at_init_linear_regime(tmp_path: Path, seed: int) -> None:
    """Eq. 7 per example, predicted / measured, at init: tanh 1024-1000×5-9, normalized init, 300 monitor
    inputs x ~ N(0, 0.03²) with random labels (so every layer is in its linear regime).

    Both sides are per example: predicted Var[∂C/∂W_i] = E[z_{i−1}²]_pred · Var[∂C/∂s_i]_pred (eqs 5–6
    products of the measured gains), measured = the variance of all N·J·K products g_nj z_nk. Their
    ratio departs from 1 by:

    * tanh's curvature: each hidden layer k enters once, in the forward product (k < i) or in the
      backward one (k ≥ i), shrinking the measured side by ≈ (1 − 2·Var[s_k]) (Var[tanh s] and
      E[tanh′(s)²] for Gaussian s of small variance): a bias of at most 2·Σ_k Var[s_k], Var[s_k] read
      off the report's predicted activation variances (≈0.0009 each here, so ≈0.01 in all);
    * the realised weights: the prediction uses each layer's pooled Var[W], the measurement the gain of
      the actual matrix along the directions the signals occupy. For n = 1000 outputs, the gain along
      one fixed direction is a χ²_n/n variable, relative sd √(2/n); the back-propagated gradients all
      lie in the (C − 1) = 8-dimensional span of softmax − onehot (C = 9 classes), so each backward
      crossing averages ≈8 directions: sd √(2/(8n)) = 1.6 %. Forward, 300 Gaussian inputs occupy ≈300
      directions (sd 0.3 % per layer, negligible). Layer i's gradient crosses L + 1 − i layers backward
      (the output layer included): σ_i = √((L + 1 − i)·2/(8n)), 3.5 % for layer 1, 1.6 % for layer 5;
    * the covariance across examples of ‖g_n‖² and ‖z_n‖² (E[ab] ≠ E[a]E[b]) and the squared mean of
      the products: both below 0.1 % here (‖x_n‖² has CV √(2/1024) and labels are independent of x).

    Tolerance: |ratio − 1| ≤ 2·Σ_k Var[s_k] + 4·σ_i. On the previous basis (measured = the mean cost's
    gradient) the ratio was ≈N = 300: the check cannot pass by accident.
    """
    report = _init_report(_gaussian_npz(tmp_path, 0.03, 9), "per_example", seed=seed)
    rows = report["theory"]["at_init"]
    L, n, classes = len(rows), 1000, 9
    bias = 2 * sum(r["predicted_activation_var"] for r in rows)
    assert bias < 0.02  # the linear regime the derivation assumes
    for r in rows:
        i = r["index"]
        sigma = math.sqrt((L + 1 - i) * 2 / ((classes - 1) * n))
        ratio = r["weight_grad_var_predicted_over_measured"]
        assert ratio == pytest.approx(r["predicted_weight_grad_var"] / r["measured_weight_grad_var"], rel=1e-12)
        assert abs(ratio - 1) <= bias + 4 * sigma, (i, ratio, bias, sigma)


def test_theory_rows_do_not_depend_on_the_basis(tmp_path: Path) -> None:
    """The theory is per example whatever ``gradient_basis`` the weight_grad section uses; the sections
    differ by ≈√N (N = 300 weakly correlated examples), and the per-example section's std is the theory's
    measured weight-gradient standard deviation."""
    root = _gaussian_npz(tmp_path, 0.03, 9)
    mean_cost, per_example = _init_report(root, "mean_cost"), _init_report(root, "per_example")
    assert mean_cost["theory"]["at_init"] == per_example["theory"]["at_init"]
    assert "mean cost" in mean_cost["resolved"]["conventions"]["weight_grad"]
    assert "each monitor example" in per_example["resolved"]["conventions"]["weight_grad"]
    assert "per example" in per_example["resolved"]["conventions"]["theory"]
    for a, b, t in zip(mean_cost["snapshots"][0]["layers"], per_example["snapshots"][0]["layers"],
                       per_example["theory"]["at_init"], strict=True):
        assert b["weight_grad"]["std"] ** 2 == pytest.approx(t["measured_weight_grad_var"], rel=1e-6)
        # √N if the N per-example gradients were uncorrelated; examples of one class share a back-propagated
        # direction but their inputs are independent, so the cross terms nearly cancel: well within 2×
        assert 0.5 * math.sqrt(300) < b["weight_grad"]["std"] / a["weight_grad"]["std"] < 2 * math.sqrt(300)
        h, wg = b["weight_grad"]["histogram"], b["weight_grad"]
        assert sum(h["counts"]) + h["underflow"] + h["overflow"] + h["nonfinite"] == wg["histogram_sample"]
        # the mean-cost section counts its own balanced sample of G's entries (instruments.mean_cost)
        ha, wa = a["weight_grad"]["histogram"], a["weight_grad"]
        assert sum(ha["counts"]) + ha["underflow"] + ha["overflow"] + ha["nonfinite"] == wa["histogram_sample"]
        assert 0 < wa["histogram_sample"] <= MEAN_COST_SAMPLE
    out = per_example["snapshots"][0]["output"]["weight_grad"]
    assert out["histogram_sample"] == SAMPLE  # 300·9·1000 = 2.7M products into the output layer


def test_spec_gradient_basis_default_and_refusal() -> None:
    assert validate_spec({}).diagnostics.gradient_basis == "mean_cost"
    with pytest.raises(ValidationError):
        validate_spec({"diagnostics": {"gradient_basis": "per_batch"}})
