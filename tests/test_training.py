"""The training loop: divergence recorded at the exact step a plain loop checking every step finds,
the model left as that step made it; a suspect window that holds no bad step changes nothing."""

from __future__ import annotations

import math

import pytest
import torch

from glorot_core import training
from glorot_core.data import open_dataset
from glorot_core.losses import cross_entropy
from glorot_core.models import build_mlp
from glorot_core.runner import run_experiment
from glorot_core.spec import ExperimentSpec, validate_spec

SMALL = {"hidden": [200, 200, 200], "activation": "tanh", "init": "standard"}
DIVERGING = {  # issue 9 item 6's case: the paper's tanh 5×1000 network at lr = 50 (diverges within a few steps)
    "model": {"hidden": [1000] * 5, "activation": "tanh", "init": "standard"},
    "data": {"test_examples": 100},
    "train": {"steps": 300, "lr": 50.0},
    "diagnostics": {"every": 100, "monitor_examples": 50, "jacobian": {"mode": "off"}},
    "device": "cpu",
}


def _plain_loop(spec: ExperimentSpec, steps: int) -> tuple[int | None, list[torch.Tensor]]:
    """SGD step by step, the cost checked after every step with the loop's rule (non-finite or above
    DIVERGENCE_LOSS): the first such step (1-based) and the parameters after it (or after ``steps``)."""
    data = open_dataset(spec.data.dataset, input_range=spec.data.input_range, seed=spec.data.seed)
    model, _ = build_mlp(spec.model, seed=spec.train.seed)
    opt = torch.optim.SGD(model.parameters(), lr=spec.train.lr, momentum=spec.train.momentum)
    for step in range(1, steps + 1):
        x, y = data.next_batch(spec.train.batch_size)
        loss = cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        if not math.isfinite(value) or value > training.DIVERGENCE_LOSS:
            return step, [p.detach().clone() for p in model.parameters()]
    return None, [p.detach().clone() for p in model.parameters()]


def _train(spec: ExperimentSpec) -> tuple[training.TrainResult, list[torch.Tensor]]:
    data = open_dataset(spec.data.dataset, input_range=spec.data.input_range, seed=spec.data.seed)
    model, _ = build_mlp(spec.model, seed=spec.train.seed)
    result = training.train(model, data.next_batch, spec.train, cross_entropy, every=spec.diagnostics.every,
                            snapshot=lambda step, loss: step)
    return result, [p.detach().clone() for p in model.parameters()]


def test_divergence_is_recorded_at_the_exact_step_and_training_stops_there() -> None:
    spec = validate_spec(DIVERGING)
    expected, plain_params = _plain_loop(spec, spec.train.steps)
    assert expected is not None and expected % training.CHECK_EVERY != 0  # inside a window, not at its end
    result, params = _train(spec)
    assert result.divergence is not None and result.divergence.step == expected
    assert result.steps_done == expected
    for a, b in zip(params, plain_params, strict=True):  # the state after step `expected`, not later
        torch.testing.assert_close(a, b, equal_nan=True, rtol=0, atol=0)

    report = run_experiment(spec)
    assert report["end"]["diverged_at"]["step"] == expected == report["end"]["steps_done"]
    assert report["snapshots"][-1]["step"] == expected


def test_a_suspect_window_without_a_bad_step_is_replayed_to_the_same_state(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = validate_spec({**DIVERGING, "model": SMALL, "train": {"steps": 120, "lr": 0.01, "momentum": 0.9}})
    normal, normal_params = _train(spec)
    assert normal.divergence is None
    # Every window's cost sum (≈ 2.2 per step) now exceeds the threshold, while no single cost does.
    monkeypatch.setattr(training, "DIVERGENCE_LOSS", 20.0)
    replayed, replayed_params = _train(spec)
    assert replayed.divergence is None and replayed.steps_done == 120
    for a, b in zip(replayed_params, normal_params, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_train_loss_is_the_mean_cost_since_the_previous_snapshot() -> None:
    spec = validate_spec({**DIVERGING, "model": SMALL, "train": {"steps": 30, "lr": 0.01}, "diagnostics": {"every": 10,
                          "monitor_examples": 20, "jacobian": {"mode": "off"}}})
    data = open_dataset(spec.data.dataset, input_range=spec.data.input_range, seed=spec.data.seed)
    model, _ = build_mlp(spec.model, seed=spec.train.seed)
    seen: list[tuple[int, float | None]] = []
    training.train(model, data.next_batch, spec.train, cross_entropy, every=10,
                   snapshot=lambda step, loss: seen.append((step, loss)))
    data = open_dataset(spec.data.dataset, input_range=spec.data.input_range, seed=spec.data.seed)
    ref, _ = build_mlp(spec.model, seed=spec.train.seed)
    opt = torch.optim.SGD(ref.parameters(), lr=spec.train.lr)
    costs = []
    for _ in range(30):
        x, y = data.next_batch(spec.train.batch_size)
        loss = cross_entropy(ref(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        costs.append(float(loss.detach()))
    assert [s for s, _ in seen] == [0, 10, 20, 30] and seen[0][1] is None
    for k, (_, mean) in enumerate(seen[1:]):
        assert mean == pytest.approx(sum(costs[10 * k:10 * k + 10]) / 10, rel=1e-5)
