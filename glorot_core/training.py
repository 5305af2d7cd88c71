"""The training loop: plain mini-batch SGD (paper §2.3: θ ← θ − ε·g, batch 10, no momentum), with a
snapshot at step 0 and every ``diagnostics.every`` updates.

Each step is the plain PyTorch step (forward, cost, zero_grad, backward, step) plus one addition on
the device: the cost is added to the current window's sum. Everything else happens once per
**window** of at most ``CHECK_EVERY`` steps (a window never crosses a snapshot or a chunk of batches):
one host synchronisation reads the window's cost sum, which also serves as the divergence check
(a non-finite cost makes the sum non-finite; a cost above ``DIVERGENCE_LOSS`` makes it exceed that,
costs being ≥ 0), then the clock is read for the progress callback and the cancellation check.

Divergence is recorded at the exact step: when a window's sum is suspect, the parameters (and
momentum buffers) saved at the start of the current chunk are restored and the chunk's steps are
replayed one by one, checking each cost, up to the first step whose cost is non-finite or above the
threshold; training stops after that step's update. The replay recomputes the same operations on the
same batches, so it reaches the same state; it costs time only in a run that diverges (or, rarely, in
a window whose costs average above ``DIVERGENCE_LOSS / CHECK_EVERY``, which the replay then clears).
Batches come in chunks already on the device, so a chunk's steps can be replayed without the stream.
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
from glorot_core.progress import CancelCheck, Phase, Progress, ProgressCallback
from glorot_core.spec import TrainSpec

CHECK_EVERY = 50
"""Steps per window: one host synchronisation (cost sum, divergence, clock) per window."""
CHUNK_STEPS = 500
CHUNK_EXAMPLES = 65_536
"""Mini-batches fetched from the data stream and moved to the device at once (at most 500, and at
most 65,536 examples, so large batches do not make huge chunks). The parameters are copied once per
chunk (the replay checkpoint): for the paper's 5×1000 network, 20 MB every 500 steps."""
CALLBACK_INTERVAL_S = 0.25
"""Minimum seconds between progress callbacks and cancellation checks."""
DIVERGENCE_LOSS = 1e4
"""A mini-batch cost above this (or non-finite) ends the run as diverged: −log P is ≈2.2 at chance
for 9 classes, so 1e4 means logits thousands apart, from which SGD does not come back."""


@dataclass
class Divergence:
    """The first step whose mini-batch cost was non-finite or above ``DIVERGENCE_LOSS``."""

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

    def tick(self, step: int, total: int, phase: Phase, message: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < CALLBACK_INTERVAL_S:
            return
        self.last = now
        if self.should_cancel is not None and self.should_cancel():
            raise Cancelled(f"cancelled at step {step}")
        if self.progress is not None:
            self.progress(Progress(step / total if total else 1.0, step, total, phase, message))


class _Checkpoint:
    """Copies of the parameters and momentum buffers, to replay a chunk's steps exactly."""

    def __init__(self, model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        self.params = [p for p in model.parameters()]
        self.opt = opt
        self.saved = [torch.empty_like(p) for p in self.params]
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    def save(self) -> None:
        with torch.no_grad():
            for i, p in enumerate(self.params):
                self.saved[i].copy_(p)
                buf = self.opt.state.get(p, {}).get("momentum_buffer")
                self.buffers[i] = None if buf is None else buf.clone()

    def restore(self) -> None:
        with torch.no_grad():
            for p, saved, buf in zip(self.params, self.saved, self.buffers, strict=True):
                p.copy_(saved)
                if buf is None:
                    self.opt.state.pop(p, None)
                else:
                    self.opt.state[p]["momentum_buffer"] = buf.clone()


def first_nonfinite_layer(model: MLP) -> int | None:
    """1-based index of the first layer whose weights or biases are not all finite (L+1 = output)."""
    flags = torch.stack([
        ~(torch.isfinite(lin.weight).all() & torch.isfinite(lin.bias).all()) for lin in model.linears
    ]).tolist()
    return next((i + 1 for i, bad in enumerate(flags) if bad), None)


def _bad(value: float) -> bool:
    return not math.isfinite(value) or value > DIVERGENCE_LOSS


def train(
    model: MLP,
    next_batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    spec: TrainSpec,
    loss_fn: Loss,
    *,
    every: int,
    snapshot: Callable[[int, float | None], Any],
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> TrainResult:
    """Train ``model`` for ``spec.steps`` updates; ``snapshot(step, train_loss)`` at 0 and every ``every``.

    ``train_loss`` is the mean mini-batch cost since the previous snapshot (None at step 0).
    Divergence does not raise: the result says at which step (exactly) and in which layer, and the
    model is left as that step's update made it.
    """
    device = next(model.parameters()).device
    total = spec.steps
    throttle = _Throttle(progress, should_cancel)
    throttle.tick(0, total, "diagnose", "snapshot at initialisation", force=True)
    result = TrainResult(steps_done=0)
    result.snapshots.append(snapshot(0, None))
    if total == 0:
        return result
    opt = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum)
    checkpoint = _Checkpoint(model, opt)
    bs = spec.batch_size
    chunk = max(1, min(CHUNK_STEPS, CHUNK_EXAMPLES // bs))
    window_sum = torch.zeros((), dtype=torch.float32, device=device)
    cost_sum, cost_steps = 0.0, 0  # host-side, since the last snapshot
    step = 0

    def one_step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    while step < total:
        xb, yb = next_batch(bs * chunk)
        xs = xb.to(device, non_blocking=True).view(chunk, bs, -1)
        ys = yb.to(device, non_blocking=True).view(chunk, bs)
        checkpoint.save()
        chunk_start, pos = step, 0
        while pos < chunk and step < total:
            w = min(CHECK_EVERY, chunk - pos, total - step, every - step % every)
            window_sum.zero_()
            for i in range(pos, pos + w):
                window_sum += one_step(xs[i], ys[i]).detach()
            pos += w
            step += w
            s = float(window_sum)  # the window's one host synchronisation
            if _bad(s):
                checkpoint.restore()
                for i in range(pos):
                    loss = float(one_step(xs[i], ys[i]).detach())
                    if _bad(loss):
                        at = chunk_start + i + 1
                        reason = "non-finite loss" if not math.isfinite(loss) else \
                            f"loss {loss:.3g} > {DIVERGENCE_LOSS:g}"
                        result.divergence = Divergence(at, reason, loss, first_nonfinite_layer(model))
                        result.steps_done = at
                        return result
                # no single cost above the threshold: the replay reached the same state; go on
            cost_sum += s
            cost_steps += w
            if step % every == 0 or step == total:
                throttle.tick(step, total, "diagnose", f"snapshot at step {step}", force=True)
                result.snapshots.append(snapshot(step, cost_sum / max(cost_steps, 1)))
                cost_sum, cost_steps = 0.0, 0
            else:
                throttle.tick(step, total, "train", f"step {step}/{total}")
    result.steps_done = step
    return result
