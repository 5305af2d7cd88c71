"""Probe-point captures of an uploaded model: s, z and ∂C/∂s at every probe point, on the monitor set.

Where the instruments look (``glorot_core.uploads.probe_points`` names the points):

* a described network (``nn.Sequential``): forward hooks on each activation module, by module path;
  s is the module's input, z its output; and on each norm module, whose output is both s and z;
* an exported program: its module (``program.module()``) run node by node by an ``fx.Interpreter``
  that keeps, for each activation, the value its first node reads (s) and its last node's output (z),
  and for each block output (residual sum, norm output) its node's output as both s and z.

The cost C is summed over the monitor examples, so row n of ∂C/∂s is example n's own gradient
(paper eq. 6): −log P(y|x) when labels exist (the output must then be logits, examples × classes),
otherwise the mean squared output per example, C = Σ_n mean_k y_{n,k}². Weight gradients are those of
the mean cost (C / n), by autograd, for the one Linear or Conv2d weight that feeds a point directly
(the module before the activation in a Sequential; an ``aten.linear`` / ``aten.conv2d`` node on a
parameter in a graph); other points have none.

Examples are independent (eval mode), so a program traced with a static batch size runs on chunks of
that size, the last one padded with copies whose cost is masked out.

Shapes: the instruments pool their scalar statistics over every entry, and treat the second axis of
a capture as its *units* (dead units, effective rank). A capture is therefore folded to
(samples, units): a dense point is (examples, units); a convolution's map (examples, C, H, W) is
(examples·H·W, C) — units are channels, positions are samples —; a sequence (examples, T, F) is
(examples·T, F) — units are features, tokens are samples —; anything else is (examples, entries).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from glorot_core.instruments.probe import Capture
from glorot_core.uploads.probe_points import graph_probe_sites, module_role

Tensor = torch.Tensor
_FEEDING_OPS = ("linear", "conv2d")


@dataclass
class UploadedCapture(Capture):
    """A capture whose weight gradient is given (autograd's, for Linear and Conv2d alike)."""

    given_weight_grad: Tensor | None = None

    @property  # type: ignore[override]
    def weight_grad(self) -> Tensor | None:
        return self.given_weight_grad

    @property
    def weight_grad_factors(self) -> tuple[Tensor, Tensor] | None:
        """None: the given gradient is autograd's, which also covers convolutions and shared weights."""
        return None


@dataclass
class Site:
    """One probe point's tensors from one forward pass: s, z, and the weight feeding s with its input;
    ``role`` as in ``glorot_core.uploads.probe_points`` (for a block output s and z are one tensor)."""

    name: str
    activation: str
    s: Tensor
    z: Tensor
    weight: nn.Parameter | None = None
    z_in: Tensor | None = None
    role: str = "activation"


@dataclass
class RawCapture:
    """Every probe point over the whole monitor set, unfolded (examples first), plus the output side."""

    sites: list[Site]
    grad_s: list[Tensor]
    weight_grads: list[Tensor | None]
    output: Tensor
    grad_output: Tensor
    cost_sum: Tensor
    output_weight: nn.Parameter | None
    output_weight_grad: Tensor | None


def fold(t: Tensor) -> Tensor:
    """``(examples, *shape)`` → (samples, units) as the module docstring says."""
    if t.dim() == 4:
        return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])
    if t.dim() == 3:
        return t.reshape(-1, t.shape[2])
    return t.reshape(t.shape[0], -1)


def _sequential_forward(net: nn.Module, x: Tensor) -> tuple[list[Site], Tensor, nn.Parameter | None]:
    sites: list[Site] = []
    hooks = []
    children = dict(net.named_modules())
    for name, module in net.named_modules():
        role, act = module_role(module)
        if role is None or not name:
            continue
        feeding = _previous_sibling(children, name) if role == "activation" else None

        def hook(_m: nn.Module, inp: tuple[Tensor, ...], out: Tensor, name: str = name, act: str = act,
                 feeding: nn.Module | None = feeding, role: str = role) -> None:
            s = inp[0] if role == "activation" else out
            sites.append(Site(name, act, s, out, feeding.weight if feeding is not None else None, role=role))

        hooks.append(module.register_forward_hook(hook))
    inputs: dict[int, Tensor] = {}
    for site_module in {id(m): m for m in children.values() if isinstance(m, (nn.Linear, nn.Conv2d))}.values():
        hooks.append(site_module.register_forward_hook(
            lambda m, inp, _o: inputs.__setitem__(id(m.weight), inp[0])))
    try:
        out = net(x)
    finally:
        for h in hooks:
            h.remove()
    for site in sites:
        if site.weight is not None:
            site.z_in = inputs.get(id(site.weight))
    last = list(net.children())[-1] if len(list(net.children())) else None
    return sites, out, last.weight if isinstance(last, nn.Linear) else None


def _previous_sibling(modules: dict[str, nn.Module], name: str) -> nn.Module | None:
    """The Linear/Conv2d just before module ``name`` in its parent Sequential (it feeds s directly)."""
    parent, _, index = name.rpartition(".")
    if not index.isdigit() or int(index) == 0:
        return None
    prev = modules.get(f"{parent}.{int(index) - 1}" if parent else str(int(index) - 1))
    return prev if isinstance(prev, (nn.Linear, nn.Conv2d)) else None


class _Recorder(torch.fx.Interpreter):
    """Runs a graph module keeping the values of the nodes it is asked about."""

    def __init__(self, gm: torch.fx.GraphModule, wanted: set[torch.fx.Node]) -> None:
        super().__init__(gm)
        self.wanted, self.values = wanted, {}

    def run_node(self, n: torch.fx.Node) -> Any:
        if n.op == "call_module" and str(n.target).startswith("_guards"):
            return None  # shape guards: the chunks have the traced batch size already
        out = super().run_node(n)
        if n in self.wanted:
            self.values[n] = out
        return out


