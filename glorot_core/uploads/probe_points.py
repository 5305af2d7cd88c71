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
_MODULE_ACTIVATIONS: dict[type[nn.Module], str] = {
    nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.Softsign: "softsign", nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu",
    nn.Identity: "linear", nn.GELU: "gelu", nn.SiLU: "silu", nn.ELU: "elu", nn.Softplus: "softplus",
    nn.Hardtanh: "hardtanh", nn.Mish: "mish", nn.ReLU6: "relu6", nn.Hardswish: "hardswish",
}
#: Fully qualified class names of the same modules, as ``nn_module_stack`` records them.
_QUALNAME_ACTIVATIONS = {f"{cls.__module__}.{cls.__qualname__}": name for cls, name in _MODULE_ACTIVATIONS.items()
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
        act = _MODULE_ACTIVATIONS.get(type(module))
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


def graph_probe_points(graph: torch.fx.Graph) -> list[ProbePointInfo]:
    """The activation nodes of an exported graph, named by module path (module docstring)."""
    found: list[tuple[str, str, torch.fx.Node]] = []  # (name, activation, node), later nodes of a module win
    module_index: dict[str, int] = {}
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        inner = _innermost(node)
        if inner is not None and inner[1] in _QUALNAME_ACTIVATIONS:
            path = inner[0]
            entry = (path, _QUALNAME_ACTIVATIONS[inner[1]], node)
            if path in module_index:
                found[module_index[path]] = entry  # the module's output is its last node
            else:
                module_index[path] = len(found)
                found.append(entry)
            continue
        packet = getattr(node.target, "_overloadpacket", None)
        op = getattr(packet, "__name__", "")
        if op in _OP_ACTIVATIONS:
            prefix = inner[0] if inner is not None else ""
            found.append((f"{prefix}.{op.rstrip('_')}" if prefix else op.rstrip("_"), _OP_ACTIVATIONS[op], node))
    points: list[ProbePointInfo] = []
    seen: dict[str, int] = {}
    for name, act, node in found:
        val = node.meta.get("val")
        shape = tuple(int(d) for d in val.shape[1:]) if isinstance(val, torch.Tensor) else ()
        n = seen.get(name, 0)
        seen[name] = n + 1
        points.append(ProbePointInfo(name if n == 0 else f"{name}:{n}", kind_of(shape), shape, act))
    return points
