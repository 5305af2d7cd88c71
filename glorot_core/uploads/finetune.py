"""Fine-tuning an uploaded model: what the built-in training loop (``glorot_core.training.train``) needs
to drive a module it did not build.

The loop hands the model flat mini-batches ``(batch, features)`` and reads ``model.linears`` to name the
first layer with non-finite weights when a run diverges. :class:`FlatInputs` puts the uploaded module
behind that interface: it reshapes rows to the model's per-example input shape and dtype, runs a program
traced with a static batch size on chunks of that size (the last one padded with copies, whose outputs
are dropped), and lists as ``linears`` the weights feeding each probe point, then the output weight, so
a divergence names a probe-point index like the report's layers.

Training data (``glorot_core.diagnose_model``): a data set's own training stream when ``data`` is a data set,
otherwise the uploaded ``.npz``'s examples (every one of them, not only the monitor prefix), in a new
seeded permutation per epoch (seed ``train.seed``). The model stays in eval mode while it is trained:
dropout off and batch-norm running statistics as uploaded, so the training steps and the snapshots see
the same function.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

Tensor = torch.Tensor


class FlatInputs(nn.Module):
    """``module`` taking flat rows: reshaped to ``shape``/``dtype``, chunked to a static ``batch`` if any."""

    def __init__(self, module: nn.Module, shape: Sequence[int], dtype: torch.dtype, batch: int | None,
                 weights: Sequence[Tensor | None]) -> None:
        super().__init__()
        self.module = module
        self.shape, self.dtype, self.batch = tuple(shape), dtype, batch
        ref = next(module.parameters(), torch.zeros(0))
        empty = ref.new_zeros(0)  # on the parameters' device: the divergence check stacks one flag per weight
        # plain objects, not modules: the parameters stay registered once, through ``module``
        self.linears = [SimpleNamespace(weight=empty if w is None else w, bias=empty) for w in weights]

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], *self.shape).to(self.dtype)
        n = x.shape[0]
        if self.batch is None or n == self.batch:
            return self.module(x)
        outs = []
        for start in range(0, n, self.batch):
            real = min(self.batch, n - start)
            idx = torch.arange(start, start + self.batch, device=x.device) % n  # pad with copies
            outs.append(self.module(x[idx])[:real])
        return torch.cat(outs)


class ArrayStream:
    """Mini-batches cycling through ``(x, y)`` in a fresh seeded permutation per epoch; rows flattened."""

    def __init__(self, x: Tensor, y: Tensor, seed: int) -> None:
        self.x, self.y = x.reshape(x.shape[0], -1), y
        self.seed, self.epoch, self.offset = seed, 0, 0
        self.perm = self._permutation()

    def _permutation(self) -> Tensor:
        rng = np.random.default_rng([self.seed % (1 << 64), self.epoch])
        return torch.from_numpy(rng.permutation(self.x.shape[0]))

    def next_batch(self, n: int) -> tuple[Tensor, Tensor]:
        parts, need = [], n
        while need > 0:
            if self.offset == len(self.perm):
                self.epoch += 1
                self.perm, self.offset = self._permutation(), 0
            take = min(need, len(self.perm) - self.offset)
            parts.append(self.perm[self.offset:self.offset + take])
            self.offset += take
            need -= take
        idx = torch.cat(parts)
        return self.x[idx], self.y[idx]
