"""The training loop: plain mini-batch SGD (paper §2.3: θ ← θ − ε·g, batch 10, no momentum), with a
snapshot at step 0 and every ``diagnostics.every`` updates.

The step itself is the same few PyTorch calls a plain loop makes; everything else is kept off it:
batches come in chunks already on the device, losses are kept as device tensors and checked for
divergence once per ``CHECK_EVERY`` steps (one host sync), and the clock is read once per step to
rate-limit the progress callback and the cancellation check.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from glorot_core.errors import Cancelled
from glorot_core.losses import Loss
from glorot_core.models import MLP
from glorot_core.progress import CancelCheck, Progress, ProgressCallback
from glorot_core.spec import TrainSpec

CHECK_EVERY = 50
"""Steps between divergence checks (each one host synchronisation)."""
CHUNK_STEPS = 200
CHUNK_EXAMPLES = 65_536
"""Mini-batches fetched from the data stream and moved to the device at once (at most 200, and at
most 65,536 examples, so large batches do not make huge chunks)."""
CALLBACK_INTERVAL_S = 0.25
"""Minimum seconds between progress callbacks and cancellation checks."""
DIVERGENCE_LOSS = 1e4
"""A mini-batch cost above this (or non-finite) ends the run as diverged: −log P is ≈2.2 at chance
for 9 classes, so 1e4 means logits thousands apart, from which SGD does not come back."""


@dataclass
class Divergence:
    step: int
    reason: str
    loss: float
    layer: int | None


@dataclass
class TrainResult:
    steps_done: int
    divergence: Divergence | None = None
    snapshots: list[Any] = field(default_factory=list)


class _Throttle:
    """Calls ``progress`` and ``should_cancel`` at most every CALLBACK_INTERVAL_S seconds."""

    def __init__(self, progress: ProgressCallback | None, should_cancel: CancelCheck | None) -> None:
        self.progress, self.should_cancel = progress, should_cancel
        self.last = -math.inf

    def due(self) -> bool:
        return time.monotonic() - self.last >= CALLBACK_INTERVAL_S

    def tick(self, p: Progress, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < CALLBACK_INTERVAL_S:
            return
        self.last = now
        if self.should_cancel is not None and self.should_cancel():
            raise Cancelled(f"cancelled at step {p.step}")
        if self.progress is not None:
            self.progress(p)


def first_nonfinite_layer(model: MLP) -> int | None:
    """1-based index of the first layer whose weights or biases are not all finite (L+1 = output)."""
    flags = torch.stack([
        ~(torch.isfinite(lin.weight).all() & torch.isfinite(lin.bias).all()) for lin in model.linears
    ]).tolist()
    return next((i + 1 for i, bad in enumerate(flags) if bad), None)


def train(
    model: MLP,
    next_batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    spec: TrainSpec,
    loss_fn: Loss,
    *,
    every: int,
    snapshot: Callable[[int, torch.Tensor | None], Any],
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> TrainResult:
    """Train ``model`` for ``spec.steps`` updates; ``snapshot(step, train_loss)`` at 0 and every ``every``.

    ``train_loss`` is the mean mini-batch cost since the previous snapshot as a 0-d device tensor (None
    at step 0), so the snapshot moves it to the host together with everything else it measures.
    Divergence does not raise: the result says at which step and in which layer.
    """
    device = next(model.parameters()).device
    total = spec.steps
    throttle = _Throttle(progress, should_cancel)
    throttle.tick(Progress(0.0, 0, total, "diagnose", "snapshot at initialisation"), force=True)
    result = TrainResult(steps_done=0)
    result.snapshots.append(snapshot(0, None))
    if total == 0:
        return result
    opt = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum)
    bs = spec.batch_size
    pending: list[torch.Tensor] = []  # this check window's mini-batch costs, still on the device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    losses_since_snapshot = 0
    step = 0
    chunk = max(1, min(CHUNK_STEPS, CHUNK_EXAMPLES // bs))
    xs = ys = None
    pos = chunk
    while step < total:
        if pos == chunk:
            xb, yb = next_batch(bs * chunk)
            xs = xb.to(device, non_blocking=True).view(chunk, bs, -1)
            ys = yb.to(device, non_blocking=True).view(chunk, bs)
            pos = 0
        loss = loss_fn(model(xs[pos]), ys[pos])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        pos += 1
        step += 1
        pending.append(loss.detach())
        at_snapshot = step % every == 0 or step == total
        if len(pending) == CHECK_EVERY or at_snapshot:
            window = torch.stack(pending)
            bad = ~torch.isfinite(window) | (window > DIVERGENCE_LOSS)
            loss_sum += window.double().sum()
            losses_since_snapshot += len(pending)
            first_bad = int(torch.argmax(bad.int())) if bool(bad.any()) else -1
            if first_bad >= 0:
                at = step - len(pending) + first_bad + 1
                value = float(window[first_bad])
                reason = "non-finite loss" if not math.isfinite(value) else f"loss {value:.3g} > {DIVERGENCE_LOSS:g}"
                result.divergence = Divergence(at, reason, value, first_nonfinite_layer(model))
                result.steps_done = step
                return result
            pending = []
        if at_snapshot:
            throttle.tick(Progress(step / total, step, total, "diagnose", f"snapshot at step {step}"), force=True)
            result.snapshots.append(snapshot(step, loss_sum / max(losses_since_snapshot, 1)))
            loss_sum = torch.zeros_like(loss_sum)
            losses_since_snapshot = 0
        if throttle.due():  # build the Progress record only when it will be used
            throttle.tick(Progress(step / total, step, total, "train", f"step {step}/{total}"))
    result.steps_done = step
    return result
