"""Activations written out as elementwise ops in an exported graph, found by what they compute.

A model may write its activation by hand instead of calling one op: GPT-2's GELU
``0.5·x·(1 + tanh(√(2/π)(x + 0.044715·x³)))``, the erf form ``0.5·x·(1 + erf(x/√2))``, softsign
``x / (1 + |x|)``, SiLU ``x·sigmoid(x)``, mish ``x·tanh(softplus(x))``, sigmoid ``1 / (1 + exp(−x))``.
The graph then holds a handful of pointwise ATen ops (``mul``, ``pow``, ``add``, ``tanh``, …), none of
them the activation. They are recognised without knowing how the formula was written:

1. a *seed* op (``tanh``, ``erf``, ``abs``, ``sigmoid``, ``exp``) is the non-linear core;
2. its input x is an ancestor such that the seed is a function of x alone: every node between them is a
   pointwise op whose other arguments are numbers (or again functions of x alone);
3. the region grows forward from the seed through such ops (``1 + t``, ``·0.5x``), and every node of
   the region but its last is used only inside the region (the formula is self-contained);
4. the region is evaluated on a grid of x values and compared with each known function: a match within
   ``TOLERANCE`` (far below the 4.7e-4 that separates GELU's tanh form from its erf form) names it.

The largest matching region around a seed wins, so ``x·sigmoid(x)`` is one SiLU, not a sigmoid.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Node = torch.fx.Node
Tensor = torch.Tensor

#: The functions a region may compute, by activation name (``glorot_core.uploads.activations``).
TARGETS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "softsign": lambda x: x / (1 + x.abs()),
    "silu": F.silu,
    "mish": F.mish,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
}
#: Overload-packet names of the non-linear cores the search starts from.
SEEDS = frozenset({"tanh", "erf", "abs", "sigmoid", "exp"})
#: Largest distance |region(x) − f(x)| / (1 + |f(x)|) on the grid that counts as the same function.
TOLERANCE = 5e-5
_GRID = torch.cat([torch.linspace(-8.0, 8.0, 321), torch.tensor([-1e-3, 1e-3, 0.5, -0.5])])
_MAX_DEPTH = 8  # nodes between x and the seed, and forward steps after it: a formula is a few ops


@dataclass(frozen=True)
class DecomposedActivation:
    """One hand-written activation: its name, its input node x (s) and the node computing f(x) (z),
    and the region of pointwise nodes between them."""

    activation: str
    x: Node
    out: Node
    region: frozenset[Node]


def op_name(node: Node) -> str:
    """The ATen overload packet's name of a ``call_function`` node (``"add"`` for ``aten.add.Tensor``)."""
    return getattr(getattr(node.target, "_overloadpacket", None), "__name__", "")


def is_pointwise(node: object) -> bool:
    """Whether ``node`` is an elementwise ATen op (its ``pointwise`` tag)."""
    return (isinstance(node, Node) and node.op == "call_function"
            and torch.Tag.pointwise in getattr(node.target, "tags", ()))


def tensor_args(node: Node) -> list[Node]:
    """The nodes among ``node``'s arguments (numbers and shapes are not nodes)."""
    out: list[Node] = []
    torch.fx.node.map_arg((node.args, node.kwargs), out.append)
    return out


def find_decomposed(graph: torch.fx.Graph, claimed: set[Node]) -> list[DecomposedActivation]:
    """Every hand-written activation of ``graph`` whose nodes are not in ``claimed`` (module docstring),
    in graph order; the regions found are added to ``claimed``."""
    found: list[DecomposedActivation] = []
    order = {n: i for i, n in enumerate(graph.nodes)}
    for seed in graph.nodes:
        if seed in claimed or not is_pointwise(seed) or op_name(seed) not in SEEDS:
            continue
        best: DecomposedActivation | None = None
        for x in _candidate_inputs(seed):
            pure: set[Node] = set()
            if not _function_of(seed, x, pure, _MAX_DEPTH):
                continue
            for out in _forward(seed, x, pure, _MAX_DEPTH // 2):
                region = _region(out, x)
                if region is None or len(region) < 2 or (best is not None and len(region) <= len(best.region)):
                    continue
                if region & claimed or not _self_contained(region, out):
                    continue
                name = _identify(sorted(region, key=order.__getitem__), x, out)
                if name is not None:
                    best = DecomposedActivation(name, x, out, frozenset(region))
        if best is not None:
            claimed |= best.region
            found.append(best)
    return found


def _candidate_inputs(seed: Node) -> Iterator[Node]:
    """Ancestors of ``seed`` through pointwise ops, nearest first: the possible x of its formula."""
    seen: set[Node] = set()
    frontier = tensor_args(seed)
    for _ in range(_MAX_DEPTH):
        nxt: list[Node] = []
        for n in frontier:
            if n in seen:
                continue
            seen.add(n)
            yield n
            if is_pointwise(n):
                nxt.extend(tensor_args(n))
        frontier = nxt


def _function_of(node: Node, x: Node, pure: set[Node], depth: int) -> bool:
    """Whether ``node`` is computed from ``x`` alone by pointwise ops; such nodes are added to ``pure``."""
    if node is x or node in pure:
        return True
    if depth <= 0 or not is_pointwise(node):
        return False
    args = tensor_args(node)
    if not args or not all(_function_of(a, x, pure, depth - 1) for a in args):
        return False
    pure.add(node)
    return True


def _forward(seed: Node, x: Node, pure: set[Node], steps: int) -> Iterator[Node]:
    """``seed`` and the nodes reached from it by up to ``steps`` pointwise ops that are functions of x."""
    yield seed
    frontier = [seed]
    for _ in range(steps):
        nxt = [u for n in frontier for u in n.users if _function_of(u, x, pure, _MAX_DEPTH)]
        yield from nxt
        frontier = nxt


def _region(out: Node, x: Node) -> set[Node] | None:
    """The nodes between ``x`` and ``out`` (``out`` included, ``x`` not)."""
    region: set[Node] = set()
    stack = [out]
    while stack:
        n = stack.pop()
        if n is x or n in region:
            continue
        if not is_pointwise(n):
            return None
        region.add(n)
        stack.extend(tensor_args(n))
    return region


def _self_contained(region: set[Node], out: Node) -> bool:
    return all(u in region for n in region if n is not out for u in n.users)


@functools.cache
def _references() -> dict[str, Tensor]:
    """Every target's values on the grid, computed once."""
    with torch.no_grad():
        return {name: f(_GRID) for name, f in TARGETS.items()}


def _identify(region: list[Node], x: Node, out: Node) -> str | None:
    """The name of the target the region (its nodes in graph order) computes on the grid, or None."""
    env: dict[Node, object] = {x: _GRID.clone()}
    try:
        with torch.no_grad():
            for n in region:
                args, kwargs = torch.fx.node.map_arg((n.args, n.kwargs), env.__getitem__)
                env[n] = n.target(*args, **kwargs)  # type: ignore[operator]
    except Exception:  # an op that does not take a 1-d float grid is no activation of x
        return None
    value = env[out]
    if not isinstance(value, Tensor) or value.shape != _GRID.shape or not value.is_floating_point():
        return None
    for name, ref in _references().items():
        if bool((((value.float() - ref).abs()) / (1 + ref.abs()) <= TOLERANCE).all()):
            return name
    return None


