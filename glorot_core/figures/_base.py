"""What every figure shares: reading numbers out of a report, a blank Agg figure, one colour per layer,
and saving to PNG or SVG bytes.

Figures are built with matplotlib's object-oriented API (``matplotlib.figure.Figure`` on an Agg
canvas), never ``pyplot``: no global figure registry, so a server can render in worker threads.
Drawing still touches matplotlib's process-wide caches (fonts, text layout), so callers hold
:data:`RENDER_LOCK` while they build and save (``glorot_core.figures.render``).
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

Format = Literal["png", "svg"]
FORMATS: tuple[Format, ...] = ("png", "svg")
MEDIA_TYPES: dict[str, str] = {"png": "image/png", "svg": "image/svg+xml"}
RENDER_LOCK = threading.Lock()
DPI = 110

Report = dict[str, Any]


@dataclass(frozen=True)
class FigureDef:
    """One figure a report can be drawn as: its name (the URL's), the paper's figure it mirrors, a
    title, when it applies to a report, and the function that draws it."""

    name: str
    paper: str
    title: str
    applies: Callable[[Report], bool]
    build: Callable[[Report], Figure]

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "paper": self.paper, "title": self.title}


def number(v: Any) -> float:
    """A report number as a float: ``None`` (not measured) and the strings of non-finite values
    (``"NaN"``, ``"Infinity"``) become NaN / ±inf, which matplotlib leaves out of a line."""
    if v is None:
        return math.nan
    return float(v)


def layer_label(report: Report, index: int) -> str:
    """``layer 3`` (the report's 1-based hidden layer index)."""
    return f"layer {index}"


def subtitle(report: Report) -> str:
    """The run a figure is of: activation, init, widths, data set, learning rate, steps."""
    spec = report.get("spec", {})
    m, t, d = spec.get("model", {}), spec.get("train", {}), spec.get("data", {})
    widths = "-".join(str(w) for w in [m.get("input_dim"), *m.get("hidden", []), m.get("num_classes")])
    return (f"{m.get('activation')}, {m.get('init')} init, {widths}, {d.get('dataset')}, lr {t.get('lr')}, "
            f"{report.get('end', {}).get('steps_done', t.get('steps'))} updates")


def new_figure(report: Report, title: str, rows: int = 1, height: float = 4.2, *,
               subtitle_text: str | None = None) -> tuple[Figure, list[Axes]]:
    """A figure with ``rows`` stacked axes, titled with ``title`` and the run it is of (or
    ``subtitle_text`` when given: a figure of several runs)."""
    fig = Figure(figsize=(7.5, height * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, 1, i + 1) for i in range(rows)]
    fig.suptitle(f"{title}\n{subtitle(report) if subtitle_text is None else subtitle_text}", fontsize=10)
    return fig, axes


def layer_colors(n: int) -> list[tuple[float, float, float, float]]:
    """One colour per layer, dark (layer 1) to light (top), so the order reads at a glance."""
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.85 * i / max(n - 1, 1)) for i in range(n)]


def save(fig: Figure, fmt: str) -> bytes:
    """The figure as PNG or SVG bytes (SVG without a date, so the same report gives the same bytes)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of: {', '.join(FORMATS)}")
    buf = io.BytesIO()
    metadata = {"Date": None} if fmt == "svg" else {"Software": None}
    with rc_context({"svg.hashsalt": "glorot"}):  # fixed SVG ids: the same report gives the same bytes
        fig.savefig(buf, format=fmt, metadata=metadata)
    return buf.getvalue()
