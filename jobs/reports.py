"""Reports in the database as ordered parts, so that the API serves them without building them.

A report is a JSON object of top-level sections (``schema_version``, ``spec``, ``layers``,
``snapshots``, ``end``, ``verdicts``, …) and may reach ≈58 MB (2,000 snapshots of ≈29 KB). Reading it
from the driver, parsing it (≈2× its size in Python objects) and re-serialising it costs ≈4× its size
per request, so an API that did that would grow by gigabytes under a few dozen concurrent clients.
It is therefore stored already serialised:

* one ``reports`` row: the attempt, the byte size and sha256 of the report's compact JSON, the section
  names in order and, when ``snapshots`` is a list, how many snapshots it has;
* ``report_parts`` rows ``(job_id, seq)``: the compact JSON of each section's value (for the
  ``snapshots`` list: of each snapshot), cut into pieces of at most :data:`PART_BYTES`, labelled with
  the section and the snapshot index.

:func:`frame` puts the parts back between ``{"name":…,…}`` (and ``[…,…]`` for the snapshots), which
gives exactly ``json.dumps(report, separators=(",", ":"), ensure_ascii=False)``, the bytes the API
sends. The writer hashes and measures the report through the same :func:`frame`, so size and digest
describe what readers produce. A whole report is read back a batch of parts at a time; a part of a
report (chosen sections, a snapshot range) reads only the rows it needs, and neither parses JSON.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, insert, or_, select
from sqlalchemy.orm import Session

from jobs.models import Report, ReportPart

#: Largest stored piece: small enough that a batch of them bounds a reader's memory, large enough that a
#: snapshot (≈29 KB for the paper's 5×1000 network) is one row.
PART_BYTES = 64 * 1024
#: Parts read per query: at most 4 × 64 KiB = 256 KiB held by one reader at a time.
BATCH_PARTS = 4
#: A reader's sends: parts joined up to about this many bytes (fewer, larger ASGI messages).
SEND_BYTES = 128 * 1024
#: The section stored one element per part, so that a snapshot range reads only its rows.
SNAPSHOTS = "snapshots"
#: Longest section name (the ``report_parts.section`` column).
MAX_SECTION_CHARS = 200


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, non-finite numbers refused (reports carry them as strings: ``json_safe``)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


class BrokenReport(Exception):
    """The stored parts do not frame into the report their ``reports`` row describes."""


@dataclass(frozen=True, slots=True)
class Part:
    """A stored piece: ``data`` is (part of) the JSON of ``section``'s value, or of snapshot ``snapshot``."""

    section: str
    snapshot: int | None
    data: bytes


@dataclass(frozen=True, slots=True)
class Layout:
    """What the ``reports`` row says about a stored report."""

    sections: list[str]
    snapshots: int | None  # None: ``snapshots`` is not a list stored per element (or is absent)
    size: int
    sha256: str


def _cut(section: str, snapshot: int | None, data: bytes) -> Iterator[Part]:
    for start in range(0, len(data), PART_BYTES):
        yield Part(section, snapshot, data[start:start + PART_BYTES])


def split(report: dict[str, Any]) -> tuple[Layout, list[Part]]:
    """The parts of ``report`` in storage order and its layout (size and sha256 of the framed bytes)."""
    parts: list[Part] = []
    count: int | None = None
    for name, value in report.items():
        if not isinstance(name, str) or not 0 < len(name) <= MAX_SECTION_CHARS:
            raise ValueError(f"a report's section names are strings of 1..{MAX_SECTION_CHARS} characters: {name!r}")
        if name == SNAPSHOTS and isinstance(value, list):
            count = len(value)
            for i, snap in enumerate(value):
                parts.extend(_cut(name, i, dumps(snap)))
        else:
            parts.extend(_cut(name, None, dumps(value)))
    sections = list(report)
    digest, size = hashlib.sha256(), 0
    for chunk in frame(sections, count is not None, iter(parts)):
        digest.update(chunk)
        size += len(chunk)
    return Layout(sections, count, size, digest.hexdigest()), parts


