"""Submitting a task: validate everything first, then create one held Prefect flow run.

The one submission path for the REST shim, scripts and tests. `prefect deployment run` and the UI
create runs directly; those join the queue when they start (flows/queue_turn.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.utilities.schema_tools.validation import validate
from sqlalchemy import Engine

from biasbench.db.engine import session_scope
from biasbench.errors import BiasBenchError, InvalidSubmission
from biasbench.models_catalogue import Catalogue
from biasbench.queue import gateway
from biasbench.queue.model import (
    HELD_QUEUED,
    HELD_WAITING,
    MAX_UPSTREAM,
    QUEUE_PARAMETERS,
    TASK_TYPES,
    QueueRun,
    QueueStatus,
    TaskType,
)
from biasbench.queue.payload import MAX_LABEL_LENGTH, check_size, check_value
from biasbench.queue.wiring import Contradiction, Upstream, filled_parameters, wire
from biasbench.results import result_of_flow_run
from biasbench.task_checks import check_task


@dataclass(frozen=True)
class Submission:
    """A submission that passed every check: creating it is one Prefect call."""

    task_type: TaskType
    deployment: gateway.TaskDeployment
    parameters: dict[str, Any]
    label: str | None
    held_as: str


@dataclass(frozen=True)
class SubmitRequest:
    """One task to queue, and how to check it: what `submit` and `check_submission` take."""

    task_type: str
    config: Mapping[str, Any]
    _: KW_ONLY
    upstream: Sequence[str] = ()
    priority: int = 0
    label: str | None = None
    # The domain database: the datasets and runs the config names are looked up too, as the
    # task's flow will when it starts.
    db: Engine | None = None
    # Errors about upstream tasks name the field and the tasks so (e.g. the API's task ids).
    upstream_field: str = "upstream"
    upstream_names: Mapping[str, str] | None = None
    # A model the catalogue does not know is refused with the known ones.
    catalogue: Catalogue | None = None


async def submit(client: PrefectClient, request: SubmitRequest) -> str:
    """Queue one task; returns its flow-run id. Refused input raises InvalidSubmission naming
    the field, and leaves nothing behind."""
    return await create(client, await check_submission(client, request))


async def check_submission(client: PrefectClient, request: SubmitRequest) -> Submission:
    """Every check of `submit`, without creating anything."""
    kind = _task_type(request.task_type)
    config, priority, names = request.config, request.priority, request.upstream_names or {}
    for key in QUEUE_PARAMETERS:
        if key in config:
            raise InvalidSubmission(f"config.{key}", f"give {key} as the submission's own field")
    check_value(dict(config), "config")
    check_size(config)
    check_value(priority, "priority")
    ids = _upstream_ids(request.upstream, request.upstream_field)
    deployment = await gateway.task_deployment(client, kind)
    upstream_runs = await _upstream_runs(client, ids, request.upstream_field, names)
    parameters = {**config, "upstream": ids or None, "priority": priority}
    _check_parameters(parameters, deployment.parameter_schema)
    _check_task(
        kind, config, deployment.parameter_schema, upstream_runs, request.db, request.catalogue
    )
    if request.db is not None:
        _check_wiring(kind, parameters, upstream_runs, request.db, names)
    _check_label(request.label)
    return Submission(
        kind, deployment, parameters, request.label, HELD_WAITING if ids else HELD_QUEUED
    )


async def create(client: PrefectClient, submission: Submission, *, tags: Sequence[str] = ()) -> str:
    """Create the checked submission's run, held in the queue; `tags` go on it besides the
    queue's (the API's task id). Returns its flow-run id."""
    return await gateway.create_held_run(
        client,
        submission.deployment,
        submission.parameters,
        label=submission.label,
        held_as=submission.held_as,
        tags=tags,
    )


def _task_type(task_type: str) -> TaskType:
    if task_type not in TASK_TYPES:
        raise InvalidSubmission(
            "task_type", f"unknown task type {task_type!r}; one of {', '.join(TASK_TYPES)}"
        )
    return TaskType(task_type)


def _check_label(label: str | None) -> None:
    check_value(label, "label")
    if label is not None and len(label) > MAX_LABEL_LENGTH:
        raise InvalidSubmission("label", f"at most {MAX_LABEL_LENGTH} characters")


def _upstream_ids(upstream: Sequence[str], field: str) -> list[str]:
    """Distinct upstream ids, capped before anything is looked up."""
    distinct = list(dict.fromkeys(str(value) for value in upstream))
    if len(distinct) > MAX_UPSTREAM:
        raise InvalidSubmission(
            field, f"names {len(distinct)} tasks; a task may wait for at most {MAX_UPSTREAM}"
        )
    ids: list[str] = []
    for value in distinct:
        try:
            ids.append(str(UUID(value)))
        except ValueError:
            raise InvalidSubmission(field, f"{value[:60]!r} is not a task id") from None
    return list(dict.fromkeys(ids))


async def _upstream_runs(
    client: PrefectClient, ids: list[str], field: str, names: Mapping[str, str]
) -> list[QueueRun]:
    known = await gateway.runs_by_id(client, ids)
    for run_id in ids:
        if run_id not in known:
            raise InvalidSubmission(field, f"task {names.get(run_id, run_id)} does not exist")
    return [known[run_id] for run_id in ids]


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
        # Cut: the message quotes the value, which may be large.
        message = str(error.message)[:300]
        raise InvalidSubmission(f"config.{path}" if path else "config", message)


def _check_task(
    kind: TaskType,
    config: Mapping[str, Any],
    schema: dict[str, Any],
    upstream_runs: Sequence[QueueRun],
    db: Engine | None,
    catalogue: Catalogue | None = None,
) -> None:
    """What the task's flow would refuse when it starts (biasbench.task_checks), on the config
    with its defaults, knowing which parameters the upstream tasks will fill in."""
    defaults = {
        name: spec["default"]
        for name, spec in schema.get("properties", {}).items()
        if "default" in spec and name not in QUEUE_PARAMETERS
    }
    filled = {
        parameter for run in upstream_runs for parameter in filled_parameters(run.task_type, kind)
    }
    try:
        if db is None:
            check_task(
                kind,
                {**defaults, **config},
                session=None,
                filled_by_upstream=filled,
                catalogue=catalogue,
            )
            return
        with session_scope(db) as session:
            check_task(
                kind,
                {**defaults, **config},
                session=session,
                filled_by_upstream=filled,
                catalogue=catalogue,
            )
    except BiasBenchError as exc:
        raise InvalidSubmission(f"config.{exc.field}", exc.message) from None


def _check_wiring(
    kind: TaskType,
    parameters: Mapping[str, Any],
    upstream_runs: Sequence[QueueRun],
    db: Engine,
    names: Mapping[str, str],
) -> None:
    """A value the config gives that a completed upstream's result contradicts (or two such
    results that disagree) is refused now; upstreams still to run are checked when they have
    (the manager skips the task then, with the same reason)."""
    with session_scope(db) as session:
        done = [
            Upstream(f"task {names.get(run.id, run.id)} ({run.task_type})", run.task_type, result)
            for run in upstream_runs
            if run.status is QueueStatus.DONE
            and (result := result_of_flow_run(session, run.id)) is not None
        ]
    if isinstance(wiring := wire(kind, parameters, done), Contradiction):
        raise InvalidSubmission(f"config.{wiring.parameter}", wiring.reason)
