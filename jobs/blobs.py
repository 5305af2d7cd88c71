"""Blob storage in the database: a tenant's file, content-addressed by sha256, as ordered chunk rows.

Written from a file on disk a chunk at a time (``upload_chunk_bytes``, 1 MiB by default) and read back
the same way into a file (:func:`read_to_file`), so neither side holds a whole file in memory and any
worker on any machine reaches it through the database. The same bytes uploaded twice by one tenant are
stored once (unique ``(tenant_id, sha256)``); the quota counts each stored blob once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from sqlalchemy import delete, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jobs.models import Blob, BlobChunk, UploadedData, UploadedModel


class QuotaExceeded(Exception):
    """Storing the blob would take the tenant past its quota."""

    def __init__(self, used: int, size: int, quota: int) -> None:
        super().__init__(f"storing {size} bytes would take the tenant's uploads to {used + size} bytes; "
                         f"the quota is {quota} bytes")
        self.used, self.size, self.quota = used, size, quota


def tenant_usage(session: Session, tenant_id: int) -> int:
    """Bytes of every blob the tenant has stored."""
    return int(session.execute(select(func.coalesce(func.sum(Blob.size), 0)).where(Blob.tenant_id == tenant_id))
               .scalar_one())


def find_blob(session: Session, tenant_id: int, sha256: str) -> Blob | None:
    return session.execute(select(Blob).where(Blob.tenant_id == tenant_id, Blob.sha256 == sha256)).scalar_one_or_none()


def store_file(session: Session, tenant_id: int, path: Path, sha256: str, size: int, *, chunk_bytes: int,
               quota: int) -> Blob:
    """The tenant's blob of these bytes: the existing one, or a new one written chunk by chunk (flushed,
    not committed: the caller commits it with the row that references it). :class:`QuotaExceeded`."""
    existing = find_blob(session, tenant_id, sha256)
    if existing is not None:
        return existing
    used = tenant_usage(session, tenant_id)
    if used + size > quota:
        raise QuotaExceeded(used, size, quota)
    try:
        with session.begin_nested():
            blob = Blob(tenant_id=tenant_id, sha256=sha256, size=size)
            session.add(blob)
            session.flush()
            with path.open("rb") as f:
                seq = 0
                while chunk := f.read(chunk_bytes):
                    session.execute(BlobChunk.__table__.insert().values(blob_id=blob.id, seq=seq, data=chunk))
                    seq += 1
    except IntegrityError:  # the same bytes stored concurrently by another request of this tenant
        existing = find_blob(session, tenant_id, sha256)
        if existing is None:
            raise
        return existing
    return blob


def read_to_file(session: Session, blob_id: int, dest: Path) -> str:
    """Write the blob's bytes to ``dest`` a chunk at a time; returns their sha256 (callers compare it with
    the blob's to detect a damaged store)."""
    h = hashlib.sha256()
    q = select(BlobChunk.data).where(BlobChunk.blob_id == blob_id).order_by(BlobChunk.seq)
    with dest.open("wb") as f:
        for (data,) in session.execute(q.execution_options(yield_per=1)):
            f.write(data)
            h.update(data)
    return h.hexdigest()


def delete_if_unreferenced(session: Session, blob_id: int) -> bool:
    """Delete the blob (and its chunks) when no uploaded model or data set references it any more."""
    used = session.execute(select(exists().where(UploadedModel.blob_id == blob_id))).scalar_one() or \
        session.execute(select(exists().where(UploadedData.blob_id == blob_id))).scalar_one()
    if used:
        return False
    session.execute(delete(BlobChunk).where(BlobChunk.blob_id == blob_id))
    session.execute(delete(Blob).where(Blob.id == blob_id))
    return True
