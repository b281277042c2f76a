"""Property-based requests against the shim's own OpenAPI document (schemathesis): whatever a
client sends, the shim answers without a server error of its own and as its schema promises.

The one 5xx allowed is the documented "try again" answer (503, `Retry-After`, the reason) for a
moment in which the session's Prefect server did not answer at all: on a loaded CI machine
that happened once, and it is the answer a client must get then (`tests/queue_api/
test_health_probe.py` checks that a merely slow server is not called down)."""

from __future__ import annotations

import asyncio
from uuid import UUID

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from prefect import get_client
from prefect.states import Cancelled
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import response_schema_conformance

from biasbench.queue import gateway

PREFECT_SILENT: list[str] = []  # the operations answered "the Prefect server has not answered"


def no_server_error_of_its_own(
    ctx: CheckContext, response: Response, case: schemathesis.Case
) -> None:
    if (
        response.status_code == 503
        and any(name.lower() == "retry-after" for name in response.headers)
        and str(response.json().get("detail", "")).startswith("the Prefect server at ")
    ):
        PREFECT_SILENT.append(case.operation.label)
        return None
    return not_a_server_error(ctx, response, case)


CHECKS = [no_server_error_of_its_own, response_schema_conformance]


def test_no_server_error_and_every_response_matches_the_schema(api: httpx.Client) -> None:
    api.post("/queue/pause")  # generated tasks stay queued instead of occupying the GPU slot
    try:
        schema = schemathesis.openapi.from_url(f"{api.base_url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) == 12  # every endpoint of the contract, and GET /config

        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
            def check(case: schemathesis.Case) -> None:
                # What is checked is the answer, not its speed: the session's SQLite-backed
                # Prefect server can take over schemathesis's 10 s default on a loaded machine.
                case.call_and_validate(checks=CHECKS, timeout=60)

            check()
        print(f"answered 503 while Prefect was silent: {PREFECT_SILENT or 'none'}")
    finally:
        asyncio.run(cancel_unfinished_queue_runs())  # the generated tasks must not run later
        api.post("/queue/resume")


async def cancel_unfinished_queue_runs() -> None:
    async with get_client() as client:
        for run in await gateway.unfinished_runs(client):
            if run.state_type in {"PAUSED", "SCHEDULED", "PENDING"}:
                await client.set_flow_run_state(
                    UUID(run.id), Cancelled(message="test cleanup"), force=True
                )
    await gateway.clear_stop()  # a generated POST /queue/stop must not end later managers
