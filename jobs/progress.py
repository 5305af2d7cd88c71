"""The one progress type of a job: what ``GET /v1/jobs/{id}`` shows and what every transition writes.

Stored as JSON in ``jobs.progress``. Every writer builds it from :class:`JobProgress` (never a hand-made
dict), so a re-queue or a reap keeps ``total_steps`` and the fields never drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict


class JobProgress(BaseModel):
    """Where a job is: ``fraction`` of the work in [0, 1], training ``step`` of ``total_steps``, ``phase``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    fraction: float = 0.0
    step: int = 0
    total_steps: int | None = None
    phase: str = "queued"
    message: str = ""

    @classmethod
    def of(cls, value: Mapping[str, Any] | None) -> JobProgress:
        """The progress stored in a row (unknown keys ignored; a missing or malformed value → defaults)."""
        if not value:
            return cls()
        return cls.model_validate({k: v for k, v in value.items() if k in cls.model_fields and v is not None})

    def but(self, **changes: Any) -> JobProgress:
        """A copy with ``changes`` (``total_steps`` is kept unless changed)."""
        return self.model_copy(update=changes)

    def as_json(self) -> dict[str, Any]:
        """The value stored in the JSON column."""
        return self.model_dump(mode="json")
