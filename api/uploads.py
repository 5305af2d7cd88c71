"""Routes of uploaded models and probe data: ``/v1/models`` and ``/v1/data`` (docs/uploads.md).

An upload streams to a temp file (:mod:`api.upload_stream`), is checked — a model in a child process
with memory and time limits (:func:`glorot_core.uploads.inspect.inspect_in_child`), an ``.npz`` from
its headers — and only an accepted file is stored, in chunks, as the tenant's content-addressed blob
(:mod:`jobs.blobs`) with the row that describes it. Every query is scoped to the caller's tenant:
another tenant's id is a 404 like an id that does not exist.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from api import services
from api.deps import AppContext, CtxDep, PrincipalDep
from api.problems import PROBLEM_JSON, Problem
from api.query_params import PageCursor, PageLimit, page_size, reject_repeated_scalars
from api.routes import BAD_CURSOR
from api.upload_stream import ReceivedUpload, receive_upload
from glorot_core.uploads.archive import ArchiveLimits
from glorot_core.uploads.errors import UploadRefused
from glorot_core.uploads.inspect import InspectLimits, inspect_in_child
from glorot_core.uploads.metadata import parse_metadata
from glorot_core.uploads.probe_data import inspect_npz
from jobs import blobs
from jobs.models import Job, JobState, UploadedData, UploadedModel

#: The routes whose bodies are uploads (exempt from the app's JSON body limit; counted here instead).
UPLOAD_PATHS = ("/v1/models", "/v1/data")

uploads_router = APIRouter(prefix="/v1", tags=["uploads"])
_PROBLEM = {"content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or unknown API key", **_PROBLEM},
    413: {"description": "file over the size limit or the tenant's quota", **_PROBLEM},
    415: {"description": "not multipart, or an unknown format", **_PROBLEM},
    422: {"description": "corrupt, unsafe or mismatched file, invalid metadata", **_PROBLEM},
    429: {"description": "over the tenant's request rate (Retry-After)", **_PROBLEM},
}
_LIST_ERRORS: dict[int | str, dict[str, Any]] = {
    400: BAD_CURSOR,
    401: _ERRORS[401], 422: {"description": "invalid query parameters", **_PROBLEM}, 429: _ERRORS[429],
}
_NOT_FOUND = {404: {"description": "no such upload for this tenant", **_PROBLEM}}


def _multipart_body(required: list[str], metadata: str) -> dict[str, Any]:
    """The OpenAPI requestBody of an upload route: read as a stream (not by FastAPI), so declared here."""
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": required,
        "properties": {"file": {"type": "string", "format": "binary"},
                       "metadata": {"type": "string", "description": metadata}},
    }}}}}




def _limits(ctx: AppContext) -> InspectLimits:
    s = ctx.settings
    return InspectLimits(archive=ArchiveLimits(s.upload_max_entries, s.upload_max_uncompressed_bytes),
                         max_parameters=s.max_parameters, memory_mb=s.upload_check_memory_mb,
                         timeout_s=s.upload_check_timeout_s)


def _refusal(e: UploadRefused) -> Problem:
    return Problem(e.status, e.slug, e.detail, **e.extra)


def model_out(m: UploadedModel, sha256: str, size: int) -> dict[str, Any]:
    return {"id": m.id, "name": m.name, "format": m.format, "sha256": sha256, "size": size,
            "created_at": m.created_at.isoformat(), "probe_points": m.info["probe_points"],
            "input": m.info["input"], "parameters": m.info["parameters"],
            "architecture": m.declared.get("architecture")}


def data_out(d: UploadedData, sha256: str, size: int) -> dict[str, Any]:
    return {"id": d.id, "name": d.name, "sha256": sha256, "size": size, "created_at": d.created_at.isoformat(),
            **d.info}


@contextlib.contextmanager
def _removed_after(received: ReceivedUpload) -> Iterator[ReceivedUpload]:
    """The received file's temporary copy is deleted when the route is done with it, whatever happened."""
    try:
        yield received
    finally:
        if received.path is not None:
            received.path.unlink(missing_ok=True)


def _file_and_metadata(received: ReceivedUpload, *, required: bool) -> tuple[Path, Any]:
    """The uploaded file's temporary path and the parsed ``metadata`` part ({} when optional and absent)."""
    if received.path is None:
        raise Problem(422, "invalid-upload", "the multipart body has no 'file' part")
    text = received.fields.get("metadata")
    if text is None and not required:
        return received.path, {}
    try:
        return received.path, json.loads(text or "")
    except ValueError as e:
        raise Problem(422, "invalid-metadata", f"the 'metadata' part must be JSON: {e}") from None


