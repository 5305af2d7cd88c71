"""Fig 5 of Glorot & Bengio (2010): the cross-entropy and the quadratic cost as functions of two weights.

The paper draws, for a network with one hidden layer (tanh, softmax output), the cost on a set of
examples as a function of two weights, "one at each layer": W1 on the first layer and W2 on the
output layer, every other parameter fixed. The cross-entropy −log P(y|x) (black, the top surface)
keeps a slope almost everywhere; the quadratic cost ½‖softmax(a) − onehot(y)‖² (red, the bottom
surface) has plateaus, where the softmax saturates and the gradient vanishes (§4.1: one reason the
quadratic cost trains worse).

:func:`cost_surface` computes both costs on a grid of the two weights, vectorised with torch: the
network's forward pass runs once, and moving W1 = W_L[j, k] (a weight *into* unit j of the last hidden
layer, L = 1 in the paper's network) and W2 = W_{L+1}[c, j′] (a weight of the output layer) changes
only unit j's pre-activation and the logits, which are recomputed for every grid point at once
(G₁ × G₂ × examples × classes numbers, in chunks of rows). :func:`plateau_fraction` measures how much
of a surface is flat.

Weights are named in torch's layout (``weight[row, col]`` = from unit ``col`` below to unit ``row``
above); the grid is centred on the weights' current values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from glorot_core.losses import LOSSES
from glorot_core.models import MLP

Tensor = torch.Tensor

CHUNK_NUMBERS = 1 << 22
"""Grid rows are evaluated in chunks of at most this many logits (≈16 MB of float32 each)."""


@dataclass(frozen=True)
class SurfaceWeights:
    """The two weights varied: W1 = last hidden layer's ``weight[unit, source]`` (``source`` indexes the
    layer below: the input for one hidden layer), W2 = output layer's ``weight[target, output_unit]``."""

    unit: int
    source: int
    target: int
    output_unit: int

    def describe(self) -> dict[str, Any]:
        return {
            "w1": {"layer": "last_hidden", "row": self.unit, "col": self.source,
                   "meaning": f"from unit {self.source} of the layer below to hidden unit {self.unit}"},
            "w2": {"layer": "output", "row": self.target, "col": self.output_unit,
                   "meaning": f"from hidden unit {self.output_unit} to output {self.target}"},
        }


def default_weights(model: MLP, x: Tensor, y: Tensor) -> SurfaceWeights:
    """A path x_k → hidden unit j → output c through which both weights act on the examples' cost:
    k the input (unit of the layer below) with the largest variance over ``x``, so that W1 moves unit
    j's pre-activation differently across examples; j = 0; c the most frequent class of ``y``, so that
    W2 moves the logit of the class most examples are right or wrong about. Deterministic."""
    with torch.no_grad():
        below = _below_last_hidden(model, x)
    k = int(below.var(dim=0).argmax())
    c = int(torch.bincount(y, minlength=model.widths[-1]).argmax())
    return SurfaceWeights(unit=0, source=k, target=c, output_unit=0)


def _below_last_hidden(model: MLP, x: Tensor) -> Tensor:
    """The input of the last hidden layer's weights: z_{L−1} (x itself for one hidden layer)."""
    f = model.activation.fn
    z = x
    for lin in model.linears[:-2]:
        z = f(lin(z))
    return z


def axis_values(center: float, extent: float, points: int) -> Tensor:
    """``points`` equally spaced values over [center − extent, center + extent], in float64."""
    return torch.linspace(center - extent, center + extent, points, dtype=torch.float64)


