"""Per-layer normalized histograms at one snapshot, one line per hidden layer, as in Figs 4, 6, 7, 8,
and the Jacobian singular-value histograms (§4.2.2) per layer and end to end.

Each line is the report's fixed-edge histogram divided by the number of values measured (counts in
range, under- and overflow and non-finite ones), drawn at the bin centres, so layers and runs compare
bin by bin:

* activations (Figs 4, 6): equal-width bins over the activation's range, linear axis, drawn as a
  density (fraction / bin width) as the paper's y axis is;
* back-propagated gradients ∂C/∂s (Fig 7) and weight gradients ∂C/∂W (Fig 8): sign-symmetric octave
  bins, drawn on a symmetric-log axis (the paper's axis is linear; octave bins have no linear
  density without assuming a shape inside each bin, and gradients span many decades);
* Jacobian singular values: logarithmic bins, log axis; the end-to-end Jacobian (input → last hidden)
  in its own figure.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from glorot_core.figures._base import Report, layer_colors, layer_label, new_figure

#: The x-axis scale each section's bins call for.
SCALES = {"activation": "linear", "backprop_grad": "symlog", "weight_grad": "symlog", "jacobian": "log"}
XLABELS = {
    "activation": "activation value z = f(s)",
    "backprop_grad": "back-propagated gradient ∂C/∂s (per example)",
    "weight_grad": "weight gradient ∂C/∂W (mean cost over the monitor set)",
    "weight_grad/per_example": "weight gradient ∂C/∂W (per example, the paper's basis)",
    "jacobian": "singular value of J^i = ∂z_{i+1}/∂z_i",
}


def normalized(hist: dict[str, Any], geometric: bool = False) -> tuple[list[float], list[float]]:
    """Bin centres and the fraction of all measured values in each bin (sums to the in-range share).

    ``geometric``: the bins are octave or logarithmic, so a bin's centre is the geometric mean of its
    edges (arithmetic for the bins that touch 0)."""
    edges, counts = hist["edges"], hist["counts"]
    total = sum(counts) + hist.get("underflow", 0) + hist.get("overflow", 0) + hist.get("nonfinite", 0)
    centres = [_centre(float(a), float(b), geometric) for a, b in itertools.pairwise(edges)]
    return centres, [c / total if total else math.nan for c in counts]


def density(hist: dict[str, Any]) -> tuple[list[float], list[float]]:
    """Bin centres and the density (fraction per bin / bin width) of equal-width bins: the paper's
    normalized histograms of Figs 4 and 6 (area 1 when nothing falls outside the range)."""
    centres, fractions = normalized(hist)
    return centres, [f / (float(b) - float(a)) for f, (a, b) in zip(fractions, itertools.pairwise(hist["edges"]),
                                                                     strict=True)]


def _centre(a: float, b: float, geometric: bool) -> float:
    if not geometric or a * b <= 0:
        return (a + b) / 2
    return math.copysign(math.sqrt(a * b), a)


def snapshot_at(report: Report, section: str, which: str) -> dict[str, Any] | None:
    """The first (``init``) or last (``final``) snapshot where ``section`` has histograms (every layer's;
    the Jacobian has none for the last hidden layer, which has no J^i)."""
    snaps = [s for s in report.get("snapshots", [])
             if any((lay.get(section) or {}).get("histogram") for lay in s.get("layers", []))]
    if not snaps:
        return None
    return snaps[0] if which == "init" else snaps[-1]


def has_histograms(report: Report, section: str, which: str) -> bool:
    snap = snapshot_at(report, section, which)
    if snap is None:
        return False
    return which == "init" or int(snap["step"]) > 0  # "final" means after some training


def layer_histograms(report: Report, section: str, which: str, title: str) -> Figure:
    """One line per layer: ``section``'s normalized histogram at the ``init`` or ``final`` snapshot."""
    snap = snapshot_at(report, section, which)
    if snap is None:
        raise ValueError(f"the report has no {section} histograms")
    fig, (ax,) = new_figure(report, f"{title}, update {snap['step']}")
    layers = snap["layers"]
    largest = 0.0
    for i, (lay, c) in enumerate(zip(layers, layer_colors(len(layers)), strict=True)):
        if not (lay.get(section) or {}).get("histogram"):
            continue
        linear = SCALES.get(section, "linear") == "linear"
        x, y = density(lay[section]["histogram"]) if linear else normalized(lay[section]["histogram"], geometric=True)
        ax.plot(x, y, color=c, linewidth=1.2, label=layer_label(report, lay["index"]), gid=f"{section}-layer{i + 1}")
        largest = max([largest, *(abs(v) for v, f in zip(x, y, strict=True) if f > 0)])
    scale = scale_x(ax, section, largest)
    basis = report.get("spec", {}).get("diagnostics", {}).get("gradient_basis", "mean_cost")
    ax.set_xlabel(XLABELS.get(f"{section}/{basis}", XLABELS.get(section, section)))
    ax.set_ylabel("density (normalized histogram)" if scale == "linear" else "fraction of values per bin")
    ax.legend(fontsize=8, loc="best")
    return fig


def scale_x(ax: Axes, section: str, largest: float) -> str:
    """Set the x scale ``section``'s bins call for (:data:`SCALES`) and return its name; ``largest``: the
    largest |x| with values, for the symmetric-log axis (log over 12 octaves below it, linear under)."""
    scale = SCALES.get(section, "linear")
    if scale == "symlog" and largest > 0:
        linthresh = largest * 2.0**-12
        ax.set_xscale("symlog", linthresh=linthresh)
        ax.set_xlim(-2 * largest, 2 * largest)
        ax.set_xticks(_symlog_ticks(linthresh, 2 * largest))
    elif scale == "log":
        ax.set_xscale("log")
    return scale


def _symlog_ticks(linthresh: float, top: float) -> list[float]:
    """0 and ±10^k for the decades at least one decade above the linear range (nearer ones would print
    their labels over 0's), every other decade when there are more than three per side."""
    first, last = math.ceil(math.log10(linthresh)) + 1, math.floor(math.log10(top))
    decades = list(range(first, last + 1))
    if len(decades) > 3:
        decades = decades[::-1][::2][::-1]
    pos = [10.0**k for k in decades]
    return [-x for x in reversed(pos)] + [0.0] + pos


def end_to_end(report: Report) -> Figure:
    """The end-to-end Jacobian's singular-value histogram (input → last hidden) at its first snapshot."""
    snap = next((s for s in report.get("snapshots", []) if (s.get("end_to_end") or {}).get("histogram")), None)
    if snap is None:
        raise ValueError("the report has no end-to-end Jacobian")
    fig, (ax,) = new_figure(report, f"End-to-end Jacobian singular values, update {snap['step']}")
    block = snap["end_to_end"]
    x, y = normalized(block["histogram"], geometric=True)
    ax.plot(x, y, color="black", linewidth=1.2, gid="end-to-end",
            label=f"input → last hidden (mean σ {float(block['mean_sv']):.3g})")
    ax.set_xscale("log")
    ax.set_xlabel("singular value of the input → last-hidden Jacobian")
    ax.set_ylabel("fraction of values per bin (normalized histogram)")
    ax.legend(fontsize=8, loc="best")
    return fig


def has_end_to_end(report: Report) -> bool:
    return any((s.get("end_to_end") or {}).get("histogram") for s in report.get("snapshots", []))
