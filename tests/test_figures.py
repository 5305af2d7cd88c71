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
from matplotlib.colors import to_rgb
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


# --- Content beyond the series: every axis says what it holds, every legend names its layer, and the
# numbers drawn are the report's, read back from the Artists and from the SVG the service serves. ---

def _legend(ax: Axes) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def test_mean_std_bars_sit_at_each_snapshot_side_by_side(report: dict[str, Any]) -> None:
    """Figs 2 and 9: each layer's points are at the snapshots' steps, shifted by one constant per layer so
    the layers' bars stand side by side (symmetric about the step, in layer order, a few % of the range)."""
    steps = np.array([s["step"] for s in report["snapshots"]], dtype=float)
    for name in ("activation_mean_std", "weight_grad_std"):
        ax = _ax(figures.build(report, name))
        assert ax.get_xlabel().startswith("mini-batch updates")
        assert _legend(ax) == [f"layer {i + 1}" for i in range(LAYERS)]
        shifts = []
        for c in (c for c in ax.containers if c.get_label().startswith("layer")):
            line, _, (bars,) = c.lines
            shift = np.asarray(line.get_xdata(), dtype=float) - steps
            assert np.ptp(shift) < 1e-9  # one shift per layer
            bar_x = [seg[0, 0] for seg in bars.get_segments()]
            np.testing.assert_allclose(bar_x, line.get_xdata())  # the bars stand on the points
            shifts.append(float(shift[0]))
        assert shifts == sorted(shifts) and abs(sum(shifts)) < 1e-9, shifts
        assert max(abs(s) for s in shifts) < 0.05 * (steps[-1] - steps[0])
    ax = _ax(figures.build(report, "weight_grad_std"))
    assert "mean" in ax.get_ylabel() and "std" in ax.get_ylabel()


def test_percentile_legend_names_each_layer_and_quantity(report: dict[str, Any]) -> None:
    ax = _ax(figures.build(report, "activation_p98_std"))
    assert set(_legend(ax)) == {f"layer {i} {q}" for i in range(1, LAYERS + 1) for q in ("98th pct", "std")}
    # Markers and lines of a layer share its colour: the reader pairs them by colour, as in the paper.
    for i in range(1, LAYERS + 1):
        (p98,), (std,) = _by_gid(ax, f"p98-layer{i}"), _by_gid(ax, f"std-layer{i}")
        assert p98.get_color() == std.get_color()


_QUANTITY = {"activation": "activation value", "backprop_grad": "∂C/∂s", "weight_grad": "∂C/∂W",
             "jacobian": "singular value of J^i"}


@pytest.mark.parametrize(("name", "section", "snapshot"), [
    ("activation_histograms_init", "activation", 0), ("activation_histograms_final", "activation", -1),
    ("backprop_grad_histograms_init", "backprop_grad", 0), ("weight_grad_histograms_init", "weight_grad", 0),
    ("jacobian_histograms_init", "jacobian", 0),
])
def test_histogram_axes_title_and_legend(report: dict[str, Any], name: str, section: str, snapshot: int) -> None:
    """The x axis names the quantity, the title the update the snapshot is at (init vs final), the legend
    one entry per drawn layer, labelled with the report's layer index, in the line's colour."""
    fig = figures.build(report, name)
    ax = _ax(fig)
    snap = report["snapshots"][snapshot]
    assert _QUANTITY[section] in ax.get_xlabel()
    assert fig._suptitle is not None and f"update {snap['step']}" in fig._suptitle.get_text()
    measured = [lay["index"] for lay in snap["layers"] if (lay[section] or {}).get("histogram")]
    assert _legend(ax) == [f"layer {i}" for i in measured]
    lines = _by_gid(ax, f"{section}-layer")
    colours = [line.get_color() for line in lines]
    assert len(set(map(str, colours))) == len(colours)  # one colour per layer
    handles = ax.get_legend().legend_handles
    assert [h.get_color() for h in handles] == colours


def test_end_to_end_jacobian_axes_and_bins(report: dict[str, Any]) -> None:
    ax = _ax(figures.build(report, "jacobian_end_to_end"))
    block = report["snapshots"][0]["end_to_end"]
    assert "singular value" in ax.get_xlabel() and "fraction" in ax.get_ylabel()
    (line,) = _by_gid(ax, "end-to-end")
    edges = np.array(block["histogram"]["edges"], dtype=float)
    x = np.asarray(line.get_xdata(), dtype=float)
    np.testing.assert_allclose(x, np.sqrt(edges[:-1] * edges[1:]))  # geometric centres of the log bins
    assert _legend(ax) == [f"input → last hidden (mean σ {block['mean_sv']:.3g})"]


