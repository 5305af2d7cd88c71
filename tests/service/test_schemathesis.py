"""Schemathesis against the ASGI app: the OpenAPI description and the behaviour agree.

Every operation gets positive (schema-valid) and negative (schema-violating) requests, and every
built-in check runs on each response (no server error, status codes, content types, headers and
bodies as described, negative data rejected, positive data accepted, missing required headers, auth
ignored or not, unsupported methods, …); then a stateful run follows the operations' links (submit →
read, cancel, report, metrics). A bounded number of examples keeps the module near a minute on two
cores: it is a check that the description and the routes stay in step, not an endurance fuzz.

On PostgreSQL only (the production database; SQLite's behaviour is covered by the other tests).
"""

from __future__ import annotations

from collections.abc import Iterator

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance
from service_support import auth

from api.app import create_app
from jobs.settings import Settings

EXAMPLES_PER_OPERATION = 40
STATEFUL_EXAMPLES = 15
CROSS_FIELD_CODES = {"dataset_mismatch", "parameter_cap", "too_many_snapshots", "range_order",
                     "probe_data_needs_uploaded_model", "fine_tuning_needs_labels",
                     "model_file", "unknown_upload", "jobs_repeated", "snapshot_range",
                     "cost_surface_unavailable"}
"""The spec's rules that relate values (input_dim must match the dataset, the parameter count and the
snapshot count are capped, input_range's low is below its high, probe data sets and the other rules
of uploaded models go with model.source, a model id must name an upload made before, the jobs of a
comparison are distinct and have the snapshot asked for, the cost surface is the built-in MLP's): no
JSON Schema states them, so schema-valid data can break them."""
STATEFUL_PROBLEMS = {"urn:glorot:problem:idempotency-key-reused", "urn:glorot:problem:invalid-cursor"}
"""Refusals that depend on what came before, not on the request's shape: an Idempotency-Key reused with
another body (422), a cursor that is not the next_cursor of an earlier page (400; cursors are opaque)."""

UPLOAD_PATHS = {"/v1/models", "/v1/data"}
"""Upload routes: a file's bytes and the JSON inside the `metadata` part cannot be described by the
schema, so schema-valid multipart bodies are refused for their content (415 unknown format, 422 corrupt,
unsafe or mismatched file)."""

pytestmark = pytest.mark.parametrize("db_url", ["postgres"], indirect=True)


@pytest.fixture
def app(settings: Settings) -> Iterator[FastAPI]:
    """The app with no runner: submitted jobs stay QUEUED (the fuzzer submits many)."""
    yield create_app(settings)


@pytest.fixture
def api_schema(app: FastAPI, key: str) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    schema.config.update(suppress_health_check=list(hypothesis.HealthCheck))

    @schema.auth()
    class Bearer:
        """The tenant's key, set through schemathesis' auth hooks so that its auth checks can vary it."""

        def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
            return key

        def set(self, case: schemathesis.Case, data: str, context: schemathesis.AuthContext) -> None:
            case.headers = {**(case.headers or {}), **auth(data)}

    # replaced by positive_data_accepted below (registered with every other built-in check)
    schema.config.checks.update(excluded_check_names=["positive_data_acceptance"])
    schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                    max_examples=EXAMPLES_PER_OPERATION, deterministic=True)
    return schema


@schemathesis.check
def positive_data_accepted(ctx: schemathesis.CheckContext, response: schemathesis.Response,
                           case: schemathesis.Case) -> bool | None:
    """Schemathesis' positive_data_acceptance, except for a 422 that names only cross-field rules and
    the refusals of STATEFUL_PROBLEMS."""
    if (response.status_code in (415, 422) and case.operation.path in UPLOAD_PATHS
            and response.headers.get("content-type", [""])[0].startswith("application/problem+json")):
        return None
    if response.status_code in (400, 422) and case.meta is not None and case.meta.generation.mode.is_positive:
        doc = response.json()
        errors = doc.get("errors") or []
        if doc.get("type") in STATEFUL_PROBLEMS or (errors and all(e.get("code") in CROSS_FIELD_CODES
                                                                    for e in errors)):
            return None
    return positive_data_acceptance(ctx, response, case)


def _call_and_validate(case: schemathesis.Case, key: str) -> None:
    case.call_and_validate(excluded_checks=[positive_data_acceptance])


def _operations(schema: schemathesis.BaseSchema) -> list[schemathesis.APIOperation]:
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_every_operation_behaves_as_described(api_schema: schemathesis.BaseSchema, key: str,
                                              mode: GenerationMode) -> None:
    """(schemathesis' pytest plugin predates pytest 9: each operation is driven with Hypothesis here.)"""
    operations = _operations(api_schema)
    assert len(operations) >= 8
    nothing_to_negate = []
    for operation in operations:

        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis.settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
                             suppress_health_check=list(hypothesis.HealthCheck), database=None)
        def check(case: schemathesis.Case) -> None:
            _call_and_validate(case, key)

        try:
            check()
        except hypothesis.errors.Unsatisfiable:
            if mode is GenerationMode.POSITIVE:
                raise
            nothing_to_negate.append(operation.path)
    # an operation whose only input is a free string (a job id) has no invalid request to make; those
    # with constrained input all got negative cases
    constrained = {"/v1/experiments", "/v1/jobs", "/v1/jobs/{job_id}/metrics", "/v1/jobs/{job_id}/report"}
    assert not constrained & set(nothing_to_negate), nothing_to_negate


def test_stateful_links(api_schema: schemathesis.BaseSchema, key: str) -> None:
    machine = api_schema.as_state_machine()
    machine.run(settings=hypothesis.settings(max_examples=STATEFUL_EXAMPLES, deadline=None, derandomize=True,
                                             stateful_step_count=6,
                                             suppress_health_check=list(hypothesis.HealthCheck), database=None))
