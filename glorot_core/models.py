"""The paper's networks: an MLP of any depth and widths, with a softmax output (cost −log P(y|x)).

Indexing used everywhere in glorot (reports, Jacobians, verdicts): hidden layer i = 1..L has
pre-activation s_i = z_{i-1} W_i + b_i and output z_i = f(s_i), with z_0 = x. ``linears[i-1]`` holds
W_i; its torch weight has shape (n_i, n_{i-1}), i.e. it is W_iᵀ. The Jacobian between hidden layers i
and i+1 is J^i = ∂z_{i+1}/∂z_i = diag(f'(s_{i+1})) · linears[i].weight.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn

from glorot_core.activations import Activation, get_activation
from glorot_core.inits import initialize
from glorot_core.instruments.probe import ProbePoint, mlp_probe_points
from glorot_core.spec import ModelSpec


@dataclass
class Trace:
    """One forward pass with every hidden layer's pre-activation ``s`` and output ``z`` kept."""

    pre: list[torch.Tensor]
    post: list[torch.Tensor]
    logits: torch.Tensor


class MLP(nn.Module):
    """Fully connected network ``widths[0] → … → widths[-1]`` with one activation on every hidden layer."""

    def __init__(self, widths: list[int], activation: Activation) -> None:
        super().__init__()
        if len(widths) < 3:
            raise ValueError("an MLP needs an input, at least one hidden layer and an output")
        self.widths = list(widths)
        self.activation = activation
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))

    @property
    def hidden_layers(self) -> int:
        return len(self.linears) - 1

    def probe_points(self) -> list[ProbePoint]:
        """Where the instruments look: after each hidden layer's activation (s_i, z_i), i = 1..L."""
        return mlp_probe_points(self.widths, self.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.activation.fn
        for lin in self.linears[:-1]:
            x = f(lin(x))
        return self.linears[-1](x)

    def trace(self, x: torch.Tensor) -> Trace:
        """Forward pass keeping s_i and z_i of every hidden layer (for the instruments)."""
        f = self.activation.fn
        pre, post = [], []
        z = x
        for lin in self.linears[:-1]:
            s = lin(z)
            z = f(s)
            pre.append(s)
            post.append(z)
        return Trace(pre, post, self.linears[-1](z))


def build_mlp(spec: ModelSpec, *, seed: int = 0, init_data: torch.Tensor | None = None) -> tuple[MLP, dict]:
    """Build and initialise the MLP a spec describes; returns the model and the init record.

    ``init_data`` is the batch LSUV calibrates on (ignored by the other schemes).
    """
    act = get_activation(spec.activation)
    with torch.random.fork_rng(devices=[]):  # nn.Linear's default init must not consume the caller's RNG
        model = MLP(spec.widths, act)
    g = torch.Generator().manual_seed(seed)
    info = initialize(
        list(model.linears), spec.init, act, gain=spec.init_gain, bias=spec.bias_init, generator=g,
        data=init_data,
    )
    return model, info
