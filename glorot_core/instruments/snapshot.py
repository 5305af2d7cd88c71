"""One snapshot of every registered instrument on the fixed monitor set, reduced on the device.

``measure`` runs one forward and one backward pass over the monitor examples (paper: 300 test
examples), captures every probe point (pre-activation s, activation z, ∂C/∂s, the weight feeding s),
runs each instrument that is due at this snapshot, and returns a tree of device tensors;
``glorot_core.instruments.host.to_host`` then copies it to the host in one synchronisation and
``glorot_core.report.snapshot_entry`` turns it into the report's snapshot.
"""

from __future__ import annotations

from typing import Any

import torch

from glorot_core.instruments.base import Registry, SnapshotCapture
from glorot_core.instruments.gradients import weight_grad_stats
from glorot_core.instruments.monitor import Monitor
from glorot_core.instruments.probe import Capture
from glorot_core.instruments.registry import DEFAULT
from glorot_core.models import MLP, Trace

Tensor = torch.Tensor

__all__ = ["Monitor", "capture_mlp", "error_rate", "measure"]


def capture_mlp(
    model: MLP, mon: Monitor, *, index: int = 0, final: bool = False
) -> tuple[SnapshotCapture, dict[str, Any]]:
    """Forward and backward over the monitor set; every hidden layer as a probe-point capture.

    Returns the capture and the whole-network device values (monitor cost and error, the output
    layer's gradients, the inputs of the linear theory).
    """
    n = mon.x.shape[0]
    with torch.enable_grad():
        trace = model.trace(mon.x)
        loss_sum = mon.loss(trace.logits, mon.y, reduction="sum")
        grads = torch.autograd.grad(loss_sum, [*trace.pre, trace.logits])
    L = model.hidden_layers
    g_pre, g_logits = grads[:L], grads[L]
    post = [z.detach() for z in trace.post]
    inputs = [mon.x, *post]
    points = [
        Capture(point=p, s=trace.pre[i].detach(), z=post[i], grad_s=g_pre[i], z_in=inputs[i],
                weight=model.linears[i].weight.detach())
        for i, p in enumerate(model.probe_points())
    ]
    detached = Trace([s.detach() for s in trace.pre], post, trace.logits.detach())
    out_w = model.linears[-1].weight.detach().to(torch.float64)
    network = {
        "monitor_loss": loss_sum.detach() / n,
        "monitor_error": (trace.logits.argmax(-1) != mon.y).float().mean(),
        "input_var": mon.input_var,
        "output_grad_var": g_logits.to(torch.float64).var(),
        "output_backward_gain": out_w.shape[0] * out_w.var(),
        "output_weight_grad": weight_grad_stats(g_logits, inputs[-1], mon.gradient_bins, mon.gradient_basis),
        "activation": mon.activation,
    }
    snap = SnapshotCapture(points, index=index, final=final, network={"model": model, "trace": detached})
    return snap, network


def measure(
    model: MLP, mon: Monitor, *, index: int = 0, final: bool = False, registry: Registry | None = None
) -> dict[str, Any]:
    """Every due instrument of ``registry`` (default: ``glorot_core.instruments.registry.DEFAULT``) at
    the model's current weights, as device tensors (no host sync).

    ``index`` counts snapshots from 0 and ``final`` marks a run's last one (instrument schedules).
    Returns {"network": whole-network values, "sections": {section: {"layers": [...], "network": ...}
    or None when not due}, "points": the probe points}.
    """
    snap, network = capture_mlp(model, mon, index=index, final=final)
    sections = (DEFAULT if registry is None else registry).measure(snap, mon)
    return {"network": network, "sections": sections, "points": [c.point for c in snap.points]}


@torch.no_grad()
def error_rate(model: MLP, x: Tensor, y: Tensor, chunk: int = 4096) -> Tensor:
    """Classification error of ``model`` on (x, y), as a device tensor, evaluated in chunks."""
    wrong = torch.zeros((), dtype=torch.int64, device=x.device)
    for k in range(0, x.shape[0], chunk):
        wrong += (model(x[k:k + chunk]).argmax(-1) != y[k:k + chunk]).sum()
    return wrong.double() / max(x.shape[0], 1)
