"""The submit route's request checks as one FastAPI dependency: it hands the route a
:class:`ValidatedSubmission` (the body as sent, the validated spec, its canonical hash and the
Idempotency-Key), or answers with the problem: 415 for a multipart body, 422 with field paths for
invalid JSON, an invalid spec, NUL characters (PostgreSQL's JSONB cannot store them) or an
Idempotency-Key that is not 1-255 visible ASCII characters, and a ``data.root`` that is a path rather
than the name of one of the service's data folders (``jobs.data_roots``). A tenant that already has
``tenant_max_active_jobs`` jobs QUEUED or RUNNING gets 429 with ``Retry-After`` (a repeated
Idempotency-Key still gets its original job).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sqlalchemy import func, select

from api.deps import AppContext, CtxDep, Principal, PrincipalDep
from api.json_body import parse_json_body
from api.presets import check_preset_data, expand_body
from api.problems import Problem, field_errors
from api.security import request_hash
from glorot_core.spec import ExperimentSpec, FileModelSpec, UploadedModelSpec, validate_spec
from glorot_core.uploads.probe_data import NpzData
from jobs.data_roots import name_problem
from jobs.models import Job, JobState, UploadedData, UploadedModel

#: What a tenant at its cap of active jobs is told to wait before trying again (seconds).
ACTIVE_CAP_RETRY_AFTER_S = 30

IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")


@dataclass(frozen=True)
class ValidatedSubmission:
    """A submission that passed every check: what the route stores and dispatches."""

    body: dict[str, Any]
    spec: ExperimentSpec
    body_hash: str
    idempotency_key: str | None


def _invalid(errors: list[dict[str, Any]]) -> Problem:
    first = errors[0]
    return Problem(422, "validation-error", f"{len(errors)} invalid field(s); first: {first['field'] or '(body)'}: "
                   f"{first['message']}", title="Invalid request", errors=errors)


def _find_nul(value: Any, path: tuple[str | int, ...] = ()) -> list[str | int] | None:
    """The path of the first string (or key) in ``value`` containing a NUL character."""
    if isinstance(value, str):
        return list(path) if "\x00" in value else None
    if isinstance(value, dict):
        for k, v in value.items():
            if "\x00" in k:
                return [*path, k]
            found = _find_nul(v, (*path, k))
            if found is not None:
                return found
    if isinstance(value, list):
        for i, v in enumerate(value):
            found = _find_nul(v, (*path, i))
            if found is not None:
                return found
    return None


def check_idempotency_key(key: str | None) -> None:
    if key is not None and not IDEMPOTENCY_KEY_RE.match(key):
        raise _invalid([{"loc": ["header", "idempotency-key"], "field": "idempotency-key",
                         "message": "1-255 visible ASCII characters", "code": "string_pattern"}])


def check_media_type(request: Request) -> None:
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if ctype.startswith("multipart/"):  # lenient otherwise: `curl -d @spec.json` sends a form content type
        raise Problem(415, "unsupported-media-type", f"send the spec as application/json, not {ctype!r}")


def _check_data_root(spec: ExperimentSpec, ctx: AppContext) -> None:
    root = getattr(spec.data, "root", None)  # probe data for uploaded models has no root
    problem = name_problem(root, ctx.settings)
    if problem is not None:
        raise _invalid(field_errors([{"loc": ["data", "root"], "msg": f"data.root {problem}", "type": "data_root_name",
                                      "input": root}], ("body",)))


def _uploads_missing(ctx: AppContext, tenant_id: int, spec: ExperimentSpec) -> list[dict[str, Any]]:
    """Errors for uploads the spec names that the tenant does not have (or a local file, offline only)."""
    errors: list[dict[str, Any]] = []
    model, data = spec.model, spec.data
    if isinstance(model, FileModelSpec):
        errors.append({"loc": ["model", "source"], "msg": "a local model file is for offline runs (glorot run); "
                       "upload it (POST /v1/models) and use {\"source\": \"uploaded\", \"model_id\": …}",
                       "type": "model_source", "input": "file"})
    with ctx.engine.connect() as conn:
        if isinstance(model, UploadedModelSpec) and conn.execute(select(UploadedModel.id).where(
                UploadedModel.id == model.model_id, UploadedModel.tenant_id == tenant_id)).first() is None:
            errors.append({"loc": ["model", "model_id"], "msg": f"no uploaded model {model.model_id!r} (POST "
                           "/v1/models lists yours at GET /v1/models)", "type": "unknown_upload",
                           "input": model.model_id})
        if isinstance(data, NpzData):
            row = conn.execute(select(UploadedData.info).where(
                UploadedData.id == data.upload_id, UploadedData.tenant_id == tenant_id)).first()
            if row is None:
                errors.append({"loc": ["data", "upload_id"], "msg": f"no uploaded data {data.upload_id!r} "
                               "(POST /v1/data)", "type": "unknown_upload", "input": data.upload_id})
            elif spec.train.steps > 0 and "labels" not in (row[0] or {}).get("arrays", {}):
                errors.append({"loc": ["train", "steps"], "msg": f"fine-tuning an uploaded model needs labels, and "
                               f"uploaded data {data.upload_id!r} have none: set train.steps to 0, or upload an "
                               ".npz with 'labels'", "type": "fine_tuning_needs_labels", "input": spec.train.steps})
    return errors


def active_jobs(ctx: AppContext, tenant_id: int, idempotency_key: str | None = None) -> int:
    """The tenant's QUEUED + RUNNING jobs; 0 when ``idempotency_key`` names a job it already has (a
    repeat returns its original job whatever the cap)."""
    with ctx.engine.connect() as conn:
        if idempotency_key is not None and conn.execute(
                select(Job.id).where(Job.tenant_id == tenant_id, Job.idempotency_key == idempotency_key)).first():
            return 0
        return int(conn.execute(select(func.count()).select_from(Job).where(
            Job.state.in_((JobState.QUEUED, JobState.RUNNING)), Job.tenant_id == tenant_id)).scalar_one())


def cap_problem(principal: Principal, active: int, cap: int) -> Problem:
    """429 for a tenant at its cap of active jobs (``active`` of at most ``cap``)."""
    return Problem(429, "too-many-active-jobs", f"tenant {principal.tenant_name!r} has {active} jobs queued or "
                   f"running, the most this service allows; submit again when some have finished",
                   headers={"Retry-After": str(ACTIVE_CAP_RETRY_AFTER_S)}, active_jobs=active, limit=cap)


async def _check_active_cap(ctx: AppContext, principal: Principal, idempotency_key: str | None) -> None:
    cap = ctx.settings.tenant_max_active_jobs
    if cap <= 0:
        return
    active = await run_in_threadpool(active_jobs, ctx, principal.tenant_id, idempotency_key)
    if active >= cap:
        raise cap_problem(principal, active, cap)


def checked_body(ctx: AppContext, tenant_id: int, body: Any) -> tuple[ExperimentSpec, str]:
    """Every check of one submission body (a spec, or a preset body) before anything is stored: the
    validated spec and the body's canonical hash, or the problem (422 with field paths under ``body``).
    Reads the database (the tenant's uploads): call it from the thread pool."""
    try:
        spec = validate_spec(expand_body(body), max_parameters=ctx.settings.max_parameters)  # a preset's spec
    except ValidationError as e:
        raise _invalid(field_errors(e.errors(), ("body",))) from None
    _check_data_root(spec, ctx)
    missing = _uploads_missing(ctx, tenant_id, spec)
    if missing:
        raise _invalid(field_errors(missing, ("body",)))
    check_preset_data(body, spec, ctx.settings)  # MNIST/CIFAR-10 presets: 422 when the files are absent
    nul = _find_nul(body)
    if nul is not None:
        raise _invalid(field_errors([{"loc": nul, "msg": "NUL characters are not allowed", "type": "string_nul",
                                      "input": None}], ("body",)))
    try:
        return spec, request_hash(body)
    except ValueError as e:  # NaN in the body
        raise Problem(422, "validation-error", f"the body is not plain JSON: {e}") from None


async def validated_submission(
    request: Request,
    ctx: CtxDep,
    principal: PrincipalDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", pattern=IDEMPOTENCY_KEY_RE.pattern,
                                                  min_length=1, max_length=255)] = None,
) -> ValidatedSubmission:
    """Every check of ``POST /v1/experiments`` before anything is stored."""
    check_idempotency_key(idempotency_key)
    check_media_type(request)
    body = parse_json_body(await request.body())  # 422 with field paths for anything not plain JSON
    spec, body_hash = await run_in_threadpool(checked_body, ctx, principal.tenant_id, body)
    await _check_active_cap(ctx, principal, idempotency_key)
    return ValidatedSubmission(body=body, spec=spec, body_hash=body_hash, idempotency_key=idempotency_key)


SubmissionDep = Annotated[ValidatedSubmission, Depends(validated_submission)]
