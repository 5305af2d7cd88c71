"""Multi-seed suites over HTTP (docs/suites.md):

    POST /v1/suites                          {"preset": NAME, "budget": …, "overrides": {…}, "seeds": N | [s, …]}
                                             or {"specs": [spec or preset body, …], "seeds": N | [s, …]}
    GET  /v1/suites[?state=&limit=&cursor=]  the tenant's suites, newest first, paged as /v1/jobs
    GET  /v1/suites/{id}                     aggregate state, counts, progress, children (failed ones named)
    GET  /v1/suites/{id}/report              per configuration: each seed's final statistics, mean, std, 95 % CI
    POST /v1/suites/{id}/cancel              cancels every child that has not ended
    GET  /v1/suites/{id}/figures[/NAME.png|svg]   Figs 11–12 with the seeds' band

Every child is an ordinary job made by the submission path of ``POST /v1/experiments``: the same
checks (``api.submission.checked_body``), ``services.submit_job`` (the lifecycle's submit) and the
dispatcher, so the tenant's cap on active jobs, fair dispatch and the workers treat them like any
other job and many workers run them at once. Listing, reading, cancelling and drawing suites are
``api.suite_service``'s (shared with the suite's HTML page); persistence and aggregation are ``jobs.suites``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from api import services, suite_service
from api.deps import AppContext, CtxDep, Principal, PrincipalDep
from api.json_body import parse_json_body
from api.presets import preset_of
from api.problems import PROBLEM_JSON, Problem
from api.query_params import PageCursor, PageLimit, page_size, reject_repeated_scalars
from api.routes import BAD_CURSOR
from api.security import request_hash
from api.submission import (
    ACTIVE_CAP_RETRY_AFTER_S,
    IDEMPOTENCY_KEY_RE,
    active_jobs,
    check_idempotency_key,
    check_media_type,
    checked_body,
)
from glorot_core import figures
from glorot_core.presets import get_preset, merge
from glorot_core.spec import MAX_SEED, ExperimentSpec
from jobs import suites
from jobs.models import JobState

suites_router = APIRouter(prefix="/v1")

MAX_SEEDS = 20
"""Most seeds per configuration (the paper's error bars need a handful; 20 bounds a suite's size)."""
MAX_CONFIGS = 15
"""Most configurations per suite: Table 1 has 15 cells."""
SUITE_KEYS = {"preset": frozenset({"preset", "budget", "overrides", "seeds"}), "specs": frozenset({"specs", "seeds"})}

_PROBLEM = {"content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or unknown API key", **_PROBLEM},
    404: {"description": "no such suite for this tenant", **_PROBLEM},
    422: {"description": "invalid request, with field paths", **_PROBLEM},
    429: {"description": "over the tenant's request rate or active-job cap (Retry-After)", **_PROBLEM},
}
_SEEDS_SCHEMA = {"oneOf": [
    {"type": "integer", "minimum": 1, "maximum": MAX_SEEDS,
     "description": "how many seeds: the configuration's train.seed, +1, +2, …"},
    {"type": "array", "minItems": 1, "maxItems": MAX_SEEDS, "uniqueItems": True,
     "items": {"type": "integer", "minimum": 0, "maximum": MAX_SEED}, "description": "the train.seed values"},
]}
_BODY_SCHEMA = {
    "type": "object", "required": ["specs", "seeds"], "additionalProperties": False,
    "properties": {
        "specs": {"type": "array", "minItems": 1, "maxItems": MAX_CONFIGS,
                  "items": {"$ref": "#/components/schemas/ExperimentSpec"}},
        "seeds": _SEEDS_SCHEMA,
    },
}


# ---------------------------------------------------------------------------------------- the body


def _invalid(errors: list[dict[str, Any]]) -> Problem:
    first = errors[0]
    return Problem(422, "validation-error", f"{len(errors)} invalid field(s); first: {first['field'] or '(body)'}: "
                   f"{first['message']}", title="Invalid request", errors=errors)


def _error(path: list[str | int], message: str, code: str, value: Any = None) -> Problem:
    return _invalid([{"loc": ["body", *path], "field": ".".join(map(str, path)),
                      "pointer": "/" + "/".join(map(str, path)), "message": message, "code": code, "input": value}])


def _rebased(problem: Problem, at: list[str | int]) -> Problem:
    """A 422 about one configuration's body, its field paths moved under ``at`` (``specs.2.…``)."""
    errors = problem.extra.get("errors")
    if problem.status != 422 or not errors:
        return problem
    moved = []
    for e in errors:
        loc = list(e.get("loc", []))
        rel = [*at, *(loc[1:] if loc[:1] == ["body"] else loc)]
        moved.append({**e, "loc": ["body", *rel], "field": ".".join(map(str, rel)),
                      "pointer": "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in rel)})
    return _invalid(moved)


def _as_int(v: Any) -> int | None:
    """``v`` as an integer when JSON Schema calls it one (``3`` or ``3.0``; never ``true``), else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return None


def _configs_of(body: Any) -> tuple[list[dict[str, Any]], list[str | int]]:
    """The configuration bodies a suite body asks for, and where in the body they are (for errors)."""
    if not isinstance(body, dict):
        raise _invalid([{"loc": ["body"], "field": "", "pointer": "", "message": "a suite is a JSON object",
                         "code": "dict_type"}])
    form = [k for k in SUITE_KEYS if k in body]
    if len(form) != 1:
        raise _error(["specs"], "give either preset (with budget, overrides) or specs (a list of specs or preset "
                     "bodies), and seeds", "missing" if not form else "value_error")
    extra = sorted(set(body) - SUITE_KEYS[form[0]])
    if extra:
        raise _error([extra[0]], f"not a field of a suite of {form[0]} (fields: "
                     f"{', '.join(sorted(SUITE_KEYS[form[0]]))})", "extra_forbidden", body[extra[0]])
    if "seeds" not in body:
        raise _error(["seeds"], f"how many seeds (1 to {MAX_SEEDS}) or the list of seeds", "missing")
    if form == ["preset"]:
        return [{k: body[k] for k in ("preset", "budget", "overrides") if k in body}], []
    specs = body["specs"]
    if not isinstance(specs, list) or not 1 <= len(specs) <= MAX_CONFIGS:
        raise _error(["specs"], f"a list of 1 to {MAX_CONFIGS} specs or preset bodies", "list_type"
                     if not isinstance(specs, list) else "too_long" if specs else "too_short")
    for i, s in enumerate(specs):
        if not isinstance(s, dict):
            raise _error(["specs", i], "a spec or a preset body (an object)", "dict_type", s)
    return specs, ["specs"]


def _seeds(body: dict[str, Any], bases: list[int]) -> list[list[int]]:
    """The seeds of each configuration: N → its own train.seed + 0 … N−1; a list → those, for each."""
    seeds = body["seeds"]
    count = _as_int(seeds)
    if count is not None:
        if not 1 <= count <= MAX_SEEDS:
            raise _error(["seeds"], f"from 1 to {MAX_SEEDS} seeds", "less_than_equal" if count > 0
                         else "greater_than_equal", seeds)
        for base in bases:
            if base + count - 1 > MAX_SEED:
                raise _error(["seeds"], f"train.seed {base} + {count - 1} passes the largest seed {MAX_SEED}; "
                             "give the seeds as a list", "less_than_equal", seeds)
        return [[base + k for k in range(count)] for base in bases]
    if not isinstance(seeds, list) or not 1 <= len(seeds) <= MAX_SEEDS:
        raise _error(["seeds"], f"a number of seeds (1 to {MAX_SEEDS}) or a list of 1 to {MAX_SEEDS} seeds",
                     "int_type" if not isinstance(seeds, list) else "too_long" if seeds else "too_short", seeds)
    listed = []
    for k, s in enumerate(seeds):
        seed = _as_int(s)
        if seed is None or not 0 <= seed <= MAX_SEED:
            raise _error(["seeds", k], f"a seed: an integer from 0 to {MAX_SEED}", "int_type", s)
        listed.append(seed)
    if len(set(listed)) != len(listed):
        raise _error(["seeds"], "the seeds must differ from each other", "unique_items", seeds)
    return [list(listed) for _ in bases]


def _with_seed(config: dict[str, Any], seed: int) -> dict[str, Any]:
    """The child's body: the configuration's with ``train.seed`` = ``seed`` (in a preset's overrides)."""
    if preset_of(config) is not None:
        return {**config, "overrides": merge(config.get("overrides") or {}, {"train": {"seed": seed}})}
    return merge(config, {"train": {"seed": seed}})


def _label(config: dict[str, Any], spec: ExperimentSpec, index: int) -> str:
    name = preset_of(config)
    if name is not None:
        return f"{name} ({config.get('budget', 'quick')})"
    if spec.name:
        return spec.name
    m = spec.model.model_dump(mode="json")
    parts = [m.get("activation"), f"{m['init']} init" if m.get("init") else None,
             "×".join(map(str, m["hidden"])) if m.get("hidden") else None]
    return " ".join(str(p) for p in parts if p) or f"configuration {index}"


class Plan:
    """What a valid suite body asks for: the configurations as stored, their seeds, and per child
    (configuration × seed, in that order) its body, validated spec and body hash."""

    def __init__(self, configs: list[dict[str, Any]], seeds: list[list[int]],
                 children: list[tuple[int, int, dict[str, Any], ExperimentSpec, str]]) -> None:
        self.configs, self.seeds, self.children = configs, seeds, children


def plan_suite(ctx: AppContext, tenant_id: int, body: Any) -> Plan:
    """Check a suite body and every child it makes, as ``POST /v1/experiments`` checks one (422 with
    the field path in the suite's body). Reads the database (uploads): call it in the thread pool."""
    bodies, at = _configs_of(body)
    specs: list[ExperimentSpec] = []
    for i, config in enumerate(bodies):
        try:
            specs.append(checked_body(ctx, tenant_id, config)[0])
        except Problem as p:
            raise _rebased(p, [*at, i] if at else []) from None
    seeds = _seeds(body, [s.train.seed for s in specs])
    configs, children = [], []
    for i, (config, spec) in enumerate(zip(bodies, specs, strict=True)):
        name = preset_of(config)
        configs.append({"body": config, "label": _label(config, spec, i), "preset": name,
                        "budget": config.get("budget", "quick") if name is not None else None,
                        "paper_test_error_percent": get_preset(name).paper_value if name is not None else None})
        for k, seed in enumerate(seeds[i]):
            child = _with_seed(config, seed)
            try:
                child_spec, child_hash = checked_body(ctx, tenant_id, child)
            except Problem as p:
                raise _rebased(p, [*at, i] if at else []) from None
            children.append((i, k, child, child_spec, child_hash))
    return Plan(configs, seeds, children)


# ---------------------------------------------------------------------------------------- the routes


def _check_cap(ctx: AppContext, principal: Principal, adding: int) -> None:
    cap = ctx.settings.tenant_max_active_jobs
    if cap <= 0:
        return
    active = active_jobs(ctx, principal.tenant_id)
    if active + adding > cap:
        raise Problem(429, "too-many-active-jobs", f"tenant {principal.tenant_name!r} has {active} jobs queued or "
                      f"running and this suite would add {adding}, past the {cap} this service allows; submit it "
                      "when some have finished, or with fewer seeds or configurations",
                      headers={"Retry-After": str(ACTIVE_CAP_RETRY_AFTER_S)}, active_jobs=active, limit=cap)


def _known_key(ctx: AppContext, tenant_id: int, idempotency_key: str) -> bool:
    with ctx.factory() as session:
        return suites.by_key(session, tenant_id, idempotency_key) is not None


def _create(ctx: AppContext, principal: Principal, body: Any, idempotency_key: str | None) -> tuple[dict[str, Any],
                                                                                                    bool]:
    plan = plan_suite(ctx, principal.tenant_id, body)
    try:
        body_hash = request_hash(body)
    except ValueError as e:
        raise Problem(422, "validation-error", f"the body is not plain JSON: {e}") from None
    if idempotency_key is None or not _known_key(ctx, principal.tenant_id, idempotency_key):
        _check_cap(ctx, principal, len(plan.children))  # a replay adds nothing (or only what a crash left out)
    with ctx.factory() as session:
        try:
            suite, created = suites.create(session, tenant_id=principal.tenant_id, configs=plan.configs,
                                           seeds=plan.seeds, idempotency_key=idempotency_key, request_hash=body_hash)
        except suites.SuiteKeyReused as e:
            raise Problem(422, "idempotency-key-reused", str(e), suite_id=e.suite_id) from None
        have = {c.position for c in suites.children(session, suite)}
        for position, (ci, k, child, spec, child_hash) in enumerate(plan.children):
            if position in have:  # a replay of a suite left incomplete makes only the missing children
                continue
            stored = services.submit_job(session, tenant_id=principal.tenant_id, kind="experiment", spec=child,
                                         resolved=spec.model_dump(mode="json"), total_steps=spec.train.steps,
                                         idempotency_key=suites.child_key(suite.id, position), body_hash=child_hash)
            suites.link_child(session, suite.id, position, ci, k, stored.job.id)
            if stored.created:
                ctx.dispatcher.dispatch(stored.job.id)  # each child on its own: any free worker may take it
        return suites.status(suite, suites.children(session, suite)), created


@suites_router.post(
    "/suites", status_code=201, summary="Submit a multi-seed suite",
    description="One child job per configuration × seed, each submitted like `POST /v1/experiments` (same "
    "checks, the tenant's cap on active jobs counts them all) and dispatched on its own, so many workers run "
    "them at once. The body is `{\"specs\": [spec, …], \"seeds\": N}` or `{\"preset\": NAME, \"budget\": "
    "\"quick\"|\"paper\", \"overrides\": {…}, \"seeds\": N}` (a `specs` entry may also be a preset body). "
    f"`seeds`: 1 to {MAX_SEEDS} (the configuration's `train.seed` + 0, 1, …) or a list of seeds. 201 with "
    "`Location: /v1/suites/{id}` and the children's job ids; with `Idempotency-Key`, the same key and body "
    "return the original suite (200, `Idempotent-Replayed: true`).",
    responses={**_ERRORS, 200: {"description": "the original suite of a repeated Idempotency-Key"},
               413: {"description": "body too large", **_PROBLEM}, 415: {"description": "not JSON", **_PROBLEM}},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": _BODY_SCHEMA}}}},
)
async def submit_suite(
    request: Request, ctx: CtxDep, principal: PrincipalDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", pattern=IDEMPOTENCY_KEY_RE.pattern,
                                                  min_length=1, max_length=255)] = None,
) -> JSONResponse:
    check_idempotency_key(idempotency_key)
    check_media_type(request)
    body = parse_json_body(await request.body())
    out, created = await run_in_threadpool(_create, ctx, principal, body, idempotency_key)
    headers = {"Location": f"/v1/suites/{out['id']}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(out, status_code=201 if created else 200, headers=headers)


@suites_router.get(
    "/suites", summary="List suites (newest first)", dependencies=[Depends(reject_repeated_scalars)],
    description="The caller's suites, a page at a time as `GET /v1/jobs` (`limit`, then `cursor` = the previous "
    "page's `next_cursor`). Each is `GET /v1/suites/{id}` without `children` and `failed`: id, state, "
    "`complete`, `counts` per state, progress, created_at and the configurations with their preset and seeds. "
    "`state` keeps the suites in that aggregate state.",
    responses={**{k: v for k, v in _ERRORS.items() if k != 404}, 400: BAD_CURSOR},
)
async def list_suites(
    ctx: CtxDep, principal: PrincipalDep,
    state: Annotated[JobState | None, Query(description="only suites in this aggregate state")] = None,
    limit: PageLimit = None,
    cursor: PageCursor = None,
) -> dict[str, Any]:
    return await run_in_threadpool(suite_service.list_suites, ctx, principal.tenant_id, state=state,
                                   limit=page_size(ctx.settings, limit), cursor=cursor)


@suites_router.get("/suites/{suite_id}", summary="A suite's state, progress and children", responses=_ERRORS,
                   description="`state` (QUEUED, RUNNING, then SUCCEEDED, FAILED or CANCELLED once every child "
                   "ended), `counts` per state, `progress` (mean over the children; an ended child counts as "
                   "done), each child's job id, configuration, seed and state, and the failed children with "
                   "their errors.")
async def read_suite(suite_id: str, ctx: CtxDep, principal: PrincipalDep) -> dict[str, Any]:
    return await run_in_threadpool(suite_service.status, ctx, principal.tenant_id, suite_id)


@suites_router.get("/suites/{suite_id}/report", summary="The suite report: statistics across seeds",
                   responses=_ERRORS,
                   description="Per configuration and key statistic (test error, training loss, per-layer "
                   "activation std, saturation, back-propagated and weight gradient std, Jacobian mean singular "
                   "value when measured): every SUCCEEDED seed's value at its last snapshot, their mean, sample "
                   "std and 95 % confidence interval (Student's t), and for Table 1 presets the paper's test "
                   "error beside ours. Answered in every state: `complete` is false while children run (the "
                   "statistics then cover the seeds that have SUCCEEDED). Schema: docs/suites.md.")
async def read_suite_report(suite_id: str, ctx: CtxDep, principal: PrincipalDep) -> dict[str, Any]:
    return await run_in_threadpool(suite_service.report, ctx, principal.tenant_id, suite_id)


@suites_router.post("/suites/{suite_id}/cancel", status_code=202, summary="Cancel a suite and its children",
                    description="Every child not yet ended is cancelled as `POST /v1/jobs/{id}/cancel` would: a "
                    "QUEUED one at once, a RUNNING one at its runner's next check. 409 when every child has "
                    "already ended.",
                    responses={**_ERRORS, 409: {"description": "every child already ended", **_PROBLEM}})
async def cancel_suite(suite_id: str, ctx: CtxDep, principal: PrincipalDep) -> JSONResponse:
    out, asked = await run_in_threadpool(suite_service.cancel, ctx, principal.tenant_id, suite_id)
    for job_id in asked:  # this process wrote: its next poll of each child must not come from the cache
        ctx.job_cache.invalidate(principal.tenant_id, job_id)
    return JSONResponse(out, status_code=202)


# ------------------------------------------------------------------------------------------- figures


@suites_router.get("/suites/{suite_id}/figures", summary="The figures of a suite",
                   description="Name, the paper's figure, title and the PNG and SVG addresses of each figure of "
                   "the suite. 409 until a child has SUCCEEDED.",
                   responses={**_ERRORS, 409: {"description": "no SUCCEEDED child yet", **_PROBLEM}})
async def list_suite_figures(suite_id: str, ctx: CtxDep, principal: PrincipalDep) -> dict[str, Any]:
    return await run_in_threadpool(suite_service.figure_listing, ctx, principal.tenant_id, suite_id)


@suites_router.get(
    "/suites/{suite_id}/figures/{name}.{fmt}", summary="One figure of a suite, PNG or SVG", response_class=Response,
    description="`test_error` (Figs 11–12): test error against examples seen, one curve per configuration (the "
    "mean over its SUCCEEDED seeds) with the band its seeds span (minimum to maximum).",
    responses={**_ERRORS, 200: {"content": {"image/png": {}, "image/svg+xml": {}}},
               409: {"description": "no SUCCEEDED child yet", **_PROBLEM}},
)
async def read_suite_figure(suite_id: str, ctx: CtxDep, principal: PrincipalDep,
                            name: str = Path(pattern=r"^[a-z0-9_]{1,64}$"),
                            fmt: str = Path(pattern=r"^(png|svg)$")) -> Response:
    data = await run_in_threadpool(suite_service.figure, ctx, principal.tenant_id, suite_id, name, fmt)
    return Response(data, media_type=figures.MEDIA_TYPES[fmt], headers={"Cache-Control": "private, no-cache"})