def frame(names: Sequence[str], listed_snapshots: bool, parts: Iterator[Part], tail: bytes = b"") -> Iterator[bytes]:
    """The JSON object of sections ``names`` (in this order) from their ``parts`` in storage order.

    ``listed_snapshots``: the ``snapshots`` section is stored an element per part (its parts may be any
    range of them, possibly none). ``tail``: extra members appended as is (``,"k":v`` when ``names`` is
    not empty). Raises :class:`BrokenReport` when a section has no part or parts are left over."""
    pending: Part | None = next(parts, None)
    yield b"{"
    for k, name in enumerate(names):
        head = (b"," if k else b"") + dumps(name) + b":"
        if name == SNAPSHOTS and listed_snapshots:
            yield head + b"["
            previous: int | None = None
            while pending is not None and pending.section == name:
                if previous is not None and pending.snapshot != previous:
                    yield b","
                previous = pending.snapshot
                yield pending.data
                pending = next(parts, None)
            yield b"]"
            continue
        if pending is None or pending.section != name:
            raise BrokenReport(f"section {name!r} has no stored part")
        yield head
        while pending is not None and pending.section == name:
            yield pending.data
            pending = next(parts, None)
    if pending is not None:
        raise BrokenReport(f"a stored part of section {pending.section!r} is not in the report's layout")
    yield tail + b"}"


def coalesce(chunks: Iterable[bytes], size: int = SEND_BYTES) -> Iterator[bytes]:
    """``chunks`` joined into pieces of about ``size`` bytes (fewer, larger sends; the last may be short)."""
    buf: list[bytes] = []
    held = 0
    for chunk in chunks:
        buf.append(chunk)
        held += len(chunk)
        if held >= size:
            yield b"".join(buf)
            buf, held = [], 0
    if buf:
        yield b"".join(buf)


# ------------------------------------------------------------------------------------------- storage


def store(session: Session, job_id: str, attempt: int, layout: Layout, parts: Sequence[Part],
          created_at: datetime) -> None:
    """Insert the ``reports`` row and its parts (in the caller's transaction)."""
    session.execute(insert(Report).values(job_id=job_id, attempt=attempt, size=layout.size, sha256=layout.sha256,
                                          sections=layout.sections, snapshots=layout.snapshots,
                                          created_at=created_at))
    for start in range(0, len(parts), 256):  # bounded statements: 256 × 64 KiB at most
        session.execute(insert(ReportPart), [
            {"job_id": job_id, "seq": start + i, "section": p.section, "snapshot": p.snapshot, "data": p.data}
            for i, p in enumerate(parts[start:start + 256])])


def layout_of(session: Session | Connection, job_id: str) -> Layout | None:
    """The stored report's layout; None when the job has no report."""
    row = session.execute(select(Report.sections, Report.snapshots, Report.size, Report.sha256)
                          .where(Report.job_id == job_id)).one_or_none()
    return None if row is None else Layout(list(row.sections), row.snapshots, row.size, row.sha256)


def read_parts(connect: Callable[[], Connection], job_id: str, sections: Sequence[str] | None = None,
               snapshots: tuple[int, int] | None = None) -> Iterator[Part]:
    """The job's parts in storage order, :data:`BATCH_PARTS` per query, each query on a connection of its
    own from ``connect()`` (``engine.connect``), so a slow client holds no connection between batches.
    Only ``sections`` (all when None) and, of the snapshots, only those in ``[start, stop)`` (all when
    None)."""
    q = select(ReportPart.seq, ReportPart.section, ReportPart.snapshot, ReportPart.data).where(
        ReportPart.job_id == job_id)
    if sections is not None:
        q = q.where(ReportPart.section.in_(list(sections)))
    if snapshots is not None:
        start, stop = snapshots
        q = q.where(or_(ReportPart.section != SNAPSHOTS, ReportPart.snapshot.is_(None),
                        and_(ReportPart.snapshot >= start, ReportPart.snapshot < stop)))
    after = -1
    while True:
        with connect() as conn:
            rows = conn.execute(q.where(ReportPart.seq > after).order_by(ReportPart.seq).limit(BATCH_PARTS)).all()
        for row in rows:
            yield Part(row.section, row.snapshot, bytes(row.data))
        if len(rows) < BATCH_PARTS:
            return
        after = rows[-1].seq


def load(session: Session, job_id: str) -> dict[str, Any] | None:
    """The whole report as Python objects (for figures and tests; the API streams it instead)."""
    layout = layout_of(session, job_id)
    if layout is None:
        return None
    rows = session.execute(select(ReportPart.section, ReportPart.snapshot, ReportPart.data)
                           .where(ReportPart.job_id == job_id).order_by(ReportPart.seq))
    parts = (Part(r.section, r.snapshot, bytes(r.data)) for r in rows)
    report: dict[str, Any] = json.loads(b"".join(frame(layout.sections, layout.snapshots is not None, parts)))
    return report
