"""What to change: the structured ``fix`` a verdict carries (glorot_core.verdicts), read off a report.

A **block** i is the map from probe point i to probe point i+1, J^i = ∂z_{i+1}/∂z_i = diag(f′(s_{i+1}))
W_{i+1} (torch's layout; docs/science.md §2): its weights are the ones *into* point i+1. Its gain is
χ_i, the mean squared singular value of J^i (the factor on the activation variance going up and on the
gradient variance going down, docs/science.md "The Jacobian of a layer"). Two estimates of χ_i:

* ``jacobian.mean_sq_sv`` of layer i, when the Jacobian section was measured (exact or estimated);
* otherwise the ratio of the back-propagated gradients' second moments, E[(∂C/∂s_i)²] / E[(∂C/∂s_{i+1})²]:
  eq. (6) says Var[∂C/∂s_i] = n_{i+1}·Var[W_{i+1}]·Var[∂C/∂s_{i+1}] in the linear regime, with a factor
  E[f′(s_i)²] beyond it; second moments (std² + mean²) rather than variances because that is what a
  linear map preserves (an orthogonal W keeps ‖g W‖ = ‖g‖ exactly). It differs from the Jacobian's χ_i
  in where f′ is taken (layer i instead of i+1) and assumes gradients spread evenly over directions.

**Gain.** J^i is linear in W_{i+1} at fixed f′(s_{i+1}), so scaling W_{i+1} by g scales χ_i by g² and
g = 1/√χ_i brings it to 1 — to first order. It is exact for linear layers, and for relu-family layers
with zero biases (relu(g·s) = g·relu(s): f′ does not change). For saturating activations (tanh,
sigmoid, softsign) scaling W also moves s_{i+1} and so f′(s_{i+1}): a gain above 1 pushes s into the
flat tails, f′ falls, and χ lands below 1 (the gain undershoots; re-measure after applying it). The
gradient-ratio estimate is exact in the same cases when the gradients are isotropic (e.g. orthogonal W).

**Init scheme.** The variance that makes a block's χ ≈ 1 for its activation, with the expected mean
squared singular value max(n_in, n_out)·Var[W]·E[f′(s)²] (tr JᵀJ ≈ n_in·n_out·Var[W]·E[f′²] over
min(n_in, n_out) singular values):

* odd activations with f′(0) = 1 (tanh, softsign, linear, hardtanh): the paper's normalized init
  (eq. 16), U[±√6/√(n_in + n_out)], Var[W] = 2/(n_in + n_out); E[f′²] = 1 in the linear regime;
* sigmoid: the same with gain 4 (f′(0) = 1/4), Var[W] = 32/(n_in + n_out); the paper's remedy is rather
  a zero-centred activation (its mean output 0.5 is what saturates the top layer, §3.1);
* relu family (relu, relu6, leaky_relu): He, N(0, 2/n_in) (leaky: 2/((1 + a²)·n_in)); E[f′²] = 1/2 at
  symmetric pre-activations, whatever their scale;
* other smooth activations (gelu, silu, elu, softplus, mish, hardswish): variance-preserving for unit-
  variance pre-activations, Var[W] = 1/(n_in·E[f′(s)²]) with s ~ N(0, 1) (E computed by Gauss–Hermite
  quadrature of the activation's own derivative); He for relu is the special case E = 1/2.

**Learning rate.** From the curvature section (glorot_core.instruments.curvature): SGD on a quadratic
is stable for ε < 2(1 + μ)/λ_max (μ the momentum), so ``learning_rate_max`` = 2(1 + μ)/λ_max, measured
on the cost at the snapshot where λ_max was taken (at init by default).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

GAIN_NOTE = ("first order: scaling the weights into the block by g scales its mean squared singular value by "
             "g² at fixed f′(s); exact for linear and (zero-bias) relu-family layers, approximate for saturating "
             "activations, whose f′(s) changes with the scale of s (the gain then undershoots): re-measure")
ODD_UNIT_SLOPE = frozenset({"tanh", "softsign", "linear", "hardtanh"})
RELU_FAMILY = {"relu": 0.0, "relu6": 0.0, "leaky_relu": 0.01}
"""relu-family activations and their negative slope a (E[f′²] = (1 + a²)/2 at symmetric pre-activations)."""


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def block_gain(layers: list[dict[str, Any]], i: int, snap: dict[str, Any]) -> dict[str, Any] | None:
    """χ of block i (1-based: probe point i → i+1) in snapshot ``snap`` and the gain g = 1/√χ that
    brings it to 1 (module docstring), naming the statistic used; None without an estimate."""
    entries = snap.get("layers", [])
    if not 1 <= i < len(entries):
        return None
    lay, above = entries[i - 1], entries[i]
    chi = _num((lay.get("jacobian") or {}).get("mean_sq_sv"))
    if chi is not None:
        statistic = "jacobian.mean_sq_sv"
    else:
        m_lo, m_hi = _second_moment(lay), _second_moment(above)
        if m_lo is None or m_hi is None or m_hi <= 0:
            return None
        chi, statistic = m_lo / m_hi, "backprop_grad.second_moment_ratio"
    if chi <= 0:
        return None
    target = _layer(layers, i + 1)
    return {
        "probe_point": target.get("name", lay.get("name")) if target else above.get("name"),
        "layer": i + 1,
        "block": f"{lay.get('name', i)} → {above.get('name', i + 1)}",
        "statistic": statistic,
        "measured_at": lay.get("name", i),
        "value": chi,
        "action": "scale weights by",
        "weights": f"the weights into probe point {above.get('name', i + 1)!r} (layer {i + 1})",
        "gain": 1.0 / math.sqrt(chi),
        "approximation": GAIN_NOTE,
    }


def _second_moment(lay: dict[str, Any]) -> float | None:
    g = lay.get("backprop_grad") or {}
    std, mean = _num(g.get("std")), _num(g.get("mean"))
    if std is None:
        return None
    return std * std + (mean or 0.0) ** 2


def _layer(layers: list[dict[str, Any]], index: int) -> dict[str, Any] | None:
    return next((lay for lay in layers if lay.get("index") == index), None)


def init_scheme(activation: str | None, fan_in: int | None, fan_out: int | None) -> dict[str, Any]:
    """The init that makes a block with this activation and these fans have χ ≈ 1 (module docstring)."""
    act = activation or "linear"
    if act in ODD_UNIT_SLOPE or act == "sigmoid":
        gain = 4.0 if act == "sigmoid" else 1.0
        out: dict[str, Any] = {
            "scheme": "normalized" if gain == 1 else "normalized, gain 4",
            "formula": "W ~ U[±√6/√(n_in + n_out)]" if gain == 1 else "W ~ U[±4·√6/√(n_in + n_out)]",
            "equation": "paper eq. 16", "mean_sq_derivative": 1.0 / gain**2,
        }
        if fan_in and fan_out:
            out["bound"] = gain * math.sqrt(6.0 / (fan_in + fan_out))
            out["weight_var"] = gain**2 * 2.0 / (fan_in + fan_out)
        if act == "sigmoid":
            out["note"] = "the paper's remedy is a zero-centred activation (tanh, softsign): sigmoid's mean 0.5 " \
                          "saturates the top layer (§3.1)"
    elif act in RELU_FAMILY:
        a = RELU_FAMILY[act]
        out = {"scheme": "he", "formula": "W ~ N(0, 2/((1 + a²)·n_in))" if a else "W ~ N(0, 2/n_in)",
               "mean_sq_derivative": (1 + a * a) / 2}
        if fan_in:
            out["weight_var"] = 2.0 / ((1 + a * a) * fan_in)
            out["std"] = math.sqrt(out["weight_var"])
    else:
        e = mean_sq_derivative_normal(act)
        out = {"scheme": "variance-preserving", "formula": "W ~ N(0, 1/(n_in·E[f′(s)²])), s ~ N(0, 1)",
               "mean_sq_derivative": e}
        if fan_in and e:
            out["weight_var"] = 1.0 / (fan_in * e)
            out["std"] = math.sqrt(out["weight_var"])
    if "weight_var" in out and fan_in and fan_out:
        out["expected_mean_sq_sv"] = max(fan_in, fan_out) * out["weight_var"] * out["mean_sq_derivative"]
    out.update(activation=act, fan_in=fan_in, fan_out=fan_out)
    return out


@lru_cache(maxsize=32)
def mean_sq_derivative_normal(activation: str, nodes: int = 64) -> float | None:
    """E[f′(s)²] for s ~ N(0, 1), by Gauss–Hermite quadrature of the activation's derivative."""
    import torch

    from glorot_core.uploads.activations import activation_named

    try:
        act = activation_named(activation)
    except (KeyError, ValueError):
        return None
    x, w = np.polynomial.hermite_e.hermegauss(nodes)  # weight e^{−x²/2}: Σ w = √(2π)
    d = act.derivative(torch.from_numpy(x)).numpy()
    return float((w * d * d).sum() / w.sum())


def block_init(layers: list[dict[str, Any]], i: int) -> dict[str, Any]:
    """The init scheme for the weights into layer ``i`` (1-based), from its activation and fans."""
    lay = _layer(layers, i) or {}
    fan_in = lay.get("fan_in")
    fan_out = lay.get("units") if lay.get("kind", "dense") == "dense" else None
    return init_scheme(lay.get("activation"), fan_in, fan_out)


def learning_rate_bound(snapshots: list[dict[str, Any]], momentum: float = 0.0) -> dict[str, Any] | None:
    """``learning_rate_max`` = 2(1 + μ)/λ_max from the first snapshot with a curvature section."""
    for snap in snapshots:
        curv = snap.get("curvature")
        if not isinstance(curv, dict):
            continue
        lam, res = _num(curv.get("lambda_max")), _num(curv.get("residual"))
        if lam is None or lam <= 0:
            return None
        return {"lambda_max": lam, "residual": res, "step": snap.get("step"), "momentum": momentum,
                "learning_rate_max": 2.0 * (1.0 + momentum) / lam,
                "rule": "SGD on a quadratic is stable for lr < 2(1 + momentum)/λ_max"}
    return None