def _store(ctx: AppContext, tenant_id: int, path: Path, sha256: str, size: int, make_row: Any) -> dict[str, Any]:
    s = ctx.settings
    with ctx.factory() as session:
        try:
            blob = blobs.store_file(session, tenant_id, path, sha256, size, chunk_bytes=s.upload_chunk_bytes,
                                    quota=s.tenant_upload_quota_bytes)
        except blobs.QuotaExceeded as e:
            raise Problem(413, "quota-exceeded", str(e), quota=e.quota, used=e.used) from None
        row = make_row(blob.id)
        session.add(row)
        session.commit()
        out = model_out if isinstance(row, UploadedModel) else data_out
        return out(row, blob.sha256, blob.size)


@uploads_router.post(
    "/models", status_code=201, summary="Upload a model",
    description="multipart/form-data: `file` (the model) and `metadata` (JSON: `format` = safetensors | state_dict | "
    "exported, optional `name`, `architecture` for weights-only formats, `input` where needed). 201 with `id`, "
    "`sha256`, `size`, `format` and the `probe_points` found. Full pickles, TorchScript and zip bombs are refused "
    "with nothing executed.",
    responses={**_ERRORS, 201: {"description": "stored", "content": {"application/json": {}}}},
    openapi_extra=_multipart_body(["file", "metadata"], "JSON: format, name, architecture, input"),
)
async def upload_model(request: Request, ctx: CtxDep, principal: PrincipalDep) -> JSONResponse:
    received = await receive_upload(request, max_file_bytes=ctx.settings.max_upload_bytes)
    with _removed_after(received):
        path, doc = _file_and_metadata(received, required=True)
        try:
            meta = parse_metadata(doc)
            info = await run_in_threadpool(inspect_in_child, path, meta.model_dump(mode="json"), _limits(ctx))
        except UploadRefused as e:
            raise _refusal(e) from None

        def row(blob_id: int) -> UploadedModel:
            return UploadedModel(tenant_id=principal.tenant_id, blob_id=blob_id, name=meta.name, format=meta.format,
                                 declared=meta.model_dump(mode="json", exclude_none=True), info=info.to_dict())

        body = await run_in_threadpool(_store, ctx, principal.tenant_id, path, received.sha256, received.size, row)
    return JSONResponse(body, status_code=201, headers={"Location": f"/v1/models/{body['id']}"})


@uploads_router.post(
    "/data", status_code=201, summary="Upload probe inputs (.npz)",
    description="multipart/form-data: `file` (an .npz with `inputs`, examples first, and optional integer "
    "`labels`) and optional `metadata` (JSON: `name`). 201 with `id`, `sha256`, `size`, `examples`, `arrays`.",
    responses={**_ERRORS, 201: {"description": "stored", "content": {"application/json": {}}}},
    openapi_extra=_multipart_body(["file"], "JSON: name"),
)
async def upload_data(request: Request, ctx: CtxDep, principal: PrincipalDep) -> JSONResponse:
    received = await receive_upload(request, max_file_bytes=ctx.settings.max_upload_bytes)
    with _removed_after(received):
        path, doc = _file_and_metadata(received, required=False)
        name = doc.get("name") if isinstance(doc, dict) else None
        if name is not None and (not isinstance(name, str) or len(name) > 200):
            raise Problem(422, "invalid-metadata", "metadata.name must be a string of at most 200 characters")
        try:
            info = await run_in_threadpool(inspect_npz, str(path), _limits(ctx).archive)
        except UploadRefused as e:
            raise _refusal(e) from None

        def row(blob_id: int) -> UploadedData:
            return UploadedData(tenant_id=principal.tenant_id, blob_id=blob_id, name=name, info=info)

        body = await run_in_threadpool(_store, ctx, principal.tenant_id, path, received.sha256, received.size, row)
    return JSONResponse(body, status_code=201, headers={"Location": f"/v1/data/{body['id']}"})


def _get(session: Session, cls: type[UploadedModel] | type[UploadedData], tenant_id: int, upload_id: str) -> Any:
    row = None
    if len(upload_id) <= 64:
        row = session.execute(select(cls).where(cls.id == upload_id, cls.tenant_id == tenant_id)).scalar_one_or_none()
    if row is None:
        what = "model" if cls is UploadedModel else "data set"
        raise Problem(404, "upload-not-found", f"no {what} {upload_id[:80]!r}")
    return row


