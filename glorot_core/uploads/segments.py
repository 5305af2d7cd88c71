"""Pieces of an uploaded network's graph as functions of one tensor: what per-example Jacobians differentiate.

A model is seen as a ``torch.fx`` graph: an exported program's own module (``program.module()``), or a
described ``nn.Sequential`` traced symbolically (its activation and norm modules are then
``call_module`` nodes named by module path, the probe points' names). :class:`GraphView` finds in it
the nodes the Jacobians join: each probe point's z (found as the capture finds it,
``glorot_core.uploads.probe_points``), the input (for token models: the embedding output instead,
since token ids have no derivative) and the output (the logits).

A :class:`Segment` from node A to node B is g(z) = the value of B when A's value is replaced by z and
every node *not downstream of A* keeps the value it had in a recorded forward pass (:func:`record`):
in a residual network the skip path around a block, a position embedding or a norm's statistics
computed upstream stay fixed, which is what ∂B/∂A means. Only the nodes downstream of A that B
depends on are re-run, node by node (a ``torch.fx.Interpreter``), so g is made of the graph's own ops
and torch.func's ``jvp`` / ``vjp`` / ``vmap`` apply to it.

Per example: g maps a whole chunk of examples (rows) at once. In eval mode examples do not interact,
so row b of g's output depends on row b of its input only and g's Jacobian is block diagonal: one
Jacobian-vector product of the chunk gives every example's J_b v_b at once (the chunk keeps the batch
size a program was traced with, which its reshapes may hard-code). A model whose examples interact
(batch norm in training mode, a batch-level op) breaks this; uploaded models are diagnosed in eval
mode, and an exported program should be exported in eval mode (docs/uploads.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from glorot_core.uploads.probe_points import graph_probe_sites, module_role

Tensor = torch.Tensor
Node = fx.Node


def _op_name(node: Node) -> str:
    return getattr(getattr(node.target, "_overloadpacket", None), "__name__", "")


def _is_guard(node: Node) -> bool:
    return node.op == "call_module" and str(node.target).startswith("_guards")


@dataclass(frozen=True)
class GraphView:
    """An uploaded model as a graph: ``gm``, its user ``input`` placeholder, the node of its ``output``
    (the logits; None when the output is not one tensor), ``points`` (probe-point name → the node whose
    value is that point's z) and, for integer (token) inputs, ``embedding``: the first embedding
    look-up of the input (None otherwise)."""

    gm: fx.GraphModule
    input: Node
    output: Node | None
    points: dict[str, Node]
    embedding: Node | None

    @property
    def source(self) -> Node:
        """Where the end-to-end Jacobian starts: the embedding output for token inputs, else the input."""
        return self.embedding if self.embedding is not None else self.input


def graph_view(module: nn.Module, *, exported: bool) -> GraphView:
    """The graph of a loaded model (an exported program's module, or a described ``nn.Sequential``)."""
    if exported:
        gm = module
        assert isinstance(gm, fx.GraphModule)
        points = {a.name: a.last for a in graph_probe_sites(gm.graph)}
    else:
        gm = fx.symbolic_trace(module)
        modules = dict(module.named_modules())
        points = {str(n.target): n for n in gm.graph.nodes
                  if n.op == "call_module" and str(n.target) in modules and module_role(modules[str(n.target)])[0]}
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    while isinstance(out, (tuple, list)) and len(out) == 1:
        out = out[0]
    return GraphView(gm, placeholders[0], out if isinstance(out, Node) else None, points,
                     _embedding_of(gm, placeholders[0]))


def _embedding_of(gm: fx.GraphModule, inp: Node) -> Node | None:
    """The first embedding look-up (``aten.embedding`` or an ``nn.Embedding`` module) indexed by values
    derived from the input alone: the start of a token model's differentiable part."""
    derived = downstream(inp)
    for n in gm.graph.nodes:
        if n.op == "call_function" and _op_name(n) == "embedding" and len(n.args) > 1 and n.args[1] in derived:
            return n
        if n.op == "call_module" and isinstance(gm.get_submodule(str(n.target)), nn.Embedding) \
                and n.args and n.args[0] in derived:
            return n
    return None


def downstream(node: Node) -> set[Node]:
    """``node`` and every node that uses its value, directly or not (shape guards excluded)."""
    seen, todo = {node}, [node]
    while todo:
        for user in todo.pop().users:
            if user not in seen and not _is_guard(user):
                seen.add(user)
                todo.append(user)
    return seen


def upstream(node: Node) -> set[Node]:
    """``node`` and every node its value depends on."""
    seen, todo = {node}, [node]
    while todo:
        for arg in todo.pop().all_input_nodes:
            if arg not in seen:
                seen.add(arg)
                todo.append(arg)
    return seen


class _Runner(fx.Interpreter):
    """Runs chosen nodes of a graph on values held in ``env`` (recorded or substituted)."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm, garbage_collect_values=False)


class Segment:
    """g(z): the value of ``end`` with ``start``'s value replaced by z (module docstring).

    ``nodes`` are those re-run, in graph order; ``inputs`` the other values they read (recorded once per
    chunk of examples); ``depth`` the number of ops re-run (for the rounding allowance of the bounds).
    """

    def __init__(self, gm: fx.GraphModule, start: Node, end: Node) -> None:
        self.gm, self.start, self.end = gm, start, end
        below, above = downstream(start), upstream(end)
        self.connected = end in below and end is not start
        self.nodes = [n for n in gm.graph.nodes if n in below and n in above and n is not start]
        inside = set(self.nodes) | {start}
        self.inputs = {a for n in self.nodes for a in n.all_input_nodes if a not in inside}
        self.depth = len(self.nodes)
        self._runner = _Runner(gm)

    def bind(self, values: dict[Node, Any]) -> Callable[[Tensor], Tensor]:
        """g for one chunk of examples, the values it holds fixed taken from ``values`` (:func:`record`)."""
        fixed = {n: values[n] for n in self.inputs}
        runner, nodes, start, end = self._runner, self.nodes, self.start, self.end

        def g(z: Tensor) -> Tensor:
            runner.env = dict(fixed)
            runner.env[start] = z
            for n in nodes:
                runner.env[n] = runner.run_node(n)
            out = runner.env[end]
            runner.env = {}
            return out

        return g


class _Recorder(fx.Interpreter):
    """One forward pass keeping the values of the nodes asked for (shape guards skipped)."""

    def __init__(self, gm: fx.GraphModule, wanted: set[Node]) -> None:
        super().__init__(gm)
        self.wanted: set[Node] = wanted
        self.values: dict[Node, Any] = {}

    def run_node(self, n: Node) -> Any:
        if _is_guard(n):
            return None
        out = super().run_node(n)
        if n in self.wanted:
            self.values[n] = out.detach() if isinstance(out, Tensor) else out
        return out


@torch.no_grad()
def record(view: GraphView, x: Tensor, segments: Iterable[Segment]) -> dict[Node, Any]:
    """One forward pass of ``x`` keeping every value the ``segments`` read, start from or end at."""
    wanted: set[Node] = set()
    for s in segments:
        wanted |= s.inputs | {s.start, s.end}
    rec = _Recorder(view.gm, wanted)
    placeholders = [n for n in view.gm.graph.nodes if n.op == "placeholder"]
    rec.run(*([x] + [None] * (len(placeholders) - 1)))
    return rec.values
