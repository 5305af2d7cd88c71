"""Moving a snapshot's device tensors to the host in one synchronisation.

Instruments return nested dicts/lists of tensors. ``to_host`` gathers every tensor, concatenates them
into one float64 buffer on the device, copies that buffer once, and rebuilds the tree with Python
numbers and lists: one host synchronisation per snapshot, whatever the number of instruments (unlike
TensorBoard's per-histogram host copies, one synchronisation each).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from glorot_core.json_numbers import float32_numbers


class HostNumbers(list):
    """A list already made of host numbers (a histogram's fixed edges): ``to_host`` passes it through
    whole, as a plain list, instead of visiting every element."""


_INT_KINDS = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool)
_FLOAT32_KINDS = (torch.float32, torch.float16, torch.bfloat16)
"""Written in float32's shortest round-trip form (``float32_numbers``), not as widened doubles."""


def to_host(tree: Any) -> Any:
    """Return ``tree`` with every tensor replaced by a Python number (0-d) or nested list."""
    tensors: list[torch.Tensor] = []
    _collect(tree, tensors)
    if not tensors:
        return tree
    flat, starts = _flatten(tensors)
    at = iter(starts)

    def rebuild(node: Any) -> Any:
        if isinstance(node, torch.Tensor):
            start = next(at)
            chunk = flat[start: start + node.numel()]
            if node.dtype in _FLOAT32_KINDS:
                values = float32_numbers(chunk)
            elif node.dtype in _INT_KINDS:
                values = chunk.astype(np.int64).tolist()  # counts: exact in the float64 buffer below 2^53
            else:
                values = chunk.tolist()
            if node.dim() == 0:
                return values[0]
            return _shape(values, node.shape)
        if isinstance(node, dict):
            return {k: rebuild(v) for k, v in node.items()}
        if isinstance(node, HostNumbers):
            return list(node)
        if isinstance(node, (list, tuple)):
            return [rebuild(v) for v in node]
        return node

    return rebuild(tree)


def _flatten(tensors: list[torch.Tensor]) -> tuple[Any, list[int]]:
    """One float64 host array holding every tensor, and where each one starts in it.

    Tensors are concatenated per dtype first and each group is converted once: a snapshot holds
    hundreds of small tensors, and a conversion per tensor costs more than the data it moves."""
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    where: list[tuple[torch.dtype, int]] = []
    sizes: dict[torch.dtype, int] = {}
    for t in tensors:
        members = groups.setdefault(t.dtype, [])
        where.append((t.dtype, sizes.get(t.dtype, 0)))
        sizes[t.dtype] = sizes.get(t.dtype, 0) + t.numel()
        members.append(t.detach().reshape(-1))
    base: dict[torch.dtype, int] = {}
    offset = 0
    for dtype in groups:
        base[dtype] = offset
        offset += sizes[dtype]
    flat = torch.cat([torch.cat(members).to(torch.float64) for members in groups.values()]).cpu().numpy()
    return flat, [base[dtype] + pos for dtype, pos in where]


def _collect(node: Any, out: list[torch.Tensor]) -> None:
    if isinstance(node, torch.Tensor):
        out.append(node)
    elif isinstance(node, dict):
        for v in node.values():
            _collect(v, out)
    elif isinstance(node, (list, tuple)) and not isinstance(node, HostNumbers):
        for v in node:
            _collect(v, out)


def _shape(values: list, shape: torch.Size) -> list:
    if len(shape) <= 1:
        return values
    step = len(values) // shape[0]
    return [_shape(values[i * step: (i + 1) * step], shape[1:]) for i in range(shape[0])]
