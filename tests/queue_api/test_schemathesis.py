"""Property-based requests against the shim's own OpenAPI document (schemathesis): whatever a
client sends, the shim answers without a server error and as its schema promises."""

from __future__ import annotations

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

CHECKS = [not_a_server_error, response_schema_conformance]


def test_no_server_error_and_every_response_matches_the_schema(api: httpx.Client) -> None:
    api.post("/queue/pause")  # generated tasks stay queued instead of occupying the GPU slot
    try:
        schema = schemathesis.openapi.from_url(f"{api.base_url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) == 11  # every endpoint of the contract

        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
            def check(case: schemathesis.Case) -> None:
                case.call_and_validate(checks=CHECKS)

            check()
    finally:
        api.post("/queue/resume")
