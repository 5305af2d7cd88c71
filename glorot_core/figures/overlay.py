"""Overlay figures of several runs at one snapshot (``GET /v1/compare/figures/{name}``): the paper's
two-panel comparisons (standard vs normalized init in Figs 6 and 7) drawn in one panel.

Histogram overlays draw, per layer, each run's normalized histogram at the chosen snapshot: one colour
per layer (as the single-run figures), one line style per run (solid for the first, dashed, dotted, …),
so the layers of two initialisations read side by side on the same bins. A run whose layer has no
histogram of the section (a Jacobian turned off, a layer it does not have) draws nothing there.
``layer_profile`` draws the statistics that summarise Figs 6 and 7 per layer: activation std and
back-propagated gradient std against the layer index, one line per run.

Every function takes the runs of a comparison (:class:`glorot_core.compare.Run`), whose snapshot is the
one drawn; the lines' ``gid`` is ``{section}-layer{i}-run{k}`` (``profile-{field}-run{k}``), and the tests
read the drawn numbers back from them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from glorot_core.compare import Run
from glorot_core.figures._base import DPI, RENDER_LOCK, layer_colors, number, save
from glorot_core.figures.histograms import SCALES, XLABELS, density, normalized, scale_x

LINE_STYLES = ("-", "--", ":", "-.", (0, (5, 1)), (0, (1, 3)), (0, (3, 1, 1, 1, 1, 1)), (0, (8, 3)))
"""One per run, in order (as many as a comparison may hold runs)."""


@dataclass(frozen=True)
class OverlayDef:
    """An overlay figure: its name (the URL's), the paper's figure it mirrors, a title, and its drawing."""

    name: str
    paper: str
    title: str
    build: Callable[[list[Run]], Figure]

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "paper": self.paper, "title": self.title}


def run_label(run: Run) -> str:
    """``<id prefix> <init> init, <activation>`` (the spec's name when it has no MLP fields)."""
    d = run.describe()
    what = f"{d['init']} init, {d['activation']}" if d["init"] else str(d["name"])
    return f"{run.label[:8]} {what}, update {d['step']}"


def _figure(runs: list[Run], title: str, rows: int = 1) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(7.5, 4.6 * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    styles = ", ".join(f"{_style_name(k)}: {run_label(r)}" for k, r in enumerate(runs))
    fig.suptitle(f"{title}\n{styles}", fontsize=9)
    return fig, [fig.add_subplot(rows, 1, i + 1) for i in range(rows)]


def _style_name(k: int) -> str:
    return ("solid", "dashed", "dotted", "dash-dot")[k] if k < 4 else f"style {k + 1}"


def histogram_overlay(section: str) -> Callable[[list[Run]], Figure]:
    """The drawing of ``section``'s per-layer histograms of every run in one panel."""

    def build(runs: list[Run]) -> Figure:
        fig, (ax,) = _figure(runs, f"{section} histograms per layer, runs overlaid")
        indices = sorted({lay["index"] for r in runs for lay in r.snapshot.get("layers", [])})
        colors = dict(zip(indices, layer_colors(len(indices)), strict=True))
        linear = SCALES.get(section, "linear") == "linear"
        largest = 0.0
        for k, run in enumerate(runs):
            for lay in run.snapshot.get("layers", []):
                hist = (lay.get(section) or {}).get("histogram")
                if not hist:
                    continue
                x, y = density(hist) if linear else normalized(hist, geometric=True)
                ax.plot(x, y, color=colors[lay["index"]], linestyle=LINE_STYLES[k], linewidth=1.1,
                        gid=f"{section}-layer{lay['index']}-run{k + 1}",
                        label=f"layer {lay['index']}" if k == 0 else None)
                largest = max([largest, *(abs(v) for v, f in zip(x, y, strict=True) if f > 0)])
        scale = scale_x(ax, section, largest)
        ax.set_xlabel(XLABELS.get(section, section))
        ax.set_ylabel("density (normalized histogram)" if scale == "linear" else "fraction of values per bin")
        for k, run in enumerate(runs):  # the line style of each run, in grey
            ax.plot([], [], color="0.3", linestyle=LINE_STYLES[k], label=run_label(run))
        ax.legend(fontsize=7, loc="best", ncol=2)
        return fig

    return build


def layer_profile(runs: list[Run]) -> Figure:
    """Activation std and back-propagated gradient std per layer, one line per run (log y axis)."""
    fig, axes = _figure(runs, "Per-layer std of activations (Fig 6) and back-propagated gradients (Fig 7)", rows=2)
    for ax, (section, what) in zip(axes, (("activation", "activation std"),
                                          ("backprop_grad", "back-propagated gradient ∂C/∂s std")), strict=True):
        for k, run in enumerate(runs):
            layers = run.snapshot.get("layers", [])
            xs = [lay["index"] for lay in layers]
            ys = [number((lay.get(section) or {}).get("std")) for lay in layers]
            ax.plot(xs, ys, color=f"C{k}", linestyle=LINE_STYLES[k], marker="o", markersize=3,
                    gid=f"profile-{section}-run{k + 1}", label=run_label(run))
        ax.set_yscale("log")
        ax.set_xlabel("hidden layer")
        ax.set_ylabel(what)
        ax.legend(fontsize=7, loc="best")
    return fig


OVERLAYS: dict[str, OverlayDef] = {d.name: d for d in (
    OverlayDef("activation_histograms", "Fig 6", "Activation histograms per layer, runs overlaid",
               histogram_overlay("activation")),
    OverlayDef("backprop_grad_histograms", "Fig 7", "Back-propagated gradient histograms per layer, runs overlaid",
               histogram_overlay("backprop_grad")),
    OverlayDef("weight_grad_histograms", "Fig 8", "Weight-gradient histograms per layer, runs overlaid",
               histogram_overlay("weight_grad")),
    OverlayDef("layer_profile", "Figs 6, 7", "Activation and back-propagated gradient std per layer, runs overlaid",
               layer_profile),
)}


def render(name: str, runs: list[Run], fmt: str = "png") -> bytes:
    """Overlay ``name`` of ``runs`` as PNG or SVG bytes (KeyError for an unknown name)."""
    d = OVERLAYS[name]
    with RENDER_LOCK:
        return save(d.build(runs), fmt)