@torch.no_grad()
def cost_surface(
    model: MLP, x: Tensor, y: Tensor, *, extent: float = 10.0, points: int = 41,
    weights: SurfaceWeights | None = None, losses: tuple[str, ...] = ("cross_entropy", "quadratic"),
) -> dict[str, Any]:
    """The mean cost over (``x``, ``y``) of each of ``losses`` on a ``points`` × ``points`` grid of
    W1 (rows) and W2 (columns), each over its current value ± ``extent``; other parameters fixed.

    Returns ``{"weights", "w1", "w2", "costs": {loss: G₁ × G₂ nested lists}, "examples", "at"}``:
    the weights varied (:meth:`SurfaceWeights.describe`), the axis values, the cost grids, the number
    of examples, and the current values of W1 and W2 (the point the network stands at). Computed in
    the model's dtype; the model is not modified.
    """
    if points < 2 or extent <= 0:
        raise ValueError("a surface needs points >= 2 and extent > 0")
    w = weights if weights is not None else default_weights(model, x, y)
    hidden, out = model.linears[-2], model.linears[-1]
    f = model.activation.fn
    below = _below_last_hidden(model, x)  # (N, n_below)
    s = hidden(below)  # (N, J)
    h = f(s)
    logits0 = out(h)  # (N, C)
    w1_0, w2_0 = float(hidden.weight[w.unit, w.source]), float(out.weight[w.target, w.output_unit])
    a, b = axis_values(w1_0, extent, points), axis_values(w2_0, extent, points)
    dtype = logits0.dtype
    da, db = (a - w1_0).to(x.device, dtype), (b - w2_0).to(x.device, dtype)
    n, classes = logits0.shape
    rows = max(1, CHUNK_NUMBERS // (points * n * classes))
    grids: dict[str, list[Tensor]] = {name: [] for name in losses}
    onehot_c = torch.zeros(classes, dtype=dtype, device=x.device)
    onehot_c[w.target] = 1.0
    for start in range(0, points, rows):
        d1 = da[start:start + rows]  # (g, )
        h_j = f(s[:, w.unit] + d1[:, None] * below[:, w.source])  # (g, N): unit j under each W1
        # logits with W1 moved: unit j's change times its outgoing weights (all of the output layer's)
        moved = logits0 + (h_j - h[:, w.unit])[..., None] * out.weight[:, w.unit]  # (g, N, C)
        # the source of W2 under each W1 (unit j itself when W2 leaves it, else unchanged)
        h_src = h_j if w.output_unit == w.unit else h[:, w.output_unit].expand_as(h_j)
        logits = moved[:, None] + db[None, :, None, None] * h_src[:, None, :, None] * onehot_c  # (g, G2, N, C)
        flat = logits.reshape(-1, classes)
        targets = y.repeat(flat.shape[0] // n)
        for name in losses:
            per = LOSSES[name](flat, targets, reduction="none").reshape(d1.shape[0], points, n)
            grids[name].append(per.mean(-1))
    return {
        "weights": w.describe(),
        "w1": a.tolist(),
        "w2": b.tolist(),
        "at": {"w1": w1_0, "w2": w2_0},
        "examples": int(n),
        "costs": {name: torch.cat(g).to(torch.float64).cpu().tolist() for name, g in grids.items()},
    }


PLATEAU_RELATIVE_SLOPE = 0.05
"""A grid point is on a plateau where the cost's slope ‖∇C‖ is below this fraction of the steepest slope
on the same grid: there gradient descent moves at less than 1/20 of the rate it can reach elsewhere on
the surface. Relative to each surface's own steepest slope, so that two costs of different scales
(−log P is ≈5× the quadratic cost at initialisation) are judged alike."""


def gradient_norm(cost: Tensor, w1: Tensor, w2: Tensor) -> Tensor:
    """‖∇C‖ at every grid point by central differences (one-sided at the edges)."""
    g1, g2 = torch.gradient(cost, spacing=(w1, w2))
    return torch.hypot(g1, g2)


def plateau_fraction(cost: Any, w1: Any, w2: Any, relative: float = PLATEAU_RELATIVE_SLOPE) -> float:
    """The fraction of grid points where ‖∇C‖ < ``relative`` · max ‖∇C‖ over the grid
    (:data:`PLATEAU_RELATIVE_SLOPE`); 1 for a surface that is flat everywhere."""
    c = torch.as_tensor(cost, dtype=torch.float64)
    g = gradient_norm(c, torch.as_tensor(w1, dtype=torch.float64), torch.as_tensor(w2, dtype=torch.float64))
    steepest = float(g.max())
    if steepest == 0.0:
        return 1.0
    return float((g < relative * steepest).double().mean())


def report_section(model: MLP, x: Tensor, y: Tensor, *, extent: float, points: int, step: int) -> dict[str, Any]:
    """The report's ``cost_surface`` section: :func:`cost_surface` of both costs at update ``step`` (the
    end of the run) on the monitor examples, with each surface's plateau fraction and its threshold."""
    surface = cost_surface(model, x, y, extent=extent, points=points)
    return {
        "step": step,
        **surface,
        "plateau_fraction": {name: plateau_fraction(c, surface["w1"], surface["w2"])
                             for name, c in surface["costs"].items()},
        "plateau_rule": f"|grad C| < {PLATEAU_RELATIVE_SLOPE:g} x the steepest |grad C| on the grid "
                        "(central differences)",
    }
