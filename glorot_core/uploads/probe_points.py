"""Where the instruments can look in an uploaded model: its probe points, named as the user knows them.

Each probe point has a ``role``: ``activation`` (s is an activation's input, z its output), or a block
output — ``residual`` (a residual sum) or ``norm`` (a normalisation's output) — where there is no
activation: s and z are the same tensor and the ``activation`` is ``"none"``.

* A described (``nn.Sequential``) network: after each activation module and each normalisation module
  (batchnorm), named by its module path (``"1"``, ``"3"``: the index in the Sequential), with the
  per-example shape of its output, found by one forward pass of a single zero example.
* An exported graph: each activation, named by the module path the graph keeps in
  ``node.meta["nn_module_stack"]``. An activation *module* (``nn.Tanh``, ``nn.GELU``, ``nn.Softsign``
  whose graph is ``abs, add, div``) is one probe point at its last node; an activation *op* called
  inside another module (``F.gelu`` in ``blocks.2.mlp``) is one named ``blocks.2.mlp.gelu``; an
  activation written out by hand (GPT-2's tanh-form GELU, ``x / (1 + |x|)``) is recognised by what
  it computes (``glorot_core.uploads.decomposed``) and named like a module (its module holds nothing
  else) or like an op. Block outputs — residual sums and norm outputs — are found by
  ``glorot_core.uploads.block_outputs`` (``blocks.2`` for the sum closing block 2, ``blocks.2.ln1``).
  Points are listed in forward order (graph order of the node that computes z).

The same ``nn.Sequential`` therefore gives the same list whether it arrives as weights or as a graph.
``kind`` says how the instruments pool (``dense``: units; ``conv``: channels × height × width;
``sequence``: tokens × features; ``tensor`` otherwise); ``activation`` names the function.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from glorot_core.uploads.activations import NO_ACTIVATION
from glorot_core.uploads.block_outputs import NORM_MODULES, find_block_outputs, module_of
from glorot_core.uploads.decomposed import find_decomposed, op_name

#: Activation modules and the activation name they carry.
MODULE_ACTIVATIONS: dict[type[nn.Module], str] = {
    nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.Softsign: "softsign", nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu",
    nn.Identity: "linear", nn.GELU: "gelu", nn.SiLU: "silu", nn.ELU: "elu", nn.Softplus: "softplus",
    nn.Hardtanh: "hardtanh", nn.Mish: "mish", nn.ReLU6: "relu6", nn.Hardswish: "hardswish",
}
#: The roles of a probe point (module docstring).
ROLES: tuple[str, ...] = ("activation", "residual", "norm")
#: Fully qualified class names of the same modules, as ``nn_module_stack`` records them.
_QUALNAME_ACTIVATIONS = {f"{cls.__module__}.{cls.__qualname__}": name for cls, name in MODULE_ACTIVATIONS.items()
                         if cls is not nn.Identity}
#: ATen activation ops (the overload packet's name) and their activation names.
_OP_ACTIVATIONS = {
    "tanh": "tanh", "sigmoid": "sigmoid", "relu": "relu", "gelu": "gelu", "silu": "silu",
    "leaky_relu": "leaky_relu", "elu": "elu", "softplus": "softplus", "hardtanh": "hardtanh", "mish": "mish",
    "relu6": "relu6", "hardswish": "hardswish", "tanh_": "tanh", "relu_": "relu", "sigmoid_": "sigmoid",
}


@dataclass(frozen=True)
class ProbePointInfo:
    """A probe point as the upload response lists it; ``role`` is one of :data:`ROLES`."""

    name: str
    kind: str
    shape: tuple[int, ...]
    activation: str
    role: str = "activation"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


def kind_of(shape: tuple[int, ...]) -> str:
    """How a per-example shape is pooled (module docstring)."""
    return {1: "dense", 2: "sequence", 3: "conv"}.get(len(shape), "tensor")


def module_role(module: nn.Module) -> tuple[str | None, str]:
    """(role, activation) of a described network's module: an activation module, a norm module
    (activation ``"none"``), or (None, "") for any other module."""
    act = MODULE_ACTIVATIONS.get(type(module))
    if act is not None:
        return "activation", act
    if isinstance(module, NORM_MODULES):
        return "norm", NO_ACTIVATION
    return None, ""


def sequential_probe_points(net: nn.Module, input_shape: tuple[int, ...], dtype: torch.dtype) -> list[ProbePointInfo]:
    """After each activation and norm module of ``net``, in call order, with its output's per-example
    shape."""
    found: list[ProbePointInfo] = []
    hooks = []
    for name, module in net.named_modules():
        role, act = module_role(module)
        if role is None or not name:
            continue

        def hook(_m: nn.Module, _i: Any, out: torch.Tensor, name: str = name, act: str = act,
                 role: str = role) -> None:
            shape = tuple(out.shape[1:])
            found.append(ProbePointInfo(name, kind_of(shape), shape, act, role))

        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            net.eval()(torch.zeros((1, *input_shape), dtype=dtype))
    except RuntimeError as e:
        from glorot_core.uploads.errors import UploadRefused

        raise UploadRefused(422, "input-mismatch", f"the network does not run on inputs of shape "
                            f"{list(input_shape)}: {str(e).splitlines()[0][:300]}") from None
    finally:
        for h in hooks:
            h.remove()
    return found


@dataclass(frozen=True)
class GraphActivation:
    """A probe point of a graph: its ``name`` and ``activation``, the node whose input is s (``first``:
    the activation op, or the first node of an activation module) and the node whose output is z.

    ``role`` is ``activation``, ``residual`` or ``norm``; ``s_node``, when set, is the node whose output
    is s (a hand-written activation's x; for a block output the same node as ``last``): use
    :attr:`input_node`, which falls back to ``first``'s input."""

    name: str
    activation: str
    first: torch.fx.Node
    last: torch.fx.Node
    role: str = "activation"
    s_node: torch.fx.Node | None = None

    @property
    def input_node(self) -> torch.fx.Node:
        """The node whose output is s."""
        if self.s_node is not None:
            return self.s_node
        s = self.first.args[0]
        assert isinstance(s, torch.fx.Node)
        return s


def _op_activation(node: torch.fx.Node) -> str | None:
    """The activation an ATen op node computes, if it is one (``gelu_tanh`` for tanh-approximate gelu)."""
    op = op_name(node)
    act = _OP_ACTIVATIONS.get(op)
    if act == "gelu" and (node.kwargs.get("approximate") == "tanh" or node.args[1:2] == ("tanh",)):
        return "gelu_tanh"
    return act


def graph_probe_sites(graph: torch.fx.Graph) -> list[GraphActivation]:
    """Every probe point of an exported graph, activations and block outputs, in forward order, named
    by module path (module docstring); a name met twice gets ``:1``, ``:2``, … after the first."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    found: list[GraphActivation] = []  # later nodes of a module win as its output
    module_index: dict[str, int] = {}
    claimed: set[torch.fx.Node] = set()
    for node in graph.nodes:  # activation modules
        inner = module_of(node) if node.op == "call_function" else None
        if inner is None or inner[1] not in _QUALNAME_ACTIVATIONS:
            continue
        claimed.add(node)
        path = inner[0]
        if path in module_index:
            prev = found[module_index[path]]
            found[module_index[path]] = GraphActivation(path, prev.activation, prev.first, node)
        else:
            act = _QUALNAME_ACTIVATIONS[inner[1]]
            if act == "gelu":
                act = _op_activation(node) or act
            module_index[path] = len(found)
            found.append(GraphActivation(path, act, node, node))
    module_nodes: dict[str, list[torch.fx.Node]] = {}
    for node in graph.nodes:
        inner = module_of(node) if node.op == "call_function" else None
        if inner is not None:
            module_nodes.setdefault(inner[0], []).append(node)
    for d in find_decomposed(graph, claimed):  # activations written out by hand
        first = min(d.region, key=order.__getitem__)
        inner = module_of(d.out)
        if inner is None:
            name = d.activation
        elif all(n in d.region for n in module_nodes.get(inner[0], [])):
            name = inner[0]
        else:
            name = f"{inner[0]}.{d.activation}"
        found.append(GraphActivation(name, d.activation, first, d.out, s_node=d.x))
    for node in graph.nodes:  # activation ops
        if node.op != "call_function" or node in claimed:
            continue
        act = _op_activation(node)
        if act is None:
            continue
        claimed.add(node)
        inner = module_of(node)
        op = op_name(node).rstrip("_")
        found.append(GraphActivation(f"{inner[0]}.{op}" if inner is not None else op, act, node, node))
    for b in find_block_outputs(graph, claimed):
        found.append(GraphActivation(b.name, NO_ACTIVATION, b.node, b.node, b.role, b.node))
    found.sort(key=lambda g: order[g.last])
    seen: dict[str, int] = {}
    out = []
    for g in found:
        n = seen.get(g.name, 0)
        seen[g.name] = n + 1
        out.append(g if n == 0 else GraphActivation(f"{g.name}:{n}", g.activation, g.first, g.last, g.role,
                                                    g.s_node))
    return out


def graph_activations(graph: torch.fx.Graph) -> list[GraphActivation]:
    """The activation probe points of an exported graph (role ``activation``), named by module path."""
    return [g for g in graph_probe_sites(graph) if g.role == "activation"]


def graph_probe_points(graph: torch.fx.Graph) -> list[ProbePointInfo]:
    """Every probe point of an exported graph as the upload response lists it."""
    points: list[ProbePointInfo] = []
    for g in graph_probe_sites(graph):
        val = g.last.meta.get("val")
        shape = tuple(int(d) for d in val.shape[1:]) if isinstance(val, torch.Tensor) else ()
        points.append(ProbePointInfo(g.name, kind_of(shape), shape, g.activation, g.role))
    return points
