"""Block outputs of an exported graph: residual sums and normalisation outputs.

Probe points between the activations, where a deep network's signal is carried from block to block:

* **residual** — an ``add`` of two tensors of the output's own shape where one operand (the skip) is
  an ancestor of the other (the branch) through at least one op that is not elementwise: the sum
  ``h + F(h)`` that closes a residual block, ``F`` holding a linear map, a convolution, attention… An
  ``add`` inside a formula (``x + 0.044715·x³``) has only elementwise ops between its operands and is
  not one; a bias add or a positional embedding add has no ancestor operand.
  Residual blocks whose shortcut is itself a layer (a 1×1 convolution) have no such ancestor and are
  not recognised.
* **norm** — the output of ``layer_norm``, ``batch_norm``, ``group_norm``, ``rms_norm`` (and the
  ``native_*`` forms, whose first output is the normalised tensor).

Names follow the module paths of ``node.meta["nn_module_stack"]``: a norm module's output is named by
its path (``blocks.2.ln1``), a norm op called inside another module ``<path>.<op>``; a residual sum
that is the last node of its module's call — the output of the block — is named by the module's path
(``blocks.2``), one inside it (the sum after attention, before the MLP) ``<path>.add``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
from torch import nn

from glorot_core.uploads.decomposed import is_pointwise, op_name, tensor_args

Node = torch.fx.Node

#: Normalisation modules, whose outputs are norm probe points in a Sequential and in a graph.
NORM_MODULES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.RMSNorm)
_NORM_QUALNAMES = frozenset(f"{c.__module__}.{c.__qualname__}" for c in NORM_MODULES)
#: ATen normalisation ops (overload packet names).
NORM_OPS = frozenset({
    "layer_norm", "native_layer_norm", "batch_norm", "native_batch_norm", "_native_batch_norm_legit",
    "_native_batch_norm_legit_no_training", "group_norm", "native_group_norm", "rms_norm", "_fused_rms_norm",
})


@dataclass(frozen=True)
class BlockOutput:
    """A residual or norm probe point of a graph: its ``name``, ``role`` and the node whose output it is."""

    name: str
    role: str
    node: Node


def module_of(node: Node) -> tuple[str, str] | None:
    """(path, qualified class name) of the innermost module ``node`` was traced in, or None at top level
    (the model's own ``forward``, path ``""``)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return None
    path, cls = list(stack.values())[-1]
    if not path:
        return None
    return str(path), cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"


def find_block_outputs(graph: torch.fx.Graph, claimed: set[Node]) -> list[BlockOutput]:
    """The residual sums and norm outputs of ``graph`` not in ``claimed`` (module docstring), in graph
    order, before any deduplication of names."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    last_of: dict[str, int] = {}  # module path -> index of the last node traced inside it
    for n in graph.nodes:
        for path, _cls in (n.meta.get("nn_module_stack") or {}).values():
            last_of[str(path)] = order[n]
    found: list[BlockOutput] = []
    for node in graph.nodes:
        if node.op != "call_function" or node in claimed:
            continue
        op = op_name(node)
        inner = module_of(node)
        if op in NORM_OPS:
            out = _first_output(node)
            if out is not None:
                if inner is not None and inner[1] in _NORM_QUALNAMES:
                    name = inner[0]
                else:
                    name = f"{inner[0]}.{op.lstrip('_')}" if inner is not None else op.lstrip("_")
                found.append(BlockOutput(name, "norm", out))
        elif op in ("add", "add_") and _is_residual(node, order):
            found.append(BlockOutput(_residual_name(inner, last_of.get(inner[0]) == order[node] if inner else False),
                                     "residual", node))
    return found


def _residual_name(inner: tuple[str, str] | None, closes: bool) -> str:
    """``path`` for the sum that closes its module's call (the block's output), else ``path.add``."""
    if inner is None:
        return "add"
    return inner[0] if closes else f"{inner[0]}.add"


def _first_output(node: Node) -> Node | None:
    """The node holding a norm's normalised tensor: the node itself, or ``getitem(node, 0)`` for a tuple."""
    val = node.meta.get("val")
    if isinstance(val, torch.Tensor):
        return node
    return next((u for u in node.users if u.target is operator.getitem and u.args[1] == 0), None)


def _per_example(node: Node) -> tuple[int, ...] | None:
    val = node.meta.get("val")
    return tuple(val.shape) if isinstance(val, torch.Tensor) else None


def _is_residual(node: Node, order: dict[Node, int]) -> bool:
    args = tensor_args(node)
    if len(args) != 2 or len(node.args) < 2 or not all(isinstance(a, Node) for a in node.args[:2]):
        return False
    shape = _per_example(node)
    if shape is None or len(shape) < 2 or any(_per_example(a) != shape for a in args):
        return False
    a, b = args
    skip, branch = (a, b) if order[a] < order[b] else (b, a)  # an ancestor comes first in graph order
    if len(skip.users) < 2:  # an ancestor of the branch feeds it too: a bias or an embedding table does not
        return False
    return _skips_a_block(skip, branch, order)


def _skips_a_block(skip: Node, branch: Node, order: dict[Node, int]) -> bool:
    """Whether ``skip`` is an ancestor of ``branch`` along a path holding a non-elementwise op."""
    start = (branch, not is_pointwise(branch))
    seen = {start}
    stack = [start]
    floor = order[skip]
    while stack:
        n, through = stack.pop()
        for a in tensor_args(n):
            if a is skip:
                if through:
                    return True
                continue
            if order.get(a, -1) <= floor:
                continue
            state = (a, through or not is_pointwise(a))
            if state not in seen:
                seen.add(state)
                stack.append(state)
    return False
