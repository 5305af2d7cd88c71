"""The paper's linear-regime theory (§4.2, eqs 5–7) and the mean-field χ, beside the measured values.

Row-vector convention of the paper, in glorot's indexing (models.py): s_i = z_{i-1} W_i + b_i,
z_i = f(s_i), z_0 = x, layers i = 1..L hidden and L+1 the softmax output. With f'(s) ≈ 1 and
independent weights:

* eq. (5): Var[z_i] = E[x²] · ∏_{k ≤ i} n_{k-1} Var[W_k]          ("forward gain" n_in·Var[W])
* eq. (6): Var[∂C/∂s_i] = Var[∂C/∂s_{L+1}] · ∏_{k > i} n_k Var[W_k]  ("backward gain" n_out·Var[W])
* eq. (7)/(14): Var[∂C/∂W_i] = Var[z_{i-1}] · Var[∂C/∂s_i] per example (E[z_{i-1}²] for layer 1),
  the same for every layer when all gains are equal, although back-propagated gradients may vanish
  or explode.

Every variance here is **per example**: ∂C/∂s of the cost summed over the monitor examples (row n is
example n's gradient), and the measured weight-gradient variance is that of the per-example gradients
g_n z_nᵀ pooled over examples and entries (``instruments.per_example``), whatever basis the report's
``weight_grad`` section uses. The gradient of the mean cost over N examples averages N such
gradients and has ≈1/N of their variance when they are weakly correlated, so it cannot be compared
with eq. 7 directly. ``weight_grad_var_predicted_over_measured`` is their ratio: 1 in the linear
regime; tanh's f' < 1 makes it ≈ ∏_k 1/(1 − 2·Var[s_k]) > 1 to first order (each hidden layer k enters
either the forward product of z_{i-1} or the backward product of ∂C/∂s_i, exactly once).

Eq. (5) starts from the input's second moment E[x²], not Var[x]: with zero-mean weights and zero
biases, Var[s_1] = E[(Σ_k x_k W_k)²] = n_0 · Var[W] · E[x²], whatever the mean of x. The paper writes
Var[x], equal only for centred inputs; on inputs in [0, 1] (mean ≈0.5) Var[x] understates every
predicted activation variance several-fold. Hidden layers' outputs are centred at init (symmetric
weights, odd f), so from layer 2 on E[z²] = Var[z] and the recursion is the paper's.

The eq. 5–6 predictions assume f'(0) = 1 and an odd f (tanh, softsign, linear); for the others the
report says ``applies: false``. The mean-field χ_i = n_{i-1} Var[W_i] · E[f'(s_i)²] (Pennington et al.,
2017) is the factor by which the mean squared singular value of J and the gradient variance change per
layer; criticality is χ = 1 and the depth scale is ξ = −1/ln χ (Schoenholz et al., 2017).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from glorot_core.activations import Activation
from glorot_core.instruments.summary import centred_variance

Tensor = torch.Tensor

LINEAR_REGIME = 0.9
"""A unit is in the linear regime when f'(s) ≥ 0.9 · max f' (reported as ``linear_fraction``)."""


def theory_applies(activation: Activation) -> bool:
    """Eqs 5–6 need f'(0) = 1 and an odd f."""
    return activation.name in ("tanh", "softsign", "linear")


def layer_mean_field(s: Tensor, activation: Activation, weight: Tensor, z: Tensor | None = None) -> dict[str, Tensor]:
    """Device-side inputs of the theory for one layer: gains, E[f'(s)²], χ and the linear fraction.

    ``z`` (the layer's output f(s)) lets f'(s) be read off the output where the activation allows it
    (``Activation.derivative_at``), instead of evaluating f again.
    """
    d = activation.derivative_at(s.detach(), None if z is None else z.detach())
    peak = _peak_derivative(activation)
    fan_out, fan_in = weight.shape
    var_w = centred_variance(weight)  # one pass: weights are centred (torch's Welford var is 4× slower)
    flat = d.reshape(-1)
    e_d2 = torch.dot(flat, flat).to(torch.float64) / max(flat.numel(), 1)
    return {
        "weight_var": var_w,
        "forward_gain": fan_in * var_w,
        "backward_gain": fan_out * var_w,
        "mean_sq_derivative": e_d2,
        "chi": fan_in * var_w * e_d2,
        "linear_fraction": torch.count_nonzero(flat.abs() >= LINEAR_REGIME * peak) / max(flat.numel(), 1),
    }


