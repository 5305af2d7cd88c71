"""Where the instruments can look in an uploaded model: its probe points, named as the user knows them.

* A described (``nn.Sequential``) network: after each activation module, named by its module path
  (``"1"``, ``"3"``: the index in the Sequential), with the per-example shape of its output, found by
  one forward pass of a single zero example.
* An exported graph: each activation, named by the module path the graph keeps in
  ``node.meta["nn_module_stack"]``. An activation *module* (``nn.Tanh``, ``nn.GELU``, ``nn.Softsign``
  whose graph is ``abs, add, div``) is one probe point at its last node; an activation *op* called
  inside another module (``F.gelu`` in ``blocks.2.mlp``) is one named ``blocks.2.mlp.gelu``.

The same ``nn.Sequential`` therefore gives the same list whether it arrives as weights or as a graph.
``kind`` says how the instruments pool (``dense``: units; ``conv``: channels × height × width;
``sequence``: tokens × features; ``tensor`` otherwise); ``activation`` names the function.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

#: Activation modules and the activation name they carry.
MODULE_ACTIVATIONS: dict[type[nn.Module], str] = {
    nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.Softsign: "softsign", nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu",
    nn.Identity: "linear", nn.GELU: "gelu", nn.SiLU: "silu", nn.ELU: "elu", nn.Softplus: "softplus",
    nn.Hardtanh: "hardtanh", nn.Mish: "mish", nn.ReLU6: "relu6", nn.Hardswish: "hardswish",
}
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
    """A probe point as the upload response lists it."""

    name: str
    kind: str
    shape: tuple[int, ...]
    activation: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


def kind_of(shape: tuple[int, ...]) -> str:
    """How a per-example shape is pooled (module docstring)."""
    return {1: "dense", 2: "sequence", 3: "conv"}.get(len(shape), "tensor")


def sequential_probe_points(net: nn.Module, input_shape: tuple[int, ...], dtype: torch.dtype) -> list[ProbePointInfo]:
    """After each activation module of ``net``, in call order, with its output's per-example shape."""
    found: list[ProbePointInfo] = []
    hooks = []
    for name, module in net.named_modules():
        act = MODULE_ACTIVATIONS.get(type(module))
        if act is None or not name:
            continue

        def hook(_m: nn.Module, _i: Any, out: torch.Tensor, name: str = name, act: str = act) -> None:
            shape = tuple(out.shape[1:])
            found.append(ProbePointInfo(name, kind_of(shape), shape, act))

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


def _innermost(node: torch.fx.Node) -> tuple[str, str] | None:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return None
    path, cls = list(stack.values())[-1]
    return str(path), cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"


@dataclass(frozen=True)
class GraphActivation:
    """A probe point of a graph: its ``name`` and ``activation``, the node whose input is s (``first``:
    the activation op, or the first node of an activation module) and the node whose output is z."""

    name: str
    activation: str
    first: torch.fx.Node
    last: torch.fx.Node


def graph_activations(graph: torch.fx.Graph) -> list[GraphActivation]:
    """The activation nodes of an exported graph, named by module path (module docstring)."""
    found: list[GraphActivation] = []  # later nodes of a module win as its output
    module_index: dict[str, int] = {}
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        inner = _innermost(node)
        if inner is not None and inner[1] in _QUALNAME_ACTIVATIONS:
            path = inner[0]
            if path in module_index:
                prev = found[module_index[path]]
                found[module_index[path]] = GraphActivation(path, prev.activation, prev.first, node)
            else:
                module_index[path] = len(found)
                found.append(GraphActivation(path, _QUALNAME_ACTIVATIONS[inner[1]], node, node))
            continue
        packet = getattr(node.target, "_overloadpacket", None)
        op = getattr(packet, "__name__", "")
        if op in _OP_ACTIVATIONS:
            prefix = inner[0] if inner is not None else ""
            name = f"{prefix}.{op.rstrip('_')}" if prefix else op.rstrip("_")
            found.append(GraphActivation(name, _OP_ACTIVATIONS[op], node, node))
    seen: dict[str, int] = {}
    out = []
    for g in found:
        n = seen.get(g.name, 0)
        seen[g.name] = n + 1
        out.append(g if n == 0 else GraphActivation(f"{g.name}:{n}", g.activation, g.first, g.last))
    return out


def graph_probe_points(graph: torch.fx.Graph) -> list[ProbePointInfo]:
    """The activation nodes of an exported graph as the upload response lists them."""
    points: list[ProbePointInfo] = []
    for g in graph_activations(graph):
        val = g.last.meta.get("val")
        shape = tuple(int(d) for d in val.shape[1:]) if isinstance(val, torch.Tensor) else ()
        points.append(ProbePointInfo(g.name, kind_of(shape), shape, g.activation))
    return points
