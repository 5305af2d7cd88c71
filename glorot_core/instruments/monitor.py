"""The monitor: the fixed examples every snapshot is measured on, and what stays constant across snapshots.

Paper §2.3: statistics are taken on a fixed set of 300 test examples. The monitor also holds the
cost, the Jacobian and curvature options and the fixed histogram bins (per activation for activations, octaves for
gradients), so histograms compare bin by bin across snapshots and runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from glorot_core.activations import Activation
from glorot_core.instruments.histogram import Bins, OctaveBins
from glorot_core.losses import Loss
from glorot_core.spec import CurvatureSpec, JacobianSpec

Tensor = torch.Tensor


@dataclass
class Monitor:
    """The monitor set ``x``, ``y`` and the run's constants (activation, cost, Jacobian options, bins)."""

    x: Tensor
    y: Tensor
    activation: Activation
    loss: Loss
    jacobian: JacobianSpec
    bins: int
    gradient_basis: str = "mean_cost"  # of the weight gradients: "mean_cost" or "per_example" (gradients.py)
    curvature: CurvatureSpec | None = None  # Hessian λ_max options (curvature.py); None: not measured
    _activation_bins: dict[str, Bins] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.gradient_bins = OctaveBins()
        # E[x²], eq. 5's starting point (not Var[x]: inputs need not be centred); once, the set is fixed
        self.input_var = self.x.to(torch.float64).square().mean()

    @property
    def activation_bins(self) -> Bins:
        """Bins of the run's activation (see :meth:`bins_for`)."""
        return self.bins_for(self.activation)

    def bins_for(self, activation: Activation) -> Bins:
        """Fixed bins for the outputs of ``activation`` (a probe point may have its own activation)."""
        b = self._activation_bins.get(activation.name)
        if b is None:
            b = self._activation_bins[activation.name] = activation.histogram_bins(self.bins)
        return b
