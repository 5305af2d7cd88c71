"""Activation functions, one registry: function, derivative, range, saturation rule, histogram edges.

Every instrument looks an activation up here, so a new activation is one entry, and histograms of
the same activation always share the same fixed edges across snapshots and runs (unlike W&B's
per-call min/max edges; docs/science.md §4).

Saturation (docs/science.md §4): a unit is saturated when its output lies within ``threshold`` of an
asymptote of the function (sigmoid near 0 or 1, tanh and softsign near ±1) or, for relu, when it is
exactly 0 (dead). ``linear`` never saturates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from glorot_core.instruments.histogram import LinearBins

Tensor = torch.Tensor


@dataclass(frozen=True)
class Activation:
    """One activation function and everything the instruments need to know about it.

    Attributes:
        name: registry key, as written in a spec.
        fn: f(s), elementwise.
        derivative: f'(s) as a function of the pre-activation s (used by the exact Jacobian
            diag(f'(s)) Wᵀ and by the mean-field χ).
        output_range: (low, high) of f; infinite bounds as ±inf.
        saturation_threshold: distance from an asymptote that counts as saturated (None: never).
        saturates_low / saturates_high: whether the low / high asymptote exists.
        dead_at_zero: relu-style saturation: output exactly 0 is "dead".
        hist_range: fixed (low, high) histogram range of the outputs; values outside are counted
            as underflow / overflow, never dropped.
        torch_gain_name: name for ``torch.nn.init.calculate_gain`` (He / orthogonal gain).
        derivative_of_output: f'(s) written in terms of the output z = f(s) where that is exact
            and cheaper (tanh: 1 − z², sigmoid: z(1 − z), relu: [z > 0]): the instruments already
            hold z, and recomputing tanh or sigmoid costs more than the rest of the derivative.
    """

    name: str
    fn: Callable[[Tensor], Tensor]
    derivative: Callable[[Tensor], Tensor]
    output_range: tuple[float, float]
    saturation_threshold: float | None
    saturates_low: bool
    saturates_high: bool
    dead_at_zero: bool
    hist_range: tuple[float, float]
    torch_gain_name: str
    derivative_of_output: Callable[[Tensor], Tensor] | None = None

    def __call__(self, s: Tensor) -> Tensor:
        return self.fn(s)

    def derivative_at(self, s: Tensor, z: Tensor | None = None) -> Tensor:
        """f'(s), from the output ``z = f(s)`` when given and the activation has that form."""
        if z is not None and self.derivative_of_output is not None:
            return self.derivative_of_output(z)
        return self.derivative(s)

    def histogram_bins(self, bins: int) -> LinearBins:
        """Fixed, evenly spaced bins over ``hist_range``: comparable bin by bin across runs.

        The spec's default (200) gives tanh/softsign bins of width 0.01: a bin of width h lowers a
        peak of std σ by ≈h²/(6σ²) at worst (an edge on the mode), 2.5 % for Fig 6's narrowest peak
        (layer 5 under the standard init, σ ≈ 0.033, kurtosis ≈ 4); 50 bins lowered it by 31 %.
        """
        return LinearBins(*self.hist_range, bins)

    def saturation_masks(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Boolean masks (low, high) of saturated outputs ``z`` under this activation's rule."""
        false = torch.zeros_like(z, dtype=torch.bool)
        if self.dead_at_zero:
            return z <= 0, false
        if self.saturation_threshold is None:
            return false, false
        lo, hi = self.output_range
        t = self.saturation_threshold
        low = z <= lo + t if self.saturates_low else false
        high = z >= hi - t if self.saturates_high else false
        return low, high

    @property
    def gain(self) -> float:
        """Recommended gain (torch.nn.init.calculate_gain), e.g. √2 for relu, 5/3 for tanh."""
        return float(torch.nn.init.calculate_gain(self.torch_gain_name))


def _sigmoid_derivative(s: Tensor) -> Tensor:
    y = torch.sigmoid(s)
    return y * (1 - y)


def _tanh_derivative(s: Tensor) -> Tensor:
    return 1 - torch.tanh(s) ** 2


def _tanh_derivative_of_output(z: Tensor) -> Tensor:
    return torch.square(z).neg_().add_(1)


def _sigmoid_derivative_of_output(z: Tensor) -> Tensor:
    return z * (1 - z)


def _softsign(s: Tensor) -> Tensor:
    """Softsign x/(1+|x|) (paper §2.2): approaches its asymptotes polynomially, not exponentially."""
    return s / (1 + s.abs())


def _softsign_derivative(s: Tensor) -> Tensor:
    """d/ds softsign = 1/(1+|s|)² (paper §2.2)."""
    return 1 / (1 + s.abs()) ** 2


def _relu_derivative(s: Tensor) -> Tensor:
    return (s > 0).to(s.dtype)  # relu(s) > 0 exactly where s > 0: the same rule serves z


def _leaky_relu(s: Tensor) -> Tensor:
    return torch.nn.functional.leaky_relu(s, 0.01)


def _leaky_relu_derivative(s: Tensor) -> Tensor:
    return torch.where(s > 0, torch.ones_like(s), torch.full_like(s, 0.01))


_INF = float("inf")

ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("sigmoid", torch.sigmoid, _sigmoid_derivative, (0.0, 1.0), 0.05, True, True, False,
                   (0.0, 1.0), "sigmoid", _sigmoid_derivative_of_output),
        Activation("tanh", torch.tanh, _tanh_derivative, (-1.0, 1.0), 0.05, True, True, False,
                   (-1.0, 1.0), "tanh", _tanh_derivative_of_output),
        Activation("softsign", _softsign, _softsign_derivative, (-1.0, 1.0), 0.05, True, True, False,
                   (-1.0, 1.0), "tanh"),
        Activation("relu", torch.relu, _relu_derivative, (0.0, _INF), None, False, False, True,
                   (0.0, 5.0), "relu", _relu_derivative),
        Activation("leaky_relu", _leaky_relu, _leaky_relu_derivative, (-_INF, _INF), None, False, False,
                   False, (-5.0, 5.0), "leaky_relu"),
        Activation("linear", lambda s: s, torch.ones_like, (-_INF, _INF), None, False, False, False,
                   (-5.0, 5.0), "linear"),
    )
}

ACTIVATION_NAMES: tuple[str, ...] = tuple(ACTIVATIONS)


def get_activation(name: str) -> Activation:
    """Look an activation up by name; KeyError lists the known names."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise KeyError(f"unknown activation {name!r}; known: {', '.join(ACTIVATION_NAMES)}") from None
