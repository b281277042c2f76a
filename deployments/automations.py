"""Server-side automations, created idempotently by `python -m deployments setup`.

They run inside the Prefect server, so they act even when every process of the queue is gone.
What they wait for lives in the server's database and survives a restart of the server, but not
an outage that outlasts a window by more than the minute the server keeps an ended window
(`PREFECT_SERVER_EVENTS_EXPIRED_BUCKET_BUFFER`): `finish_silent_runs` covers those at setup."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.responses import SetStateStatus
from prefect.client.schemas.sorting import FlowRunSort
from prefect.events.actions import ChangeFlowRunState
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.states import Cancelled, Crashed, State

HEARTBEAT_SECONDS = 30  # Prefect's minimum; prefect.yaml sets it for the tagged deployments
# Only runs of deployments that send heartbeats this often: other flows on the same server send
# them every 180 s (Prefect's default) and must not be crashed between two of them.
HEARTBEAT_TAG = "heartbeat-30s"
CRASH_SILENT_RUNS = "biasbench: crash runs whose heartbeats stopped"
FINISH_ABANDONED_CANCELS = "biasbench: finish cancellations nobody carried out"


def _silence(after: str, timeout: int) -> EventTrigger:
    """Fires when a tagged run has an `after` event and then no event at all for `timeout`."""
    return EventTrigger(
        after={after},
        expect={"prefect.flow-run.*"},
        match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
        match_related=ResourceSpecification(
            {"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{HEARTBEAT_TAG}"}
        ),
        for_each={"prefect.resource.id"},
        posture=Posture.Proactive,
        threshold=1,
        within=timedelta(seconds=timeout),
    )


def watchdog_automations(timeout: int) -> list[AutomationCore]:
    """A running flow of ours sends a heartbeat every 30 s from its own thread; a cancelled one
    is stopped by its worker within seconds. When neither follows within `timeout`, the process
    or its host is gone and nobody will report the run: the server finishes it instead, so the
    queue skips or cancels its dependents and moves on (a retry resumes it)."""
    if timeout <= HEARTBEAT_SECONDS:
        raise ValueError(f"timeout: must exceed the {HEARTBEAT_SECONDS} s heartbeat interval")
    return [
        AutomationCore(
            name=CRASH_SILENT_RUNS,
            description="Marks a running flow Crashed when its heartbeats stop: its process or "
            "host is gone.",
            trigger=_silence("prefect.flow-run.heartbeat", timeout),
            actions=[
                ChangeFlowRunState(
                    state=StateType.CRASHED,
                    message=f"No heartbeat for {timeout} s: the flow process or its host is gone.",
                )
            ],
        ),
        AutomationCore(
            name=FINISH_ABANDONED_CANCELS,
            description="Completes a cancellation that no worker carried out: the process was "
            "already gone.",
            trigger=_silence("prefect.flow-run.Cancelling", timeout),
            actions=[
                ChangeFlowRunState(
                    state=StateType.CANCELLED,
                    message=f"Cancelled; no worker stopped it within {timeout} s, so its "
                    "process was already gone.",
                )
            ],
        ),
    ]


def _definition(automation: AutomationCore) -> AutomationCore:
    """What the automation does, parsed alike on both sides: an automation read back from the
    server is an `Automation` that also carries its `id`, so comparing it whole never matches."""
    fields = set(AutomationCore.model_fields)
    return AutomationCore.model_validate(automation.model_dump(mode="json", include=fields))


async def ensure_automation(client: PrefectClient, automation: AutomationCore) -> None:
    """Exactly one automation with this name and definition afterwards, written only when its
    definition changed: every write gives the server's trigger new ids, and with them it drops
    what the trigger was waiting for (a proactive trigger's open windows)."""
    existing = await client.read_automations_by_name(automation.name)
    for extra in existing[1:]:
        await client.delete_automation(extra.id)
    if not existing:
        await client.create_automation(automation)
    elif _definition(existing[0]) != _definition(automation):
        await client.update_automation(existing[0].id, automation)


async def ensure_watchdogs(client: PrefectClient, timeout: int) -> list[FlowRun]:
    """The two watchdogs as defined here, then their work on runs silent for longer than
    `timeout` that they would miss; returns those runs."""
    for automation in watchdog_automations(timeout):
        await ensure_automation(client, automation)
    return await finish_silent_runs(client, timeout)


async def finish_silent_runs(client: PrefectClient, timeout: int) -> list[FlowRun]:
    """Does the watchdogs' work for tagged runs silent for `timeout` or longer, which the server
    no longer watches, e.g. because their windows ended during an outage; returns the runs it
    finished. A run heard from within `timeout` is left to the automations: the window its last
    event opened is still running. Should both act, the second change is refused (final state).
    The silence is measured from the newest stored event, so a heartbeat the server got but had
    not stored yet (it stores them in batches) is missed: a few seconds early at worst."""
    finished = []
    for run in await _runs_in(client, [StateType.RUNNING, StateType.CANCELLING]):
        silent = datetime.now(UTC) - await _last_heard(client, run)
        if silent < timedelta(seconds=timeout):
            continue
        found = "found at setup: the server no longer watched it, e.g. after an outage"
        state: State[None]
        if run.state_type == StateType.RUNNING:
            state = Crashed(
                message=f"No heartbeat for {timeout} s: the flow process or its host is gone "
                f"({found})."
            )
        else:
            state = Cancelled(
                message=f"Cancelled; no worker stopped it within {timeout} s, so its process "
                f"was already gone ({found})."
            )
        if (await client.set_flow_run_state(run.id, state)).status == SetStateStatus.ACCEPT:
            finished.append(run)
    return finished


async def _runs_in(client: PrefectClient, types: list[StateType]) -> list[FlowRun]:
    """Every tagged run in one of these states, past the API's page of 200."""
    runs: list[FlowRun] = []
    while True:
        page = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[HEARTBEAT_TAG]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=types)),
            ),
            sort=FlowRunSort.ID_DESC,
            limit=200,
            offset=len(runs),
        )
        runs += page
        if len(page) < 200:
            return runs


async def _last_heard(client: PrefectClient, run: FlowRun) -> datetime:
    """The newest event about the run (what the watchdogs' triggers expect), or its state's
    time when the server has none stored."""
    events = await client.read_events(
        EventFilter(
            event=EventNameFilter(prefix=["prefect.flow-run."]),
            resource=EventResourceFilter(id=[f"prefect.flow-run.{run.id}"]),
        ),
        limit=1,
    )
    times: list[datetime] = [e.occurred for e in events.events]
    if run.state is not None:
        times.append(run.state.timestamp)
    return max(times, default=datetime.now(UTC))