def test_cost_surface_axes_name_the_weights_and_mark_the_network(report: dict[str, Any]) -> None:
    """Fig 5: the axes say which weight each is (the section's layer, row, col), z is the mean cost; the
    network's own point is marked on each surface at the grid's value there; the legend gives each cost's
    plateau share (tests/test_cost_surface.py reads every wireframe line back)."""
    s = report["cost_surface"]
    ax = _ax(figures.build(report, "cost_surface"))
    w1, w2 = s["weights"]["w1"], s["weights"]["w2"]
    assert ax.get_xlabel() == f"W1: last hidden layer weight[{w1['row']}, {w1['col']}]"
    assert ax.get_ylabel() == f"W2: output layer weight[{w2['row']}, {w2['col']}]"
    assert "cost" in ax.get_zlabel()
    marks = ax.collections
    assert len(marks) == 2
    i1 = int(np.argmin(np.abs(np.array(s["w1"]) - s["at"]["w1"])))
    i2 = int(np.argmin(np.abs(np.array(s["w2"]) - s["at"]["w2"])))
    assert s["w1"][i1] == pytest.approx(s["at"]["w1"]) and s["w2"][i2] == pytest.approx(s["at"]["w2"])  # the centre
    for mark, name in zip(marks, s["costs"], strict=True):
        xs, ys, zs = (np.asarray(v, dtype=float) for v in mark._offsets3d)
        assert (xs[0], ys[0], zs[0]) == (s["w1"][i1], s["w2"][i2], s["costs"][name][i1][i2])
    legend = _legend(ax)
    for name, frac in s["plateau_fraction"].items():
        assert any(t.startswith("cross-entropy" if name == "cross_entropy" else "quadratic")
                   and f"plateaus: {100 * frac:.0f} %" in t for t in legend), (name, legend)


def _runs(report: dict[str, Any]) -> list[Any]:
    from glorot_core.compare import Run

    return [Run(label=f"job{k}", spec=report["spec"], layers=report["layers"], snapshot=report["snapshots"][i],
                snapshot_index=i % len(report["snapshots"])) for k, i in enumerate((0, -1))]


@pytest.mark.parametrize(("name", "section"), [("activation_histograms", "activation"),
                                               ("backprop_grad_histograms", "backprop_grad"),
                                               ("weight_grad_histograms", "weight_grad")])
def test_overlay_histograms_axes_and_legend(report: dict[str, Any], name: str, section: str) -> None:
    """Overlays (Figs 6-8, runs in one panel): the axes name the quantity, the legend has each layer once
    (its colour) and each run once (its line style, naming its init and update); every line is its run's
    histogram at its snapshot (the first and the last snapshot of one report, as two runs)."""
    from glorot_core.figures.overlay import LINE_STYLES, OVERLAYS

    runs = _runs(report)
    ax = _ax(OVERLAYS[name].build(runs))
    assert _QUANTITY[section] in ax.get_xlabel()
    assert ("density" if section == "activation" else "fraction") in ax.get_ylabel()
    legend = _legend(ax)
    assert legend[:LAYERS] == [f"layer {i}" for i in range(1, LAYERS + 1)]
    steps = [r.snapshot["step"] for r in runs]
    assert [t.split(", update ")[-1] for t in legend[LAYERS:]] == [str(s) for s in steps]
    assert all(report["spec"]["model"]["init"] in t for t in legend[LAYERS:])
    for k, run in enumerate(runs, start=1):
        for lay in run.snapshot["layers"]:
            (line,) = _by_gid(ax, f"{section}-layer{lay['index']}-run{k}")
            assert line.get_linestyle() == {"-": "-", "--": "--"}[LINE_STYLES[k - 1]]
            h = lay[section]["histogram"]
            total = sum(h["counts"]) + h["underflow"] + h["overflow"] + h["nonfinite"]
            width = np.diff(np.asarray(h["edges"], dtype=float)) if section == "activation" else 1.0
            np.testing.assert_allclose(np.asarray(line.get_ydata()) * width * total, h["counts"], atol=1e-9)


def test_layer_profile_axes(report: dict[str, Any]) -> None:
    from glorot_core.figures.overlay import OVERLAYS

    runs = _runs(report)
    fig = OVERLAYS["layer_profile"].build(runs)
    for ax, (section, words) in zip(fig.axes, (("activation", "activation std"), ("backprop_grad", "∂C/∂s std")),
                                    strict=True):
        assert ax.get_xlabel() == "hidden layer" and words in ax.get_ylabel() and ax.get_yscale() == "log"
        assert len(_legend(ax)) == len(runs)
        for k, run in enumerate(runs, start=1):
            (line,) = _by_gid(ax, f"profile-{section}-run{k}")
            np.testing.assert_array_equal(line.get_xdata(), list(range(1, LAYERS + 1)))
            np.testing.assert_allclose(line.get_ydata(), [lay[section]["std"] for lay in run.snapshot["layers"]])


