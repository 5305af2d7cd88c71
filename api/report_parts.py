"""Serving a report (``GET /v1/jobs/{id}/report``): the whole of it, or a range of snapshots and chosen
top-level sections, streamed from its stored parts (jobs/reports.py) without parsing it.

A report grows by one snapshot per ``every`` steps (≈30–50 KB each for the paper's 5×1000 network, up
to 2,000 of them), while a client drawing one curve or reading the verdicts needs a fraction of it.

* ``snapshots=FROM:TO``: snapshots ``FROM`` (included) to ``TO`` (excluded), 0-based in the order they
  were taken, either bound optional (``:10`` the first ten, ``100:`` from the 101st on). The answer then
  carries ``snapshot_range``: ``{"from", "to", "total"}`` (``to`` clipped to ``total``).
* ``sections=a,b``: only these top-level sections (``spec``, ``resolved``, ``layers``, ``snapshots``,
  ``end``, ``theory``, ``verdicts``, …); ``schema_version`` always comes along. With a snapshot range,
  ``snapshots`` is included whether named or not.

Memory: a reader holds one batch of parts (≤ 256 KiB) and one coalesced send at a time, whatever the
report's size; only the rows of the chosen sections and snapshots are read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi.exceptions import RequestValidationError
from sqlalchemy import Connection

from jobs.reports import SNAPSHOTS, Layout, dumps, frame, read_parts

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


@dataclass(frozen=True, slots=True)
class Selection:
    """What to read and how to frame it: the sections in stored order, the row filters, extra members."""

    names: list[str]
    sections: list[str] | None  # None: every section's rows
    snapshots: tuple[int, int] | None  # None: every snapshot's rows
    extra: dict[str, Any]  # members appended after the stored ones (``snapshot_range``)

    @property
    def whole(self) -> bool:
        return self.sections is None and self.snapshots is None and not self.extra


def select(layout: Layout, *, snapshots: str | None, sections: str | None) -> Selection:
    """The part of the report the query asks for (module docstring); the whole report when nothing is
    asked. 422 for a section the report does not have or a reversed range."""
    wanted: set[str] | None = None
    if sections is not None:
        wanted = set(sections.split(","))
        unknown = sorted(wanted - set(layout.sections))
        if unknown:
            raise _invalid("sections", f"no section {', '.join(map(repr, unknown))}; this report has: "
                           f"{', '.join(layout.sections)}", "unknown_section")
        wanted.add(ALWAYS)
    extra: dict[str, Any] = {}
    rows_range: tuple[int, int] | None = None
    if snapshots is not None:
        start, stop = parse_range(snapshots)
        if wanted is not None:
            wanted.add(SNAPSHOTS)
        total = layout.snapshots or 0
        start = min(start, total)
        stop = total if stop is None else max(start, min(stop, total))
        rows_range = (start, stop)
        if layout.snapshots is None:  # not a stored list: the range of nothing is an empty list
            extra[SNAPSHOTS] = []
        extra["snapshot_range"] = {"from": start, "to": stop, "total": total}
    names = [n for n in layout.sections if (wanted is None or n in wanted) and n not in extra]
    return Selection(names, None if names == layout.sections else names,
                     rows_range if layout.snapshots is not None else None, extra)


def etag(layout: Layout, selection: Selection, query: tuple[str | None, str | None]) -> str:
    """The ETag's opaque tag (quoted): the report is immutable, so its sha256 (with the query, for a part)
    names the bytes. The route sends it weak (``W/``): gzip and identity answers share it."""
    if selection.whole:
        return f'"{layout.sha256[:32]}"'
    key = f"{layout.sha256}|{query[0]}|{query[1]}".encode()
    return '"' + hashlib.blake2b(key, digest_size=16).hexdigest() + '"'


def render(connect: Callable[[], Connection], job_id: str, layout: Layout, selection: Selection) -> Iterator[bytes]:
    """The selected JSON, read a batch of parts at a time through ``connect()`` (module docstring)."""
    tail = b"".join((b"," if selection.names or i else b"") + dumps(k) + b":" + dumps(v)
                    for i, (k, v) in enumerate(selection.extra.items()))
    parts = read_parts(connect, job_id, selection.sections, selection.snapshots)
    return frame(selection.names, layout.snapshots is not None, parts, tail)
