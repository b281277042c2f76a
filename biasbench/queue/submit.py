"""Submitting a task: validate everything first, then create one held Prefect flow run.

The one submission path for the REST shim, scripts and tests. `prefect deployment run` and the UI
create runs directly; those join the queue when they start (flows/queue_turn.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.utilities.schema_tools.validation import validate

from biasbench.errors import InvalidSubmission
from biasbench.queue import gateway
from biasbench.queue.model import HELD_QUEUED, HELD_WAITING, QUEUE_PARAMETERS, TASK_TYPES, TaskType


async def submit(
    client: PrefectClient,
    task_type: str,
    config: Mapping[str, Any],
    *,
    upstream: Sequence[str] = (),
    priority: int = 0,
    label: str | None = None,
) -> str:
    """Queue one task; returns its flow-run id. Refused input raises InvalidSubmission naming
    the field, and leaves nothing behind."""
    if task_type not in TASK_TYPES:
        raise InvalidSubmission(
            "task_type", f"unknown task type {task_type!r}; one of {', '.join(TASK_TYPES)}"
        )
    kind = TaskType(task_type)
    for key in QUEUE_PARAMETERS:
        if key in config:
            raise InvalidSubmission(f"config.{key}", f"give {key} as the submission's own field")
    deployment = await gateway.task_deployment(client, kind)
    await _check_upstream(client, upstream)
    parameters = {**config, "upstream": list(upstream) or None, "priority": priority}
    _check_parameters(parameters, deployment.parameter_schema)
    return await gateway.create_held_run(
        client,
        deployment,
        parameters,
        label=label,
        held_as=HELD_WAITING if upstream else HELD_QUEUED,
    )


async def _check_upstream(client: PrefectClient, upstream: Sequence[str]) -> None:
    ids: list[str] = []
    for value in upstream:
        try:
            ids.append(str(UUID(str(value))))
        except ValueError:
            raise InvalidSubmission("upstream", f"{value!r} is not a task id") from None
    if len(set(ids)) != len(ids):
        raise InvalidSubmission("upstream", "names the same task twice")
    known = await gateway.runs_by_id(client, ids)
    for run_id in ids:
        if run_id not in known:
            raise InvalidSubmission("upstream", f"task {run_id} does not exist")


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
