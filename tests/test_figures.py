"""Figures (glorot_core.figures) check content, not existence: every figure's axis labels, one series
per layer, and the numbers drawn (read back from the Artists before saving) equal the report's."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from glorot_core import figures
from glorot_core.cli import main
from glorot_core.runner import run_experiment
from glorot_core.spec import validate_spec

LAYERS = 3


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    """A small trained tanh run with every instrument: 3 snapshots, Jacobians on 4 examples."""
    spec = validate_spec({
        "name": "figures", "device": "cpu", "model": {"hidden": [40] * LAYERS},
        "train": {"steps": 40, "lr": 0.05}, "data": {"test_examples": 200},
        "diagnostics": {"every": 20, "monitor_examples": 60, "jacobian": {"examples": 4},
                        "cost_surface": {"enabled": True, "points": 5}},
    })
    return json.loads(json.dumps(run_experiment(spec)))  # as read back from a file or the API


def _ax(fig: Figure) -> Axes:
    return fig.axes[0]


def _by_gid(ax: Axes, prefix: str) -> list[Any]:
    return sorted((a for a in ax.get_children() if (a.get_gid() or "").startswith(prefix)), key=lambda a: a.get_gid())


def _series(report: dict[str, Any], section: str, field: str, layer: int) -> np.ndarray:
    return np.array([s["layers"][layer][section][field] for s in report["snapshots"]], dtype=float)


def test_a_trained_report_has_every_figure(report: dict[str, Any]) -> None:
    assert [d.name for d in figures.available(report)] == list(figures.FIGURES)


def test_fig2_mean_line_and_std_bars_per_layer(report: dict[str, Any]) -> None:
    ax = _ax(figures.build(report, "activation_mean_std"))
    assert "updates" in ax.get_xlabel() and "mean" in ax.get_ylabel() and "std" in ax.get_ylabel()
    containers = [c for c in ax.containers if c.get_label().startswith("layer")]
    assert [c.get_label() for c in containers] == [f"layer {i + 1}" for i in range(LAYERS)]
    for i, c in enumerate(containers):
        line, _, (bars,) = c.lines
        np.testing.assert_allclose(line.get_ydata(), _series(report, "activation", "mean", i))
        half = np.array([abs(seg[1, 1] - seg[0, 1]) / 2 for seg in bars.get_segments()])
        np.testing.assert_allclose(half, _series(report, "activation", "std", i), rtol=1e-9)


def test_fig3_percentile_markers_and_std_lines_per_layer(report: dict[str, Any]) -> None:
    ax = _ax(figures.build(report, "activation_p98_std"))
    assert "98th percentile" in ax.get_ylabel() and "updates" in ax.get_xlabel()
    p98, std = _by_gid(ax, "p98-layer"), _by_gid(ax, "std-layer")
    assert len(p98) == len(std) == LAYERS
    steps = [s["step"] for s in report["snapshots"]]
    for i in range(LAYERS):
        assert p98[i].get_linestyle() == "None"  # markers alone, as in the paper
        np.testing.assert_array_equal(p98[i].get_xdata(), steps)
        np.testing.assert_allclose(p98[i].get_ydata(), _series(report, "activation", "p98", i))
        np.testing.assert_allclose(std[i].get_ydata(), _series(report, "activation", "std", i))


def test_fig9_weight_gradient_intervals(report: dict[str, Any]) -> None:
    ax = _ax(figures.build(report, "weight_grad_std"))
    assert "∂C/∂W" in ax.get_ylabel()
    containers = [c for c in ax.containers if c.get_label().startswith("layer")]
    assert len(containers) == LAYERS
    for i, c in enumerate(containers):
        line, _, (bars,) = c.lines
        np.testing.assert_allclose(line.get_ydata(), _series(report, "weight_grad", "mean", i))
        half = np.array([abs(seg[1, 1] - seg[0, 1]) / 2 for seg in bars.get_segments()])
        np.testing.assert_allclose(half, _series(report, "weight_grad", "std", i), rtol=1e-6)


def test_test_error_against_examples_seen(report: dict[str, Any]) -> None:
    ax = _ax(figures.build(report, "test_error"))
    assert ax.get_xlabel() == "examples seen" and ax.get_ylabel() == "test error"
    (curve,) = _by_gid(ax, "test-error")
    np.testing.assert_array_equal(curve.get_xdata(), [s["examples_seen"] for s in report["snapshots"]])
    np.testing.assert_allclose(curve.get_ydata(), [s["test_error"] for s in report["snapshots"]])
    (prior,) = _by_gid(ax, "prior")
    assert prior.get_ydata()[0] == report["resolved"]["majority_class_error"]


@pytest.mark.parametrize(("name", "section", "snapshot"), [
    ("activation_histograms_init", "activation", 0), ("activation_histograms_final", "activation", -1),
    ("backprop_grad_histograms_init", "backprop_grad", 0), ("weight_grad_histograms_init", "weight_grad", 0),
    ("jacobian_histograms_init", "jacobian", 0),
])
def test_histograms_one_normalized_line_per_layer(report: dict[str, Any], name: str, section: str,
                                                  snapshot: int) -> None:
    """Each line is the layer's histogram / the number of values measured; activations as a density
    (/ bin width, the paper's axis), whose area is then the fraction inside the range."""
    ax = _ax(figures.build(report, name))
    lines = _by_gid(ax, f"{section}-layer")
    layers = report["snapshots"][snapshot]["layers"]
    measured = [lay for lay in layers if (lay[section] or {}).get("histogram")]
    # The Jacobian J^i exists between hidden layers only: none for the last one.
    assert len(lines) == (LAYERS - 1 if section == "jacobian" else LAYERS) == len(measured)
    assert ax.get_xlabel() and ("density" in ax.get_ylabel() or "fraction" in ax.get_ylabel())
    for line, lay in zip(lines, measured, strict=True):
        h = lay[section]["histogram"]
        total = sum(h["counts"]) + h["underflow"] + h["overflow"] + h["nonfinite"]
        edges = np.array(h["edges"])
        y = np.asarray(line.get_ydata())
        if section == "activation":
            assert ax.get_xscale() == "linear"
            np.testing.assert_allclose(line.get_xdata(), (edges[:-1] + edges[1:]) / 2)
            np.testing.assert_allclose(y * np.diff(edges) * total, h["counts"], atol=1e-9)
            assert abs(float(np.sum(y * np.diff(edges))) - sum(h["counts"]) / total) < 1e-9
        else:
            assert ax.get_xscale() in ("symlog", "log")
            np.testing.assert_allclose(y * total, h["counts"], atol=1e-9)
            x = np.asarray(line.get_xdata())
            assert all(a <= c <= b or b <= c <= a for a, b, c in zip(edges[:-1], edges[1:], x, strict=True))


def test_end_to_end_jacobian(report: dict[str, Any]) -> None:
    ax = _ax(figures.build(report, "jacobian_end_to_end"))
    (line,) = _by_gid(ax, "end-to-end")
    h = report["snapshots"][0]["end_to_end"]["histogram"]
    total = sum(h["counts"]) + h["underflow"] + h["overflow"] + h["nonfinite"]
    np.testing.assert_allclose(np.asarray(line.get_ydata()) * total, h["counts"], atol=1e-9)
    assert ax.get_xscale() == "log"


def test_a_report_at_init_has_no_curves(report: dict[str, Any]) -> None:
    at_init = {**report, "snapshots": report["snapshots"][:1]}
    names = {d.name for d in figures.available(at_init)}
    assert "activation_histograms_init" in names
    assert not names & {"activation_mean_std", "activation_p98_std", "weight_grad_std", "test_error",
                        "activation_histograms_final"}
    with pytest.raises(ValueError):
        figures.build(at_init, "activation_mean_std")


def test_render_png_and_svg(report: dict[str, Any]) -> None:
    png = figures.render(report, "activation_p98_std", "png")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    svg = figures.render(report, "activation_p98_std", "svg").decode()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for i, kind in itertools.product(range(1, LAYERS + 1), ("p98", "std")):  # each series is in the file
        assert f'id="{kind}-layer{i}"' in svg
    assert figures.render(report, "activation_p98_std", "svg").decode() == svg  # deterministic: cacheable
    with pytest.raises(ValueError):
        figures.render(report, "activation_p98_std", "gif")


def test_cli_writes_every_figure(report: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    assert main(["figures", str(path), "-o", str(tmp_path / "out"), "--format", "png"]) == 0
    written = sorted(p.stem for p in (tmp_path / "out").iterdir())
    assert written == sorted(figures.FIGURES)
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in (tmp_path / "out").iterdir())
    (tmp_path / "bad.json").write_text("{}")
    assert main(["figures", str(tmp_path / "bad.json"), "-o", str(tmp_path / "x")]) == 1


@pytest.mark.parametrize(("basis", "words"), [("mean_cost", "mean cost"), ("per_example", "per example")])
def test_weight_gradient_axis_names_the_reports_basis(report: dict[str, Any], basis: str, words: str) -> None:
    """The x label says which ∂C/∂W the histogram holds (the report's diagnostics.gradient_basis)."""
    relabelled = {**report, "spec": {**report["spec"],
                                     "diagnostics": {**report["spec"]["diagnostics"], "gradient_basis": basis}}}
    assert words in _ax(figures.build(relabelled, "weight_grad_histograms_init")).get_xlabel()