def _blob_fields(session: Session, blob_id: int) -> tuple[str, int]:
    from jobs.models import Blob

    b = session.get(Blob, blob_id)
    assert b is not None
    return b.sha256, b.size


@uploads_router.get(
    "/models", summary="List uploaded models (newest first)", dependencies=[Depends(reject_repeated_scalars)],
    description="The caller's models, a page at a time as `GET /v1/jobs` (`limit`, then `cursor` = the previous "
    "page's `next_cursor`). Each is `GET /v1/models/{id}`.",
    responses=_LIST_ERRORS,
)
def list_models(ctx: CtxDep, principal: PrincipalDep, limit: PageLimit = None,
                cursor: PageCursor = None) -> dict[str, Any]:
    """A page of the tenant's models, newest first, paged as the other lists (``services.newest_first``);
    400 for a cursor that is not a next_cursor of this tenant's model list."""
    tenant_id = principal.tenant_id
    with ctx.factory() as session:
        rows, next_cursor = services.newest_first(
            session, select(UploadedModel).where(UploadedModel.tenant_id == tenant_id), UploadedModel,
            secret=ctx.secret, purpose=f"models:{tenant_id}", filters={}, limit=page_size(ctx.settings, limit),
            cursor=cursor)
        return {"items": [model_out(m, *_blob_fields(session, m.blob_id)) for m in rows], "next_cursor": next_cursor}


@uploads_router.get("/models/{model_id}", summary="Read an uploaded model", responses={**_ERRORS, **_NOT_FOUND})
def read_model(model_id: str, ctx: CtxDep, principal: PrincipalDep) -> dict[str, Any]:
    with ctx.factory() as session:
        m = _get(session, UploadedModel, principal.tenant_id, model_id)
        return model_out(m, *_blob_fields(session, m.blob_id))


@uploads_router.get("/data/{data_id}", summary="Read an uploaded data set", responses={**_ERRORS, **_NOT_FOUND})
def read_data(data_id: str, ctx: CtxDep, principal: PrincipalDep) -> dict[str, Any]:
    with ctx.factory() as session:
        d = _get(session, UploadedData, principal.tenant_id, data_id)
        return data_out(d, *_blob_fields(session, d.blob_id))


def _in_use(session: Session, tenant_id: int, key: tuple[str, str], upload_id: str) -> list[str]:
    """Ids of the tenant's QUEUED or RUNNING jobs whose spec names ``upload_id`` at ``key``
    (``("model", "model_id")`` or ``("data", "upload_id")``). Active jobs are few; the spec is read here
    rather than by a JSON path query, the same on SQLite and PostgreSQL."""
    rows = session.execute(select(Job.id, Job.spec).where(
        Job.tenant_id == tenant_id, Job.state.in_([JobState.QUEUED, JobState.RUNNING])))
    section, field = key
    return [jid for jid, spec in rows
            if isinstance(spec, dict) and isinstance(spec.get(section), dict) and spec[section].get(field) == upload_id]


def _delete(ctx: AppContext, cls: Any, key: tuple[str, str], tenant_id: int, upload_id: str) -> None:
    with ctx.factory() as session:
        row = _get(session, cls, tenant_id, upload_id)
        jobs = _in_use(session, tenant_id, key, upload_id)
        if jobs:
            raise Problem(409, "upload-in-use", f"{len(jobs)} queued or running job(s) use it; cancel them or wait "
                          "until they end", jobs=jobs[:20])
        session.delete(row)
        session.flush()
        blobs.delete_if_unreferenced(session, row.blob_id)
        session.commit()


@uploads_router.delete("/models/{model_id}", status_code=204, summary="Delete an uploaded model",
                       responses={**_ERRORS, **_NOT_FOUND, 409: {"description": "a queued or running job uses it",
                                                                 **_PROBLEM}})
async def delete_model(model_id: str, ctx: CtxDep, principal: PrincipalDep) -> Response:
    await run_in_threadpool(_delete, ctx, UploadedModel, ("model", "model_id"), principal.tenant_id, model_id)
    return Response(status_code=204)


@uploads_router.delete("/data/{data_id}", status_code=204, summary="Delete an uploaded data set",
                       responses={**_ERRORS, **_NOT_FOUND, 409: {"description": "a queued or running job uses it",
                                                                 **_PROBLEM}})
async def delete_data(data_id: str, ctx: CtxDep, principal: PrincipalDep) -> Response:
    await run_in_threadpool(_delete, ctx, UploadedData, ("data", "upload_id"), principal.tenant_id, data_id)
    return Response(status_code=204)
