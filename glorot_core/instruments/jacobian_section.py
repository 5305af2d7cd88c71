"""Section ``jacobian`` (per layer) and the snapshot's ``end_to_end``: singular-value spectra of the
layer-to-layer Jacobians J^i = ∂z_{i+1}/∂z_i and of the input-to-last-hidden Jacobian (paper §4.2.2).

The computation is ``glorot_core.instruments.jacobian`` (exact Gram trick or matrix-free estimates);
this module only plugs it into the instrument interface. It is a whole-network instrument: J^i joins
two consecutive probe points, so it reads the model and the snapshot's forward trace (an uploaded
model's snapshot hands it a ``jacobian_spectra`` function instead: ``glorot_core.uploads.jacobians``).
The last hidden layer has no J^i (its section is null). ``diagnostics.jacobian.mode = "off"`` turns it off; the
instrument's :class:`~glorot_core.instruments.base.Schedule` may run it every k-th snapshot only.
"""

from __future__ import annotations

from glorot_core.instruments.base import EVERY_SNAPSHOT, Instrument, Readings, Schedule, SnapshotCapture
from glorot_core.instruments.jacobian import jacobian_spectra
from glorot_core.instruments.monitor import Monitor

SPECTRUM_SCALARS = ("mean_sv", "mean_sq_sv", "max_sv", "min_sv")


class JacobianSpectra(Instrument):
    """Per-layer J^i spectra and the end-to-end spectrum, on ``diagnostics.jacobian.examples`` examples."""

    section = "jacobian"
    scalars = SPECTRUM_SCALARS
    network_section = "end_to_end"
    network_scalars = SPECTRUM_SCALARS

    def __init__(self, schedule: Schedule = EVERY_SNAPSHOT) -> None:
        self.schedule = schedule

    def due(self, snap: SnapshotCapture, monitor: Monitor) -> bool:
        """Its own schedule, thinned further by the spec's ``diagnostics.jacobian.every_snapshots``."""
        if monitor.jacobian.mode == "off":
            return False
        every = max(self.schedule.every, monitor.jacobian.every_snapshots)
        return Schedule(every=every, last=self.schedule.last).due(snap.index, snap.final)

    def measure(self, snap: SnapshotCapture, monitor: Monitor) -> Readings:
        """The built-in MLP's spectra from its model and trace, or those of the ``jacobian_spectra``
        function a snapshot of another network provides (an uploaded model's per-block Jacobians)."""
        compute = snap.network.get("jacobian_spectra")
        if compute is not None:
            result = compute(monitor.jacobian, monitor.bins)
        else:
            result = jacobian_spectra(snap.network["model"], snap.network["trace"], monitor.jacobian, monitor.bins)
        layers = list(result["layers"])
        return Readings(layers + [None] * (len(snap.points) - len(layers)), result["end_to_end"])
