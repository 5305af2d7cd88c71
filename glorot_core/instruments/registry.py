"""The default instruments, in report order. A new statistic: one module, one line below.

``register(instrument)`` adds one to the default registry (a plugin, a test); ``DEFAULT`` is what
``snapshot.measure``, ``report.snapshot_entry`` and ``report.metric_rows`` use unless given another.
"""

from __future__ import annotations

from glorot_core.instruments.activation_stats import ActivationStats
from glorot_core.instruments.base import Instrument, Registry
from glorot_core.instruments.curvature import Curvature
from glorot_core.instruments.effective_rank import EffectiveRank
from glorot_core.instruments.gradients import BackpropGradient, WeightGradient
from glorot_core.instruments.jacobian_section import JacobianSpectra
from glorot_core.instruments.linear_theory import LinearTheory
from glorot_core.instruments.saturation import Saturation

DEFAULT = Registry()
DEFAULT.register(ActivationStats())
DEFAULT.register(Saturation())
DEFAULT.register(BackpropGradient())
DEFAULT.register(WeightGradient())
DEFAULT.register(JacobianSpectra())
DEFAULT.register(LinearTheory())
DEFAULT.register(EffectiveRank())
DEFAULT.register(Curvature())


def register(instrument: Instrument, *, replace: bool = False) -> Instrument:
    """Add ``instrument`` to the default registry (after the others)."""
    return DEFAULT.register(instrument, replace=replace)
