"""Local copies of the uploads a job's spec names, fetched from the database in the job's own process.

An uploaded model (``{"model": {"source": "uploaded", "model_id": ID}}``) and uploaded probe data
(``{"data": {"dataset": "npz", "upload_id": ID}}``) are blobs in the database (``jobs.blobs``): they
are written a chunk at a time into a temporary folder and their sha256 is checked against the blob's,
so a damaged store fails the job instead of diagnosing other bytes. Loading happens later, in the
same process (``glorot_core.diagnose_model``), with the upload check's safe loaders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from glorot_core.errors import SpecNotRunnable
from jobs.blobs import read_to_file
from jobs.models import Blob, UploadedData, UploadedModel


def fetch_uploads(factory: sessionmaker[Session], tenant_id: int, spec: Any, folder: Path) -> Any:
    """``glorot_core.diagnose_model.ModelFiles`` for ``spec`` (None when it names no upload)."""
    from glorot_core.diagnose_model import ModelFiles
    from glorot_core.spec import UploadedModelSpec
    from glorot_core.uploads.probe_data import NpzData

    if spec.model.source == "file":  # refused at submission: a path on a worker is not the tenant's file
        raise SpecNotRunnable("model.source 'file' is for offline runs; upload the model and name its id")
    if not isinstance(spec.model, UploadedModelSpec):
        return None
    with factory() as session:
        model = session.execute(select(UploadedModel).where(
            UploadedModel.id == spec.model.model_id, UploadedModel.tenant_id == tenant_id)).scalar_one_or_none()
        if model is None:
            raise SpecNotRunnable(f"uploaded model {spec.model.model_id!r} no longer exists")
        model_path = _fetch(session, model.blob_id, folder / "model")
        data_path = None
        if isinstance(spec.data, NpzData):
            data = session.execute(select(UploadedData).where(
                UploadedData.id == spec.data.upload_id, UploadedData.tenant_id == tenant_id)).scalar_one_or_none()
            if data is None:
                raise SpecNotRunnable(f"uploaded data {spec.data.upload_id!r} no longer exists")
            data_path = _fetch(session, data.blob_id, folder / "data.npz")
        return ModelFiles(model_path, dict(model.declared), data_path)


def _fetch(session: Session, blob_id: int, dest: Path) -> Path:
    expected = session.execute(select(Blob.sha256).where(Blob.id == blob_id)).scalar_one()
    got = read_to_file(session, blob_id, dest)
    if got != expected:
        raise SpecNotRunnable(f"the stored upload is damaged (sha256 {got[:12]}… instead of {expected[:12]}…)")
    return dest
