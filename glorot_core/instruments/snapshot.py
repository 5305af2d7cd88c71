"""One snapshot of every instrument on the fixed monitor set, reduced on the device.

``measure`` runs one forward and one backward pass over the monitor examples (paper: 300 test
examples), keeps every hidden layer's pre-activation s_i and output z_i, and returns a tree of device
tensors; ``glorot_core.instruments.host.to_host`` then copies it to the host in one synchronisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from glorot_core.activations import Activation
from glorot_core.instruments.activation_stats import activation_stats
from glorot_core.instruments.gradients import gradient_stats
from glorot_core.instruments.histogram import OctaveBins
from glorot_core.instruments.saturation import saturation_stats
from glorot_core.instruments.theory import layer_mean_field
from glorot_core.losses import Loss
from glorot_core.models import MLP
from glorot_core.spec import JacobianSpec

Tensor = torch.Tensor


@dataclass
class Monitor:
    """The fixed monitor set and everything constant across snapshots (edges, loss, Jacobian options)."""

    x: Tensor
    y: Tensor
    activation: Activation
    loss: Loss
    jacobian: JacobianSpec
    bins: int

    def __post_init__(self) -> None:
        self.activation_bins = self.activation.histogram_bins(self.bins)
        self.gradient_bins = OctaveBins()
        # E[x²], eq. 5's starting point (not Var[x]: inputs need not be centred); once, the set is fixed
        self.input_var = self.x.to(torch.float64).square().mean()


def measure(model: MLP, mon: Monitor) -> dict[str, object]:
    """All per-layer instruments at the model's current weights, as device tensors (no host sync)."""
    n = mon.x.shape[0]
    weights = [lin.weight for lin in model.linears]
    with torch.enable_grad():
        trace = model.trace(mon.x)
        loss_sum = mon.loss(trace.logits, mon.y, reduction="sum")
        grads = torch.autograd.grad(loss_sum, [*trace.pre, trace.logits])
    L = model.hidden_layers
    g_pre, g_logits = grads[:L], grads[L]
    # ∂C/∂W_i of the mean cost = (∂C/∂s_i)ᵀ z_{i-1} / n: the GEMM autograd would do, with the 1/n
    # folded into it (alpha) instead of another pass over the weight-sized result.
    inputs = [mon.x, *(z.detach() for z in trace.post)]
    zero = torch.zeros((), dtype=mon.x.dtype, device=mon.x.device)
    g_w = [torch.addmm(zero, g.T, z_in, beta=0, alpha=1.0 / n)
           for g, z_in in zip([*g_pre, g_logits], inputs, strict=True)]
    layers = []
    for i in range(L):
        z = trace.post[i].detach()
        layers.append({
            "activation": activation_stats(z, mon.activation_bins),
            "saturation": saturation_stats(z, mon.activation),
            "backprop_grad": gradient_stats(g_pre[i], mon.gradient_bins),
            "weight_grad": gradient_stats(g_w[i], mon.gradient_bins),
            "mean_field": layer_mean_field(trace.pre[i], mon.activation, weights[i]),
        })
    out_w = weights[-1].detach().to(torch.float64)
    result: dict[str, object] = {
        "monitor_loss": loss_sum.detach() / n,
        "monitor_error": (trace.logits.argmax(-1) != mon.y).float().mean(),
        "input_var": mon.input_var,
        "output_grad_var": g_logits.to(torch.float64).var(),
        "output_backward_gain": out_w.shape[0] * out_w.var(),
        "output_weight_grad": gradient_stats(g_w[-1], mon.gradient_bins),
        "layers": layers,
    }
    if mon.jacobian.mode != "off":
        from glorot_core.instruments.jacobian import jacobian_spectra

        detached = type(trace)([s.detach() for s in trace.pre], [z.detach() for z in trace.post],
                               trace.logits.detach())
        result["jacobian"] = jacobian_spectra(model, detached, mon.jacobian, mon.bins)
    return result


@torch.no_grad()
def error_rate(model: MLP, x: Tensor, y: Tensor, chunk: int = 4096) -> Tensor:
    """Classification error of ``model`` on (x, y), as a device tensor, evaluated in chunks."""
    wrong = torch.zeros((), dtype=torch.int64, device=x.device)
    for k in range(0, x.shape[0], chunk):
        wrong += (model(x[k:k + chunk]).argmax(-1) != y[k:k + chunk]).sum()
    return wrong.double() / max(x.shape[0], 1)
