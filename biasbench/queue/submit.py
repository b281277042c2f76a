"""Submitting a task: validate everything first, then create one held Prefect flow run.

The one submission path for the REST shim, scripts and tests. `prefect deployment run` and the UI
create runs directly; those join the queue when they start (flows/queue_turn.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.exceptions import ObjectNotFound
from prefect.utilities.schema_tools.validation import validate

from biasbench.errors import InvalidSubmission, QueueError, UnknownTask
from biasbench.queue.gateway import deployment_name, held_state
from biasbench.queue.model import HELD_QUEUED, HELD_WAITING, QUEUE_TAG, TASK_TYPES

QUEUE_PARAMETERS = ("upstream", "priority")


async def submit(
    client: PrefectClient,
    task_type: str,
    config: Mapping[str, Any],
    *,
    upstream: Sequence[str] = (),
    priority: int = 0,
    label: str | None = None,
) -> str:
    """Queue one task; returns its flow-run id. Refused input raises InvalidSubmission or
    UnknownTask naming the field, and leaves nothing behind."""
    if task_type not in TASK_TYPES:
        raise InvalidSubmission(
            "task_type", f"unknown task type {task_type!r}; one of {', '.join(TASK_TYPES)}"
        )
    for key in QUEUE_PARAMETERS:
        if key in config:
            raise InvalidSubmission(f"config.{key}", f"give {key} as the submission's own field")
    try:
        deployment = await client.read_deployment_by_name(deployment_name(task_type))
    except ObjectNotFound as exc:
        raise QueueError(
            f"deployment {deployment_name(task_type)} does not exist: "
            "run `python -m deployments setup`"
        ) from exc
    await _check_upstream(client, upstream)
    parameters = {**config, "upstream": list(upstream) or None, "priority": priority}
    _check_parameters(parameters, deployment.parameter_openapi_schema or {})
    flow_run = await client.create_flow_run_from_deployment(
        deployment.id,
        parameters=parameters,
        state=held_state(HELD_WAITING if upstream else HELD_QUEUED),
        name=label,
        tags=[QUEUE_TAG],
    )
    return str(flow_run.id)


async def _check_upstream(client: PrefectClient, upstream: Sequence[str]) -> None:
    ids: list[UUID] = []
    for value in upstream:
        try:
            ids.append(UUID(str(value)))
        except ValueError:
            raise InvalidSubmission("upstream", f"{value!r} is not a task id") from None
    if len(set(ids)) != len(ids):
        raise InvalidSubmission("upstream", "names the same task twice")
    if not ids:
        return
    found = await client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
    known = {r.id for r in found if QUEUE_TAG in r.tags}
    for run_id in ids:
        if run_id not in known:
            raise UnknownTask(f"upstream: task {run_id} does not exist")


def _check_parameters(parameters: dict[str, Any], schema: dict[str, Any]) -> None:
    known = set(schema.get("properties", {}))
    for key in parameters:
        if key not in known:
            raise InvalidSubmission(f"config.{key}", "unknown field for this task type")
    errors = validate(parameters, schema, raise_on_error=False, preprocess=True)
    if errors:
        error = errors[0]
        path = error.json_path.removeprefix("$").removeprefix(".")
        if error.validator == "required":
            path = str(error.message).split("'")[1]
        raise InvalidSubmission(f"config.{path}" if path else "config", str(error.message))
