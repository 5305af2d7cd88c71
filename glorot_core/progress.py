"""Progress reporting and cooperative cancellation, the hooks the worker uses to drive a run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

Phase = Literal["setup", "diagnose", "train", "report", "done"]


@dataclass(frozen=True)
class Progress:
    """Where a run is: ``fraction`` in [0, 1] of the total work, the training step, the phase."""

    fraction: float
    step: int
    total_steps: int
    phase: Phase
    message: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


ProgressCallback = Callable[[Progress], None]
CancelCheck = Callable[[], bool]
