"""Initialisations give the variances the paper states; activations' derivatives match autograd."""

from __future__ import annotations

import math

import pytest
import torch

from glorot_core.activations import ACTIVATIONS, get_activation
from glorot_core.inits import LSUV_TOLERANCE, initialize
from glorot_core.models import MLP, build_mlp
from glorot_core.spec import ModelSpec


def _weights(init: str, widths=(1024, 1000, 500, 9), **kw) -> list[torch.Tensor]:
    model, _ = build_mlp(ModelSpec(input_dim=widths[0], hidden=list(widths[1:-1]), num_classes=widths[-1],
                                   init=init, **kw), seed=3)
    return [lin.weight.detach().double() for lin in model.linears]


def _rel_tol(n: int, kurtosis_excess: float) -> float:
    """4 standard errors of a sample variance of n i.i.d. draws: sd(s²)/σ² = √((2 + κ)/n)."""
    return 4 * math.sqrt((2 + kurtosis_excess) / n)


def test_standard_init_eq1_gives_one_third() -> None:
    for w in _weights("standard"):
        fan_in = w.shape[1]
        assert w.abs().max() <= 1 / math.sqrt(fan_in) + 1e-12
        # uniform: excess kurtosis −1.2
        assert fan_in * w.var().item() == pytest.approx(1 / 3, rel=_rel_tol(w.numel(), -1.2))


def test_normalized_init_eq16() -> None:
    for w in _weights("normalized"):
        fan_out, fan_in = w.shape
        assert w.abs().max() <= math.sqrt(6 / (fan_in + fan_out)) + 1e-12
        assert w.var().item() == pytest.approx(2 / (fan_in + fan_out), rel=_rel_tol(w.numel(), -1.2))


def test_he_init() -> None:
    for w in _weights("he"):
        assert w.shape[1] * w.var().item() == pytest.approx(2.0, rel=_rel_tol(w.numel(), 0.0))


def test_orthogonal_init_has_all_singular_values_equal_to_gain() -> None:
    for w in _weights("orthogonal", init_gain=1.5):
        sv = torch.linalg.svdvals(w)
        assert torch.allclose(sv, torch.full_like(sv, 1.5), atol=1e-5)


def test_lsuv_brings_every_layer_to_unit_variance() -> None:
    torch.manual_seed(0)
    x = torch.rand(500, 64) * 2 - 1
    model = MLP([64, 100, 100, 100, 10], get_activation("tanh"))
    info = initialize(list(model.linears), "lsuv", model.activation, data=x)
    assert len(info["lsuv_tries"]) == 4
    with torch.no_grad():
        trace = model.trace(x)
        for s in trace.pre:
            assert abs(s.var().item() - 1) <= LSUV_TOLERANCE + 1e-6


def test_biases_start_at_the_given_constant() -> None:
    model, _ = build_mlp(ModelSpec(hidden=[8], bias_init=0.25))
    assert all(torch.all(lin.bias == 0.25) for lin in model.linears)


def test_init_is_deterministic_and_does_not_touch_global_rng() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = _weights("standard", (16, 8, 4))
    after = torch.rand(1)
    b = _weights("standard", (16, 8, 4))
    assert before == after
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_derivative_matches_autograd(name: str) -> None:
    act = ACTIVATIONS[name]
    s = torch.linspace(-6, 6, 1001, dtype=torch.float64).requires_grad_()
    s = s[(s.detach().abs() > 1e-3)].detach().requires_grad_()  # relu's kink
    (g,) = torch.autograd.grad(act(s).sum(), s)
    assert torch.allclose(act.derivative(s.detach()), g, atol=1e-12)


def test_softsign_is_x_over_one_plus_abs_x() -> None:
    s = torch.tensor([-3.0, 0.0, 1.0])
    assert torch.allclose(get_activation("softsign")(s), torch.tensor([-0.75, 0.0, 0.5]))


def test_saturation_rules() -> None:
    tanh, sig, relu, lin = (get_activation(n) for n in ("tanh", "sigmoid", "relu", "linear"))
    low, high = tanh.saturation_masks(torch.tensor([-1.0, -0.96, -0.9, 0.0, 0.97]))
    assert low.tolist() == [True, True, False, False, False] and high.tolist() == [False] * 4 + [True]
    low, high = sig.saturation_masks(torch.tensor([0.01, 0.5, 0.99]))
    assert low.tolist() == [True, False, False] and high.tolist() == [False, False, True]
    low, _ = relu.saturation_masks(torch.tensor([0.0, 0.1]))
    assert low.tolist() == [True, False]
    assert not any(m.any() for m in lin.saturation_masks(torch.tensor([-100.0, 100.0])))
