"""The instrument interface: what every per-layer statistic provides, and the registry that drives them.

An :class:`Instrument` reads one probe point's :class:`~glorot_core.instruments.probe.Capture` (s, z,
∂C/∂s, the weight feeding s and its gradient) and returns

(a) its **section** of that layer's entry in the report (``snapshots[].layers[].<section>``), as a tree
    of device tensors (the snapshot moves every instrument's tensors to the host in one copy);
(b) its **scalar series**: the fields of that section (``scalars``) that the service stores as metric
    series named ``<section>.<field>`` (``glorot_core.report.metric_rows``);
(c) its own **schedule**: at which snapshots it runs (the Jacobian, the expensive one, may run every
    k-th snapshot only; a section not measured at a snapshot is ``null`` there).

An instrument that needs the whole network at once (the Jacobian's chain of layers) overrides
:meth:`Instrument.measure`; one that combines other sections on the host (the linear theory, which
sets predictions beside measured variances) overrides :meth:`Instrument.finish`.

A :class:`Registry` is an ordered set of instruments keyed by section. ``glorot_core.instruments.
registry`` holds the default one; adding a statistic is one module defining an instrument plus one
``register(...)`` line there (or a call to ``register`` from a plugin or a test).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from glorot_core.instruments.probe import Capture, ProbePoint

if TYPE_CHECKING:  # the monitor imports nothing from here; this only names its type
    from glorot_core.instruments.monitor import Monitor


@dataclass(frozen=True)
class Schedule:
    """When an instrument runs: at snapshot 0 and every ``every``-th snapshot after it (snapshot
    *count*, not training step), and at the run's last snapshot when ``last`` is True."""

    every: int = 1
    last: bool = True

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"Schedule.every must be >= 1, got {self.every}")

    def due(self, index: int, final: bool) -> bool:
        return index % self.every == 0 or (final and self.last)


EVERY_SNAPSHOT = Schedule()


@dataclass
class SnapshotCapture:
    """Every probe point's capture at one snapshot, plus what whole-network instruments need.

    ``index`` counts snapshots from 0 (initialisation); ``final`` marks a run's last snapshot.
    ``network`` holds whole-network objects by name (for the MLP: ``model`` and its ``trace``).
    """

    points: list[Capture]
    index: int = 0
    final: bool = False
    network: dict[str, Any] = field(default_factory=dict)


@dataclass
class Readings:
    """One instrument's output at one snapshot: a section per probe point (None: nothing there) and an
    optional whole-network section (device tensors until the snapshot's single copy to the host)."""

    layers: list[Any]
    network: Any = None


class Instrument:
    """Base class of the per-layer instruments (see the module docstring for the contract).

    Subclasses set ``section`` (and ``scalars``), and implement :meth:`measure_point`, or
    :meth:`measure` for whole-network work. ``network_section`` names a snapshot-level key for a
    whole-network result (the Jacobian's ``end_to_end``), whose ``network_scalars`` become series of
    layer 0 named ``<network_section>.<field>``.
    """

    section: str = ""
    scalars: tuple[str, ...] = ()
    network_section: str | None = None
    network_scalars: tuple[str, ...] = ()
    schedule: Schedule = EVERY_SNAPSHOT

    def due(self, snap: SnapshotCapture, monitor: Monitor) -> bool:
        """Whether this instrument runs at this snapshot (default: its ``schedule``)."""
        return self.schedule.due(snap.index, snap.final)

    def measure_point(self, capture: Capture, monitor: Monitor) -> Any:
        """This instrument's section for one probe point, as device tensors (no host synchronisation)."""
        raise NotImplementedError(f"{type(self).__name__} must implement measure_point or measure")

    def measure(self, snap: SnapshotCapture, monitor: Monitor) -> Readings:
        """Sections for every probe point; by default ``measure_point`` on each."""
        return Readings([self.measure_point(c, monitor) for c in snap.points])

    def finish(self, layers: list[dict[str, Any]], network: dict[str, Any]) -> None:
        """Host-side step after every instrument's readings reached the host, in registry order.

        ``layers`` are the snapshot's layer entries (this instrument's section already in place, as
        Python numbers); ``network`` holds the snapshot's whole-network host values. Default: nothing.
        """

    def describe(self) -> dict[str, Any]:
        """What the report's ``resolved.instruments`` says about this instrument."""
        return {"section": self.section, "scalars": list(self.scalars), "every": self.schedule.every,
                "network_section": self.network_section}


class Registry:
    """An ordered set of instruments, one per section name; the order is the report's section order."""

    def __init__(self, instruments: list[Instrument] | tuple[Instrument, ...] = ()) -> None:
        self._items: dict[str, Instrument] = {}
        for inst in instruments:
            self.register(inst)

    def register(self, instrument: Instrument, *, replace: bool = False) -> Instrument:
        """Add ``instrument`` (last in order); a second one for the same section needs ``replace``."""
        name = instrument.section
        if not name or name in RESERVED_SECTIONS:
            raise ValueError(f"an instrument needs a section name other than {sorted(RESERVED_SECTIONS)}, got {name!r}")
        if name in self._items and not replace:
            raise ValueError(f"an instrument for section {name!r} is already registered")
        self._items[name] = instrument
        return instrument

    def measure(self, snap: SnapshotCapture, monitor: Monitor) -> dict[str, Any]:
        """Every instrument due at this snapshot: {section: {"layers": [...], "network": ...}, or None
        when not due}, in registry order, as device tensors."""
        sections: dict[str, Any] = {}
        for inst in self:
            if inst.due(snap, monitor):
                r = inst.measure(snap, monitor)
                sections[inst.section] = {"layers": r.layers, "network": r.network}
            else:
                sections[inst.section] = None
        return sections

    def unregister(self, section: str) -> Instrument:
        return self._items.pop(section)

    @contextmanager
    def added(self, instrument: Instrument) -> Iterator[Instrument]:
        """Register ``instrument`` for the duration of a ``with`` block (tests, temporary plugins)."""
        previous = self._items.get(instrument.section)
        self.register(instrument, replace=True)
        try:
            yield instrument
        finally:
            if previous is None:
                self._items.pop(instrument.section, None)
            else:
                self._items[instrument.section] = previous

    def get(self, section: str) -> Instrument | None:
        return self._items.get(section)

    def __iter__(self) -> Iterator[Instrument]:
        return iter(list(self._items.values()))

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, section: object) -> bool:
        return section in self._items


RESERVED_SECTIONS = frozenset({"index", "name"})
"""Keys of a report layer entry that are not instrument sections."""

__all__ = ["EVERY_SNAPSHOT", "Instrument", "ProbePoint", "Readings", "Registry", "Schedule", "SnapshotCapture"]
