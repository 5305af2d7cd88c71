"""Part of a report: a range of snapshots and chosen top-level sections (``GET /v1/jobs/{id}/report``).

A report grows by one snapshot per ``every`` steps (≈30–50 KB each for the paper's 5×1000 network, up
to 2,000 of them), while a client drawing one curve or reading the verdicts needs a fraction of it.

* ``snapshots=FROM:TO``: snapshots ``FROM`` (included) to ``TO`` (excluded), 0-based in the order they
  were taken, either bound optional (``:10`` the first ten, ``100:`` from the 101st on). The answer then
  carries ``snapshot_range``: ``{"from", "to", "total"}`` (``to`` clipped to ``total``).
* ``sections=a,b``: only these top-level sections (``spec``, ``resolved``, ``layers``, ``snapshots``,
  ``end``, ``theory``, ``verdicts``, …); ``schema_version`` always comes along. With a snapshot range,
  ``snapshots`` is included whether named or not.
"""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError

SNAPSHOT_RANGE_PATTERN = r"^[0-9]{0,9}:[0-9]{0,9}$"
SECTIONS_PATTERN = r"^[a-z_]{1,32}(,[a-z_]{1,32}){0,31}$"
ALWAYS = "schema_version"


def _invalid(name: str, message: str, code: str = "value_error") -> RequestValidationError:
    return RequestValidationError([{"loc": ("query", name), "msg": message, "type": code}])


def parse_range(text: str) -> tuple[int, int | None]:
    """``"FROM:TO"`` → ``(from, to)`` (``to`` None: to the end); 422 when ``FROM > TO``."""
    start_text, _, stop_text = text.partition(":")
    start = int(start_text) if start_text else 0
    stop = int(stop_text) if stop_text else None
    if stop is not None and start > stop:
        raise _invalid("snapshots", f"the range {text!r} is empty the wrong way round: FROM must be <= TO")
    return start, stop


def select_parts(report: dict[str, Any], *, snapshots: str | None, sections: str | None) -> dict[str, Any]:
    """The requested part of ``report`` (module docstring); the whole report when nothing is asked."""
    if snapshots is None and sections is None:
        return report
    wanted: set[str] | None = None
    if sections is not None:
        wanted = set(sections.split(","))
        unknown = sorted(wanted - report.keys())
        if unknown:
            raise _invalid("sections", f"no section {', '.join(map(repr, unknown))}; this report has: "
                           f"{', '.join(report)}", "unknown_section")
        wanted.add(ALWAYS)
    out: dict[str, Any] = {}
    if snapshots is not None:
        start, stop = parse_range(snapshots)
        if wanted is not None:
            wanted.add("snapshots")
        every = report.get("snapshots") or []
        total = len(every)
        start = min(start, total)
        stop = total if stop is None else max(start, min(stop, total))
        out["snapshot_range"] = {"from": start, "to": stop, "total": total}
        report = {**report, "snapshots": every[start:stop]}
    return {**{k: v for k, v in report.items() if wanted is None or k in wanted}, **out}
