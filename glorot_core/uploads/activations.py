"""Activation records for the functions an uploaded model may use beyond the engine's own.

The engine's registry (``glorot_core.activations``) holds the paper's functions; an uploaded model's
probe point may also sit after gelu, silu, elu, softplus, mish, hardswish, relu6 or hardtanh. Their
saturation rules follow the engine's (docs/science.md): unbounded smooth functions never saturate;
relu6 is relu-like (exactly 0 is dead); hardtanh saturates within 0.05 of ±1 like tanh. Histogram
ranges are fixed per function, so histograms compare bin by bin across snapshots and runs.

``gelu_tanh`` is GELU's tanh approximation 0.5·s·(1 + tanh(√(2/π)(s + 0.044715 s³))), kept apart from
the erf form (``gelu``) because the two differ by up to 4.7e-4 and so do their derivatives.

``none`` is the record of a probe point that is not an activation (a residual sum, a normalisation
output): there s and z are the same tensor, f is the identity, there is no saturation rule (the
saturation section is null there) and the histogram range is (−5, 5), the range the engine gives its
unbounded symmetric functions (linear, leaky_relu): values beyond it are counted as overflow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from glorot_core.activations import ACTIVATIONS, Activation

Tensor = torch.Tensor
_INF = float("inf")


def _grad_of(fn: object) -> object:
    """f'(s) by autograd, for functions whose derivative is only needed off the hot path."""
    def derivative(s: Tensor) -> Tensor:
        with torch.enable_grad():
            x = s.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(fn(x).sum(), x)  # type: ignore[operator]
        return g
    return derivative


def _gelu_tanh(s: Tensor) -> Tensor:
    return F.gelu(s, approximate="tanh")


def _identity(s: Tensor) -> Tensor:
    return s


#: The activation name of a residual or normalisation probe point (module docstring).
NO_ACTIVATION = "none"


def _smooth(name: str, fn: object, low: float, hist: tuple[float, float], gain: str = "relu") -> Activation:
    return Activation(name, fn, _grad_of(fn), (low, _INF), None, False, False, False, hist, gain)  # type: ignore[arg-type]


EXTRA_ACTIVATIONS: dict[str, Activation] = {
    a.name: a for a in (
        _smooth("gelu", F.gelu, -0.17, (-1.0, 5.0)),
        _smooth("gelu_tanh", _gelu_tanh, -0.17, (-1.0, 5.0)),
        _smooth("silu", F.silu, -0.28, (-1.0, 5.0)),
        _smooth("elu", F.elu, -1.0, (-1.0, 5.0)),
        _smooth("softplus", F.softplus, 0.0, (0.0, 5.0)),
        _smooth("mish", F.mish, -0.31, (-1.0, 5.0)),
        _smooth("hardswish", F.hardswish, -0.375, (-1.0, 5.0)),
        Activation("relu6", F.relu6, _grad_of(F.relu6), (0.0, 6.0), None, False, False, True,  # type: ignore[arg-type]
                   (0.0, 6.0), "relu"),
        Activation("hardtanh", F.hardtanh, _grad_of(F.hardtanh), (-1.0, 1.0), 0.05, True, True, False,  # type: ignore[arg-type]
                   (-1.0, 1.0), "tanh"),
        Activation(NO_ACTIVATION, _identity, torch.ones_like, (-_INF, _INF), None, False, False, False,
                   (-5.0, 5.0), "linear"),
    )
}


def activation_named(name: str) -> Activation:
    """The record of ``name``: the engine's own first, then the ones above."""
    found = ACTIVATIONS.get(name) or EXTRA_ACTIVATIONS.get(name)
    if found is None:
        raise KeyError(f"no activation record for {name!r}")
    return found