def _feeding_node(gm: torch.fx.GraphModule, node: Any) -> tuple[nn.Parameter, torch.fx.Node] | None:
    """(weight, input node) when ``node`` is a linear/conv2d on a parameter."""
    if not isinstance(node, torch.fx.Node) or node.op != "call_function":
        return None
    op = getattr(getattr(node.target, "_overloadpacket", None), "__name__", "")
    if op not in _FEEDING_OPS or len(node.args) < 2:
        return None
    w = node.args[1]
    if not (isinstance(w, torch.fx.Node) and w.op == "get_attr" and isinstance(node.args[0], torch.fx.Node)):
        return None
    try:
        return gm.get_parameter(str(w.target)), node.args[0]
    except AttributeError:
        return None


def _graph_forward(gm: torch.fx.GraphModule, x: Tensor) -> tuple[list[Site], Tensor, nn.Parameter | None]:
    acts = graph_probe_sites(gm.graph)
    output_node = next(n for n in gm.graph.nodes if n.op == "output")
    out_arg = output_node.args[0]
    while isinstance(out_arg, (tuple, list)) and len(out_arg) == 1:
        out_arg = out_arg[0]
    wanted: set[torch.fx.Node] = {out_arg} if isinstance(out_arg, torch.fx.Node) else set()
    feeds = []
    for a in acts:
        s_node = a.input_node
        wanted |= {a.last, s_node}
        feed = _feeding_node(gm, s_node)
        feeds.append(feed)
        if feed is not None:
            wanted.add(feed[1])
    rec = _Recorder(gm, wanted)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    rec.run(*([x] + [None] * (len(placeholders) - 1)))
    sites = [Site(a.name, a.activation, rec.values[a.input_node], rec.values[a.last],
                  feed[0] if feed else None, rec.values[feed[1]] if feed else None, a.role)
             for a, feed in zip(acts, feeds, strict=True)]
    out_feed = _feeding_node(gm, out_arg)
    return sites, rec.values[out_arg], out_feed[0] if out_feed else None


def per_example_cost(out: Tensor, y: Tensor | None) -> Tensor:
    """Cost of each example: −log P(y|x) with labels, else the mean squared output (module docstring)."""
    if y is not None:
        return F.cross_entropy(out.float(), y, reduction="none")
    return out.float().square().reshape(out.shape[0], -1).mean(dim=1)


def capture(module: nn.Module, x: Tensor, y: Tensor | None, *, graph: bool, batch: int | None) -> RawCapture:
    """Forward and backward over the monitor set ``x`` (labels ``y`` or None), in chunks of ``batch``."""
    n = x.shape[0]
    size = batch or n
    for p in module.parameters():
        p.requires_grad_(True)
    chunks: list[tuple[list[Site], Tensor, Tensor, list[Tensor | None], Tensor, list[Tensor]]] = []
    weights: list[nn.Parameter] = []
    out_w: nn.Parameter | None = None
    cost_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    for start in range(0, n, size):
        real = min(size, n - start)
        xb = x[start:start + real]
        if real < size:  # a static batch size: pad with copies, masked out of the cost
            xb = torch.cat([xb, x[:size - real]])
        with torch.enable_grad():
            sites, out, out_w = (_graph_forward if graph else _sequential_forward)(module, xb)  # type: ignore[arg-type]
            if not weights:
                seen: dict[int, nn.Parameter] = {}
                for s in sites:
                    if s.weight is not None:
                        seen.setdefault(id(s.weight), s.weight)
                if out_w is not None:
                    seen.setdefault(id(out_w), out_w)
                weights = list(seen.values())
            yb = y[start:start + real] if y is not None else None
            cost = per_example_cost(out[:real], yb).sum()
            grads = torch.autograd.grad(cost, [s.s for s in sites] + [out] + weights, allow_unused=True)
        k = len(sites)
        g_s = [torch.zeros_like(s.s) if g is None else g for s, g in zip(sites, grads[:k], strict=True)]
        cost_sum += cost.detach().double()
        chunks.append(([_detached(s, real) for s in sites], out.detach()[:real], grads[k][:real].detach(),
                       list(grads[k + 1:]), cost.detach(), [g[:real].detach() for g in g_s]))
    sites = []
    for i, s in enumerate(chunks[0][0]):
        s_all = torch.cat([c[0][i].s for c in chunks])
        z_all = s_all if s.role != "activation" else torch.cat([c[0][i].z for c in chunks])  # one tensor
        sites.append(Site(s.name, s.activation, s_all, z_all, s.weight,
                          torch.cat([c[0][i].z_in for c in chunks]) if s.z_in is not None else None, s.role))
    wgrad: dict[int, Tensor] = {}
    for j, w in enumerate(weights):
        parts = [c[3][j] for c in chunks if c[3][j] is not None]
        if parts:
            wgrad[id(w)] = torch.stack(parts).sum(0) / n
    return RawCapture(
        sites=sites,
        grad_s=[torch.cat([c[5][i] for c in chunks]) for i in range(len(sites))],
        weight_grads=[wgrad.get(id(s.weight)) if s.weight is not None else None for s in sites],
        output=torch.cat([c[1] for c in chunks]), grad_output=torch.cat([c[2] for c in chunks]),
        cost_sum=cost_sum, output_weight=out_w,
        output_weight_grad=wgrad.get(id(out_w)) if out_w is not None else None,
    )


def _detached(site: Site, rows: int) -> Site:
    return Site(site.name, site.activation, site.s.detach()[:rows], site.z.detach()[:rows], site.weight,
                site.z_in.detach()[:rows] if site.z_in is not None else None, site.role)
