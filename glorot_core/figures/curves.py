"""Statistics over training, one series per hidden layer, as the paper draws them.

* Fig 2: mean activation per layer (line) with its standard deviation (vertical bars).
* Figs 3 and 10: 98th percentile of the activations per layer (markers alone) and their standard
  deviation (line with markers).
* Fig 9: the weight gradients' standard-deviation interval per layer (mean ± std, ∂C/∂W of the mean
  cost over the monitor set, eq. 7).
* Figs 11–12: test error against the number of training examples seen; for a suite, one curve per
  configuration (the mean over its seeds) with the band its seeds span.

The x axis is the number of mini-batch updates (the paper's "epoch" is 20,000 of them), except for
test error, which the paper plots against examples seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from glorot_core.figures._base import Report, layer_colors, layer_label, new_figure, number

UPDATES_LABEL = "mini-batch updates (the paper's epoch = 20,000)"


def _snapshots(report: Report, section: str) -> list[dict[str, Any]]:
    """Snapshots where ``section`` was measured in every layer."""
    return [s for s in report.get("snapshots", []) if s.get("layers") and all(lay.get(section) for lay in s["layers"])]


def layer_series(report: Report, section: str, field: str) -> tuple[list[int], list[list[float]]]:
    """Steps, and per layer the values of ``section.field`` at those steps."""
    snaps = _snapshots(report, section)
    steps = [int(s["step"]) for s in snaps]
    n = len(report.get("layers", []))
    return steps, [[number(s["layers"][i][section].get(field)) for s in snaps] for i in range(n)]


def over_training(report: Report, section: str) -> bool:
    """Whether ``section`` has at least two snapshots to draw a curve through."""
    return len(_snapshots(report, section)) >= 2


def _mean_std_bars(ax: Any, report: Report, section: str, spread: float, gid: str, **style: Any) -> None:
    """Per layer, ``section``'s mean over training with ± one std as error bars; the layers' bars are
    shifted side by side by ``spread`` of the step range, not drawn on top of each other."""
    steps, means = layer_series(report, section, "mean")
    _, stds = layer_series(report, section, "std")
    span = (steps[-1] - steps[0]) if steps else 1
    xs = np.asarray(steps, dtype=float)
    for i, (m, s, c) in enumerate(zip(means, stds, layer_colors(len(means)), strict=True)):
        shift = (i - (len(means) - 1) / 2) * spread * span
        ax.errorbar(xs + shift, np.asarray(m, dtype=float), yerr=np.asarray(s, dtype=float), color=c,
                    label=layer_label(report, i + 1), gid=f"{gid}-layer{i + 1}", **style)


def mean_std(report: Report) -> Figure:
    """Fig 2: per layer, the mean activation over training with ± one standard deviation as bars."""
    fig, (ax,) = new_figure(report, "Activation mean and standard deviation per layer (Fig 2)")
    _mean_std_bars(ax, report, "activation", 0.006, "mean", marker="o", markersize=3, capsize=2,
                   linewidth=1.2, elinewidth=0.8)
    ax.set_xlabel(UPDATES_LABEL)
    ax.set_ylabel("activation value: mean (line), ± std (bars)")
    ax.legend(fontsize=8, loc="best")
    return fig


def percentiles_std(report: Report) -> Figure:
    """Figs 3 and 10: per layer, the 98th percentile (markers alone) and the std (line) over training."""
    fig, (ax,) = new_figure(report, "Activation 98th percentiles (markers) and standard deviation (lines), "
                            "Figs 3 and 10")
    steps, p98 = layer_series(report, "activation", "p98")
    _, stds = layer_series(report, "activation", "std")
    for i, (p, s, c) in enumerate(zip(p98, stds, layer_colors(len(p98)), strict=True)):
        ax.plot(steps, p, linestyle="none", marker="^", markersize=5, color=c,
                label=f"{layer_label(report, i + 1)} 98th pct", gid=f"p98-layer{i + 1}")
        ax.plot(steps, s, linestyle="-", marker=".", color=c, label=f"{layer_label(report, i + 1)} std",
                gid=f"std-layer{i + 1}")
    ax.set_xlabel(UPDATES_LABEL)
    ax.set_ylabel("activation value: 98th percentile, std")
    # ten entries for five layers: beside the axes, where no "best" corner hides a layer's markers
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return fig


def weight_grad_std(report: Report) -> Figure:
    """Fig 9: per layer, the weight gradient's mean ± standard deviation over training."""
    fig, (ax,) = new_figure(report, "Weight-gradient standard-deviation intervals per layer (Fig 9)")
    _mean_std_bars(ax, report, "weight_grad", 0.008, "wgrad", linestyle="none", marker="_", capsize=3,
                   elinewidth=1.5)
    ax.set_xlabel(UPDATES_LABEL)
    ax.set_ylabel("∂C/∂W: mean ± std")
    ax.legend(fontsize=8, loc="best")
    return fig


def error_series(report: Report) -> tuple[list[int], list[float]]:
    """Examples seen and test error at every snapshot that measured it."""
    snaps = [s for s in report.get("snapshots", []) if s.get("test_error") is not None]
    return [int(s["examples_seen"]) for s in snaps], [number(s["test_error"]) for s in snaps]


def has_test_error(report: Report) -> bool:
    return len(error_series(report)[0]) >= 2


@dataclass(frozen=True)
class ErrorCurve:
    """One curve of Figs 11–12: test error against examples seen, and optionally a band around it
    (``low``/``high``: a suite's spread over seeds). ``gid`` names its Artists (``gid``, ``gid-band``)."""

    label: str
    examples_seen: Sequence[float]
    error: Sequence[float]
    gid: str
    low: Sequence[float] | None = None
    high: Sequence[float] | None = None


def draw_error_curves(ax: Any, curves: Sequence[ErrorCurve], prior: float | None = None) -> None:
    """Figs 11–12 on ``ax``: each curve (a line; its band shaded in the same colour when it has one),
    the majority-class error dotted when known."""
    for c in curves:
        (line,) = ax.plot(c.examples_seen, c.error, marker=".", label=c.label, gid=c.gid)
        if c.low is not None and c.high is not None:
            ax.fill_between(np.asarray(c.examples_seen, dtype=float), np.asarray(c.low, dtype=float),
                            np.asarray(c.high, dtype=float), color=line.get_color(), alpha=0.2, linewidth=0,
                            gid=f"{c.gid}-band")
    if prior is not None:
        ax.axhline(number(prior), color="grey", linestyle=":", label="majority-class error", gid="prior")
    ax.set_xlabel("examples seen")
    ax.set_ylabel("test error")
    ax.legend(fontsize=8, loc="best")


def error_curve(report: Report) -> Figure:
    """Figs 11–12: test error against examples seen, with the majority-class error for reference."""
    fig, (ax,) = new_figure(report, "Test error against examples seen (Figs 11, 12)")
    seen, err = error_series(report)
    spec = report.get("spec", {})
    label = f"{spec.get('model', {}).get('activation')} {spec.get('model', {}).get('init')}"
    draw_error_curves(ax, [ErrorCurve(label, seen, err, "test-error")],
                      report.get("resolved", {}).get("majority_class_error"))
    return fig


def error_bands(curves: Sequence[ErrorCurve], subtitle: str) -> Figure:
    """Figs 11–12 for several runs at once (a suite): one curve per configuration, the mean over its
    seeds, with the band its seeds span."""
    fig, (ax,) = new_figure({}, "Test error against examples seen (Figs 11, 12)", subtitle_text=subtitle)
    draw_error_curves(ax, curves)
    return fig
