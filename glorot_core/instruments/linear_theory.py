"""Section ``theory``: the paper's linear-regime predictions (§4.2, eqs 5–7) and the mean-field χ.

On the device, per probe point: the gains n_in·Var[W], n_out·Var[W], E[f'(s)²], χ, the fraction of
units in the linear regime (``glorot_core.instruments.theory.layer_mean_field``) and the variance of
the per-example weight gradients g_n z_nᵀ (closed form, ``instruments.per_example``: eq. 7's basis,
whatever ``diagnostics.gradient_basis`` the ``weight_grad`` section uses). On the host, once every
section of the snapshot is there: the predicted variances of eqs 5–7 beside the measured ones, taken
from the ``activation`` and ``backprop_grad`` sections (both per example)
(``glorot_core.instruments.theory.theory_table``). Without those two sections at a snapshot (not
registered, or not scheduled there) the section is null.
"""

from __future__ import annotations

from typing import Any

from glorot_core.instruments.base import Instrument
from glorot_core.instruments.monitor import Monitor
from glorot_core.instruments.per_example import outer_moments
from glorot_core.instruments.probe import Capture
from glorot_core.instruments.theory import layer_mean_field, theory_table

MEASURED = {"activation_var": "activation", "backprop_var": "backprop_grad"}
"""theory_table's measured variances read from other sections (per example): the square of their ``std``.
The third, ``weight_grad_var``, this instrument measures itself on the per-example basis."""


class LinearTheory(Instrument):
    """Eqs 5–7 predictions beside the measurements, and the mean-field χ and depth scale per layer."""

    section = "theory"
    scalars = ("chi", "linear_fraction")

    def measure_point(self, capture: Capture, monitor: Monitor) -> dict[str, Any] | None:
        if capture.weight is None:
            return None
        out = layer_mean_field(capture.s, capture.point.activation, capture.weight, capture.z)
        # per example, eq. 7's basis; needs the weight's dense input (None for other points)
        z_in = capture.z_in
        # a non-finite gradient makes this variance non-finite, as it should (no masking: half the passes)
        out["weight_grad_var"] = None if z_in is None else \
            outer_moments(capture.grad_s, z_in, finite_only=False)[1].square()
        return out

    def finish(self, layers: list[dict[str, Any]], network: dict[str, Any]) -> None:
        mean_field = [lay.get(self.section) for lay in layers]
        measured = []
        for lay in layers:
            blocks = {key: lay.get(section) for key, section in MEASURED.items()}
            if any(b is None for b in blocks.values()):
                measured = None
                break
            measured.append({key: b["std"] ** 2 for key, b in blocks.items()})
        if measured is None or any(m is None for m in mean_field) or not layers:
            for lay in layers:
                lay[self.section] = None
            return
        for m, mf in zip(measured, mean_field, strict=True):
            m["weight_grad_var"] = mf["weight_grad_var"]
        rows = theory_table(network["activation"], network["input_var"], network["output_grad_var"], measured,
                            mean_field, network["output_backward_gain"])
        for lay, row in zip(layers, rows, strict=True):
            lay[self.section] = row
