"""Presets in the API: ``GET /v1/presets`` lists them, and ``POST /v1/experiments`` takes
``{"preset": NAME, "budget": "quick" | "paper", "overrides": {…}}`` in place of a spec.

:func:`expand_body` turns such a body into the spec it stands for (``glorot_core.presets.spec_for``);
the submission then validates that spec like any other and stores the body as sent beside the
resolved spec. :func:`check_preset_data` refuses, at submission, a preset on MNIST or CIFAR-10 when
this service has no folder of that data set under ``GLOROT_DATA_DIR``: the job could only fail later.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import CtxDep, PrincipalDep
from api.problems import PROBLEM_JSON, Problem
from glorot_core.errors import DataUnavailable
from glorot_core.presets import FILE_DATASETS, PresetError, catalogue, get_preset, spec_for
from glorot_core.spec import ExperimentSpec
from jobs.data_roots import resolve_data_root
from jobs.settings import Settings

presets_router = APIRouter(prefix="/v1")

PRESET_KEYS = frozenset({"preset", "budget", "overrides"})


def _invalid(field: str, message: str, code: str, value: Any = None) -> Problem:
    return Problem(422, "validation-error", f"1 invalid field(s); first: {field}: {message}", title="Invalid request",
                   errors=[{"loc": ["body", field], "field": field, "pointer": f"/{field}", "message": message,
                            "code": code, "input": value}])


def preset_of(body: Any) -> str | None:
    """The preset a submission body names, or ``None`` for a plain spec."""
    return body.get("preset") if isinstance(body, dict) and "preset" in body else None


def expand_body(body: Any) -> Any:
    """The spec a submission body stands for: ``body`` itself, or the preset's spec at its budget with the
    overrides merged in. A preset body with other keys, or an unknown preset or budget, is a 422."""
    if not isinstance(body, dict) or "preset" not in body:
        return body
    extra = sorted(set(body) - PRESET_KEYS)
    if extra:
        raise _invalid(extra[0], "a preset submission takes only preset, budget and overrides (put spec fields "
                       "in overrides)", "extra_forbidden", body[extra[0]])
    name = body["preset"]
    if not isinstance(name, str):
        raise _invalid("preset", "the name of a preset (GET /v1/presets)", "string_type", name)
    budget = body.get("budget", "quick")
    try:
        return spec_for(name, budget if isinstance(budget, str) else repr(budget), body.get("overrides"))
    except PresetError as e:
        raise _invalid(e.field, str(e), f"unknown_{e.field}" if e.field != "overrides" else "dict_type",
                       body.get(e.field, name)) from None


def check_preset_data(body: Any, spec: ExperimentSpec, settings: Settings) -> None:
    """422 when a preset reads a file data set (MNIST, CIFAR-10) that this service does not have."""
    name = preset_of(body)
    if name is None or spec.data.dataset not in FILE_DATASETS:
        return
    try:
        resolve_data_root(spec, settings)
    except DataUnavailable as e:
        folder = spec.data.root or spec.data.dataset
        raise Problem(422, "data-unavailable", f"preset {name!r} reads the {spec.data.dataset} data set from local "
                      f"files, and they are absent: {e}. The operator puts them in a folder named {folder!r} under "
                      "GLOROT_DATA_DIR (docs/service.md); a Shapeset preset needs no files.",
                      title="Data set not available", dataset=spec.data.dataset, data_root=folder) from None


_PROBLEM = {"content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or unknown API key", **_PROBLEM},
    429: {"description": "over the tenant's request rate (Retry-After)", **_PROBLEM},
}


@presets_router.get("/presets", summary="Presets that reproduce the paper's figures and Table 1 cells",
                    responses=_ERRORS,
                    description="Each preset: `name`, what it `reproduces`, the paper's `claim`, its `budgets` "
                    "(`quick`: reduced, ≤ 10 min on a 2-core CPU; `paper`: the paper's) with their cost in updates, "
                    "and the spec. Submit one with `POST /v1/experiments` and "
                    "`{\"preset\": NAME, \"budget\": \"quick\", \"overrides\": {…}}`.")
async def list_presets(principal: PrincipalDep, ctx: CtxDep) -> dict[str, Any]:
    return {"presets": catalogue()}


@presets_router.get("/presets/{name}", summary="One preset",
                    responses={**_ERRORS, 404: {"description": "no preset of that name", **_PROBLEM}})
async def read_preset(name: str, principal: PrincipalDep, ctx: CtxDep) -> dict[str, Any]:
    try:
        return get_preset(name).describe()
    except PresetError as e:
        raise Problem(404, "not-found", str(e)) from None
