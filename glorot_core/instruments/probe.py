"""Probe points: the places in a network where the instruments look, and what they see there.

A **probe point** is a place where a layer's pre-activation s, its activation z = f(s) and their
gradients can be observed. Today these are the MLP's hidden layers (``mlp_probe_points``); a CNN's
layers (pooled per channel) and the activation nodes of an uploaded ``torch.export`` graph (named by
module path) are the next sources. An instrument never asks where a probe point comes from: it reads
a :class:`Capture`, the tensors seen there at one snapshot, and the point's static description.

Shapes: every captured tensor is ``(examples, *point.shape)``. ``point.pooled`` names the axes a
statistic pools over (all of them for the MLP's scalar statistics: every monitor example and every
unit; a convolution will also pool ``height`` and ``width`` and keep ``channels`` apart).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch

from glorot_core.activations import Activation

Tensor = torch.Tensor


@dataclass(frozen=True)
class ProbePoint:
    """Where a layer is observed: its 1-based ``index`` in the report, ``name``, ``kind`` and ``shape``.

    ``shape`` is the per-example shape of s and z (``(units,)`` for a dense layer); ``pooled`` names
    the axes of ``(examples, *shape)`` that per-layer statistics pool over; ``activation`` is f.
    ``fan_in`` / ``fan_out`` describe the weights feeding this point and fed by it (None where the
    point has no such weight). ``role`` is ``activation`` (s is f's input, z its output) or, for an
    uploaded model's block outputs, ``residual`` / ``norm`` (no activation: s and z are one tensor,
    and saturation has no rule there).
    """

    index: int
    name: str
    kind: str
    shape: tuple[int, ...]
    pooled: tuple[str, ...]
    activation: Activation
    fan_in: int | None = None
    fan_out: int | None = None
    role: str = "activation"

    def describe(self) -> dict[str, Any]:
        """The point as the report's ``layers`` list and the upload API describe it."""
        units = 1
        for n in self.shape:
            units *= n
        return {"index": self.index, "name": self.name, "kind": self.kind, "shape": list(self.shape),
                "pooled": list(self.pooled), "units": units, "activation": self.activation.name,
                "fan_in": self.fan_in, "fan_out": self.fan_out, "role": self.role}


def mlp_probe_points(widths: list[int], activation: Activation) -> list[ProbePoint]:
    """One probe point per hidden layer i = 1..L of the MLP ``widths[0] → … → widths[-1]``."""
    return [
        ProbePoint(index=i, name=f"hidden{i}", kind="dense", shape=(widths[i],), pooled=("examples", "units"),
                   activation=activation, fan_in=widths[i - 1], fan_out=widths[i + 1])
        for i in range(1, len(widths) - 1)
    ]


@dataclass
class Capture:
    """What one probe point shows at one snapshot, on the monitor set, as device tensors.

    * ``s``: pre-activation, ``z``: activation f(s), both ``(examples, *shape)``;
    * ``grad_s``: ∂C/∂s with the cost C **summed** over the monitor examples, so row n is example n's
      own back-propagated gradient (paper eq. 6's quantity);
    * ``z_in``: the input of the weight feeding s (z_{i-1}; the data x for layer 1) and ``weight`` that
      weight in torch's ``(fan_out, fan_in)`` layout, or None where s is not fed by one weight.

    ``weight_grad`` (∂C/∂W of the *mean* cost) is computed on first use and kept, so instruments that
    need it share one GEMM and the others cost nothing.
    """

    point: ProbePoint
    s: Tensor
    z: Tensor
    grad_s: Tensor
    z_in: Tensor | None = None
    weight: Tensor | None = None

    @property
    def examples(self) -> int:
        return int(self.z.shape[0])

    @property
    def weight_grad_factors(self) -> tuple[Tensor, Tensor] | None:
        """(∂C/∂s, z_in) where ∂C/∂W of the mean cost is (∂C/∂s)ᵀ z_in / n (one dense weight fed by
        z_in), so that its summary need not form it (``instruments.mean_cost``); None otherwise."""
        if self.z_in is None or self.weight is None:
            return None
        return self.grad_s, self.z_in

    @cached_property
    def weight_grad(self) -> Tensor | None:
        """∂C/∂W of the mean cost: (∂C/∂s)ᵀ z_in / n as one GEMM, the 1/n folded in (``alpha``)."""
        if self.z_in is None or self.weight is None:
            return None
        return weight_gradient(self.grad_s, self.z_in)


def weight_gradient(grad_s: Tensor, z_in: Tensor) -> Tensor:
    """(∂C/∂s)ᵀ z_in / n for a cost summed over the n rows: the weight gradient of the mean cost."""
    g = grad_s.reshape(grad_s.shape[0], -1)
    z = z_in.reshape(z_in.shape[0], -1)
    zero = torch.zeros((), dtype=g.dtype, device=g.device)
    return torch.addmm(zero, g.T, z, beta=0, alpha=1.0 / max(g.shape[0], 1))