_PEAKS: dict[Activation, float] = {}


def _peak_derivative(activation: Activation) -> float:
    """|f'(0)|, the slope of the linear regime (1 for relu-like and linear activations), once per activation."""
    peak = _PEAKS.get(activation)
    if peak is None:
        if activation.dead_at_zero or activation.name == "linear":
            peak = 1.0
        else:
            peak = max(abs(float(activation.derivative(torch.zeros(1, dtype=torch.float64))[0])), 1e-12)
        _PEAKS[activation] = peak
    return peak


def theory_table(
    activation: Activation,
    input_mean_sq: float,
    output_grad_var: float,
    measured: list[dict[str, Any]],
    mean_field: list[dict[str, Any]],
    output_backward_gain: float,
) -> list[dict[str, Any]]:
    """Per-layer predictions of eqs 5–7 beside the measured values (all host numbers).

    ``measured[i]`` has ``activation_var``, ``backprop_var``, ``weight_grad_var`` of hidden layer i+1, all
    per example (the weight gradient's: of every g_n z_nᵀ pooled, ``instruments.per_example``);
    ``mean_field[i]`` is ``layer_mean_field`` of layer i+1 on the host; ``output_backward_gain`` is
    n_out·Var[W_{L+1}] of the output layer's weights; ``input_mean_sq`` is E[x²] over the monitor inputs
    (eq. 5's starting point, see the module docstring).
    """
    L = len(measured)
    applies = theory_applies(activation)
    fwd = [float(m["forward_gain"]) for m in mean_field]
    bwd = [float(m["backward_gain"]) for m in mean_field[1:]] + [output_backward_gain]
    rows: list[dict[str, Any]] = []
    back_pred = [0.0] * L
    acc = output_grad_var
    for i in reversed(range(L)):
        acc *= bwd[i]
        back_pred[i] = acc
    act_preds = [input_mean_sq]
    for i in range(L):
        act_preds.append(act_preds[-1] * fwd[i])
    # eq. (7): Var[∂C/∂W_i] = Var[z_{i-1}] · Var[∂C/∂s_i] per example; the ratio to layer 1 is 1 (eq. 14)
    # when all gains are equal. The measured value is on the same per-example basis (module docstring).
    wg_pred = [act_preds[i] * back_pred[i] for i in range(L)]
    for i in range(L):
        act_pred = act_preds[i + 1]
        chi = float(mean_field[i]["chi"])
        rows.append({
            "index": i + 1,
            "applies": applies,
            "forward_gain": fwd[i],
            "backward_gain": bwd[i],
            "predicted_activation_var": act_pred,
            "measured_activation_var": measured[i]["activation_var"],
            "predicted_backprop_var": back_pred[i],
            "measured_backprop_var": measured[i]["backprop_var"],
            "predicted_weight_grad_var": wg_pred[i],
            "measured_weight_grad_var": measured[i]["weight_grad_var"],
            "weight_grad_var_predicted_over_measured": _ratio(wg_pred[i], measured[i]["weight_grad_var"]),
            "predicted_weight_grad_var_ratio_to_layer1": _ratio(wg_pred[i], wg_pred[0]),
            "weight_grad_var_ratio_to_layer1": _ratio(measured[i]["weight_grad_var"], measured[0]["weight_grad_var"]),
            "chi": chi,
            "depth_scale": _depth_scale(chi),
            "mean_sq_derivative": float(mean_field[i]["mean_sq_derivative"]),
            "linear_fraction": float(mean_field[i]["linear_fraction"]),
        })
    return rows


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return a / b if b not in (0, 0.0) and math.isfinite(a) and math.isfinite(b) else None


def _depth_scale(chi: float) -> float | str | None:
    """ξ = −1/ln χ: the depth over which signals decay (χ < 1) or grow (χ > 1, negative ξ)."""
    if not math.isfinite(chi) or chi <= 0:
        return None
    if chi == 1.0:
        return "Infinity"
    return -1.0 / math.log(chi)
