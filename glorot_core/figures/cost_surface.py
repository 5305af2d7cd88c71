"""Fig 5: the cross-entropy (black, the top surface) and the quadratic cost (red, the bottom one) over two
weights, drawn from the report's ``cost_surface`` section (glorot_core/cost_surface.py).

Each surface is a wireframe of 3D lines, one per grid row (W1 fixed) and one per grid column (W2
fixed), so every drawn point is a number of the section (the tests read them back with
``Line3D.get_data_3d``). The point the network stands at (the weights' values at the end of the run)
is marked on both surfaces. Each cost's plateau fraction is in the legend.
"""

from __future__ import annotations

from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from mpl_toolkits.mplot3d import Axes3D

from glorot_core.figures._base import DPI, Report, number, subtitle

#: Colour and legend name of each cost, as the paper draws them.
STYLES = {"cross_entropy": ("black", "cross-entropy −log P(y|x)"),
          "quadratic": ("red", "quadratic ½‖softmax − onehot(y)‖²")}


def has_surface(report: Report) -> bool:
    section = report.get("cost_surface")
    return isinstance(section, dict) and bool(section.get("costs"))


def surface(report: Report) -> Figure:
    """Both costs' surfaces on one 3D axes, W1 and W2 as in the section's ``weights``."""
    section: dict[str, Any] = report["cost_surface"]
    w1 = [float(v) for v in section["w1"]]
    w2 = [float(v) for v in section["w2"]]
    fig = Figure(figsize=(7.5, 6.5), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(f"Cost over two weights at update {section.get('step')} ({section.get('examples')} monitor "
                 f"examples)\n{subtitle(report)}", fontsize=10)
    ax: Axes3D = fig.add_subplot(1, 1, 1, projection="3d")
    at1, at2 = number(section["at"]["w1"]), number(section["at"]["w2"])
    plateaus = section.get("plateau_fraction", {})
    for name, grid in section["costs"].items():
        color, label = STYLES.get(name, ("tab:blue", name))
        z = [[number(v) for v in row] for row in grid]
        for i, row in enumerate(z):  # W1 = w1[i] fixed, W2 varies
            ax.plot([w1[i]] * len(w2), w2, row, color=color, linewidth=0.5, gid=f"{name}-w1-{i}")
        for j in range(len(w2)):  # W2 = w2[j] fixed, W1 varies
            ax.plot(w1, [w2[j]] * len(w1), [row[j] for row in z], color=color, linewidth=0.5, gid=f"{name}-w2-{j}")
        if name in plateaus:
            label += f" (plateaus: {100 * number(plateaus[name]):.0f} % of the grid)"
        ax.plot([], [], [], color=color, label=label)
        i1 = min(range(len(w1)), key=lambda i: abs(w1[i] - at1))
        i2 = min(range(len(w2)), key=lambda j: abs(w2[j] - at2))
        ax.scatter([w1[i1]], [w2[i2]], [z[i1][i2]], color=color, s=18, depthshade=False)
    weights = section.get("weights", {})
    ax.set_xlabel(_axis_label("W1", weights.get("w1")))
    ax.set_ylabel(_axis_label("W2", weights.get("w2")))
    ax.set_zlabel("mean cost over the monitor examples")
    ax.legend(fontsize=8, loc="upper left")
    return fig


def _axis_label(name: str, weight: dict[str, Any] | None) -> str:
    if not weight:
        return name
    where = "last hidden layer" if weight.get("layer") == "last_hidden" else "output layer"
    return f"{name}: {where} weight[{weight.get('row')}, {weight.get('col')}]"
