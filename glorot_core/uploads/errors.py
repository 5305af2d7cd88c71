"""The one error of the upload checks: a refusal with the HTTP status and problem slug it maps to."""

from __future__ import annotations

from typing import Any

from glorot_core.errors import GlorotError


class UploadRefused(GlorotError):
    """The upload is refused and nothing of it was executed.

    ``status`` is the HTTP status the service answers with (413 too large, 415 unknown format, 422
    corrupt, unsafe or mismatched), ``slug`` the problem type's last part, ``extra`` further members of
    the problem document (e.g. ``missing_keys``)."""

    def __init__(self, status: int, slug: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.slug, self.detail, self.extra = status, slug, detail, extra

    def to_dict(self) -> dict[str, Any]:
        """JSON form, to cross the process boundary of :func:`~glorot_core.uploads.inspect.inspect_in_child`."""
        return {"status": self.status, "slug": self.slug, "detail": self.detail, "extra": self.extra}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UploadRefused:
        return cls(int(d["status"]), str(d["slug"]), str(d["detail"]), **dict(d.get("extra") or {}))