def test_suite_error_bands_draw_each_configurations_mean_and_band() -> None:
    """A suite's Figs 11-12: one curve per configuration at its mean over seeds, and a band whose edge at
    every examples-seen value is exactly that configuration's lowest and highest seed."""
    from glorot_core.figures.curves import ErrorCurve, error_bands

    seen = [0.0, 100.0, 200.0]
    curves = [ErrorCurve("tanh standard", seen, [0.8, 0.6, 0.5], "config0", [0.78, 0.55, 0.45], [0.83, 0.64, 0.52]),
              ErrorCurve("tanh normalized", seen, [0.8, 0.5, 0.4], "config1", [0.79, 0.48, 0.36], [0.81, 0.53, 0.41])]
    ax = _ax(error_bands(curves, "suite"))
    assert ax.get_xlabel() == "examples seen" and ax.get_ylabel() == "test error"
    assert _legend(ax) == ["tanh standard", "tanh normalized"]
    assert not _by_gid(ax, "prior")  # error_bands is given no majority-class error to draw
    for c in curves:
        (line,) = [ln for ln in ax.get_lines() if ln.get_gid() == c.gid]
        np.testing.assert_array_equal(line.get_xdata(), seen)
        np.testing.assert_array_equal(line.get_ydata(), c.error)
        (band,) = [p for p in ax.collections if p.get_gid() == f"{c.gid}-band"]
        vertices = band.get_paths()[0].vertices
        for x, lo, hi in zip(seen, c.low or [], c.high or [], strict=True):
            ys = vertices[np.isclose(vertices[:, 0], x), 1]
            assert min(ys) == pytest.approx(lo) and max(ys) == pytest.approx(hi), (c.gid, x)
        assert tuple(band.get_facecolor()[0][:3]) == pytest.approx(to_rgb(line.get_color()))  # same colour


def _svg_points(fig: Figure, svg: str, gid: str) -> tuple[np.ndarray, float, float]:
    """The vertices of the SVG path of the Artist ``gid``, back in data coordinates, and the data length
    of one SVG point on each axis: the SVG's own axes frame (the first axes' background rectangle) and
    the axes' limits map points to data (linear axes only)."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(svg)
    groups = {e.get("id"): e for e in root.iter() if e.get("id")}

    def vertices(element: Any) -> np.ndarray:
        path = next(e for e in element.iter() if e.tag.endswith("path") and e.get("d"))
        numbers = [float(v) for v in path.get("d").replace("M", " ").replace("L", " ").replace("z", " ").split()]
        return np.array(numbers).reshape(-1, 2)

    frame = vertices(next(e for e in groups["axes_1"] if (e.get("id") or "").startswith("patch")))
    (left, bottom), (right, top) = frame.min(axis=0), frame.max(axis=0)  # SVG y grows downwards
    ax = fig.axes[0]
    assert ax.get_xscale() == ax.get_yscale() == "linear"
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    pts = vertices(groups[gid])
    xs = x0 + (pts[:, 0] - left) / (right - left) * (x1 - x0)
    ys = y0 + (top - pts[:, 1]) / (top - bottom) * (y1 - y0)
    return np.column_stack([xs, ys]), (x1 - x0) / (right - left), (y1 - y0) / (top - bottom)


@pytest.mark.parametrize(("name", "gid_of", "values_of"), [
    ("activation_p98_std", lambda i: f"std-layer{i + 1}",
     lambda r, i: ([s["step"] for s in r["snapshots"]], _series(r, "activation", "std", i))),
    ("activation_histograms_init", lambda i: f"activation-layer{i + 1}",
     lambda r, i: _density(r["snapshots"][0]["layers"][i]["activation"]["histogram"])),
])
def test_the_served_svg_draws_the_reports_numbers(report: dict[str, Any], name: str, gid_of: Any,
                                                  values_of: Any) -> None:
    """Read back from the bytes a client receives, not only from the Artists: each layer's SVG path, mapped
    through the axes' frame and limits, is the report's series. matplotlib simplifies paths (it drops a
    vertex that lies within 1/9 of a point of the line through its neighbours, e.g. a run of empty bins),
    so the two polylines are compared both ways: every drawn vertex lies on the report's polyline and every
    report value on the drawn one, within half an SVG point (above the simplification's 1/9 pt and the
    SVG's 6 decimals; a wrong value, bin or layer is off by many points)."""
    fig = figures.build(report, name)
    svg = figures.save(fig, "svg").decode()
    for i in range(LAYERS):
        drawn, _, dy = _svg_points(fig, svg, gid_of(i))
        xs, ys = (np.asarray(v, dtype=float) for v in values_of(report, i))
        assert drawn[0, 0] == pytest.approx(xs[0], abs=1e-3 * np.ptp(xs))  # the whole range is drawn
        assert drawn[-1, 0] == pytest.approx(xs[-1], abs=1e-3 * np.ptp(xs))
        np.testing.assert_allclose(np.interp(drawn[:, 0], xs, ys), drawn[:, 1], atol=0.5 * dy)
        np.testing.assert_allclose(np.interp(xs, drawn[:, 0], drawn[:, 1]), ys, atol=0.5 * dy)


def _density(h: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    edges = np.asarray(h["edges"], dtype=float)
    total = sum(h["counts"]) + h["underflow"] + h["overflow"] + h["nonfinite"]
    return (edges[:-1] + edges[1:]) / 2, np.asarray(h["counts"], dtype=float) / total / np.diff(edges)
