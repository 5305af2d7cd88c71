"""The submit route's request checks as one FastAPI dependency: it hands the route a
:class:`ValidatedSubmission` (the body as sent, the validated spec, its canonical hash and the
Idempotency-Key), or answers with the problem: 415 for a multipart body, 422 with field paths for
invalid JSON, an invalid spec, NUL characters (PostgreSQL's JSONB cannot store them) or an
Idempotency-Key that is not 1-255 visible ASCII characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from pydantic import ValidationError

from api.deps import CtxDep
from api.json_body import parse_json_body
from api.problems import Problem, field_errors
from api.security import request_hash
from glorot_core.spec import ExperimentSpec, validate_spec

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


def _check_idempotency_key(key: str | None) -> None:
    if key is not None and not IDEMPOTENCY_KEY_RE.match(key):
        raise _invalid([{"loc": ["header", "idempotency-key"], "field": "idempotency-key",
                         "message": "1-255 visible ASCII characters", "code": "string_pattern"}])


def _check_media_type(request: Request) -> None:
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if ctype.startswith("multipart/"):  # lenient otherwise: `curl -d @spec.json` sends a form content type
        raise Problem(415, "unsupported-media-type", f"send the spec as application/json, not {ctype!r}")


async def validated_submission(
    request: Request,
    ctx: CtxDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", pattern=IDEMPOTENCY_KEY_RE.pattern,
                                                  min_length=1, max_length=255)] = None,
) -> ValidatedSubmission:
    """Every check of ``POST /v1/experiments`` before anything is stored."""
    _check_idempotency_key(idempotency_key)
    _check_media_type(request)
    body = parse_json_body(await request.body())  # 422 with field paths for anything not plain JSON
    try:
        spec = validate_spec(body, max_parameters=ctx.settings.max_parameters)
    except ValidationError as e:
        raise _invalid(field_errors(e.errors(), ("body",))) from None
    nul = _find_nul(body)
    if nul is not None:
        raise _invalid(field_errors([{"loc": nul, "msg": "NUL characters are not allowed", "type": "string_nul",
                                      "input": None}], ("body",)))
    try:
        body_hash = request_hash(body)
    except ValueError as e:  # NaN in the body
        raise Problem(422, "validation-error", f"the body is not plain JSON: {e}") from None
    return ValidatedSubmission(body=body, spec=spec, body_hash=body_hash, idempotency_key=idempotency_key)


SubmissionDep = Annotated[ValidatedSubmission, Depends(validated_submission)]
