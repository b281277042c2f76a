"""The watchdog automations: written only when their definition changes, and still acting after
the Prefect server restarts."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect import flow, get_client
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.events.clients import PrefectEventsClient
from prefect.events.related import tags_as_related_resources
from prefect.events.schemas.automations import AutomationCore
from prefect.events.schemas.events import Event, RelatedResource
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelling, Running

from deployments.automations import (
    HEARTBEAT_TAG,
    ensure_automation,
    ensure_watchdogs,
    watchdog_automations,
)
from tests.support.prefect_server import PrefectServer, prefect_server
from tests.support.waiting import wait_final

# Three server starts (5-15 s each), an outage of 65 s and a watchdog window: about 2.5 minutes.
pytestmark = pytest.mark.timeout(240)

TIMEOUT = 40  # the shortest window the watchdogs accept is just over the 30 s heartbeat
# How long the server keeps a window that ended (PREFECT_SERVER_EVENTS_EXPIRED_BUCKET_BUFFER):
# 60 s by default, shorter here so that an outage outlasting it takes one minute, not two.
EXPIRED_WINDOWS_KEPT = 20


async def _stored(client: PrefectClient, name: str) -> dict[str, Any]:
    """The automation as the server keeps it, with what the client model drops: `updated`, and
    the trigger's id, which the server's trigger state (its open windows) is keyed by."""
    [automation] = await client.read_automations_by_name(name)
    response = await client.request("GET", "/automations/{id}", path_params={"id": automation.id})
    stored: dict[str, Any] = response.json()
    return stored


def _named(timeout: int, prefix: str) -> list[AutomationCore]:
    """The watchdogs under names of this test's own: the session's server is shared."""
    return [
        automation.model_copy(update={"name": f"{prefix} {automation.name}"})
        for automation in watchdog_automations(timeout)
    ]


def test_setup_again_leaves_the_watchdogs_untouched_and_a_new_timeout_rewrites_them() -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    # Long timeouts: these copies match the session's real runs, which they must never crash.
    first, changed = _named(3600, prefix), _named(3700, prefix)

    async def scenario() -> None:
        async with get_client() as client:
            try:
                for automation in first:
                    await ensure_automation(client, automation)
                before = [await _stored(client, a.name) for a in first]
                for automation in first:
                    await ensure_automation(client, automation)
                again = [await _stored(client, a.name) for a in first]
                for automation in changed:
                    await ensure_automation(client, automation)
                after = [await _stored(client, a.name) for a in first]
            finally:
                for automation in first:
                    for stored in await client.read_automations_by_name(automation.name):
                        await client.delete_automation(stored.id)

        assert again == before  # not written: same `updated`, same trigger id
        for old, new in zip(before, after, strict=True):
            assert new["id"] == old["id"]  # updated in place, not replaced
            assert new["updated"] > old["updated"]
            assert new["trigger"]["within"] == 3700.0
            assert new["trigger"]["id"] != old["trigger"]["id"]  # the server's own doing

    asyncio.run(scenario())


@flow
def silent() -> None:
    """Never runs: the runs of this flow are left by a process that is gone."""


async def _heartbeat(events: PrefectEventsClient, run: FlowRun) -> datetime:
    """One heartbeat, built as the engine's heartbeat thread builds it
    (prefect.flow_engine FlowRunEngine._emit_flow_run_heartbeat); returns when it occurred."""
    beat = Event(
        event="prefect.flow-run.heartbeat",
        resource={
            "prefect.resource.id": f"prefect.flow-run.{run.id}",
            "prefect.resource.name": run.name,
        },
        related=[
            RelatedResource(
                {
                    "prefect.resource.id": f"prefect.flow.{run.flow_id}",
                    "prefect.resource.role": "flow",
                }
            ),
            *tags_as_related_resources(run.tags),
        ],
    )
    await events.emit(beat)
    return beat.occurred


async def _leave_silent(api_url: str, label: str) -> dict[UUID, tuple[str, datetime]]:
    """A running run whose heartbeats stop after one, and a run put into Cancelling that no
    worker carries out: each with what the watchdog should do and when the silence began."""
    async with get_client() as client, PrefectEventsClient(api_url) as events:
        silent_run = await client.create_flow_run(
            silent, name=f"{label}-silent", tags=[HEARTBEAT_TAG]
        )
        cancelled = await client.create_flow_run(
            silent, name=f"{label}-cancel", tags=[HEARTBEAT_TAG]
        )
        for run in (silent_run, cancelled):
            assert (
                await client.set_flow_run_state(run.id, Running())
            ).state.type == StateType.RUNNING
        since = await _heartbeat(events, silent_run)
        cancelling = (await client.set_flow_run_state(cancelled.id, Cancelling())).state
        assert cancelling is not None and cancelling.type == StateType.CANCELLING
    return {silent_run.id: ("Crashed", since), cancelled.id: ("Cancelled", cancelling.timestamp)}


async def _setup() -> list[str]:
    """The watchdogs' part of `python -m deployments setup`, which runs at every start of the
    stack; returns the runs it finished itself."""
    async with get_client() as client:
        return [run.name for run in await ensure_watchdogs(client, TIMEOUT)]


def _wait_watched(server: PrefectServer, runs: list[UUID], timeout: float = 30) -> None:
    """Until the server's triggers have a window open for every run."""
    deadline = time.monotonic() + timeout
    while not all(server.trigger_windows(f"prefect.flow-run.{run}") for run in runs):
        assert time.monotonic() < deadline, f"no trigger window for some of {runs}"
        time.sleep(0.2)


def test_runs_left_silent_are_finished_across_a_long_outage_and_a_restart_of_the_server(
    tmp_path: Path,
) -> None:
    """The server keeps a trigger's windows in its database, so a restart loses none of them;
    but one that ended more than EXPIRED_WINDOWS_KEPT before the server came back is dropped
    unevaluated, and setup finishes those runs instead."""
    kept = {"PREFECT_SERVER_EVENTS_EXPIRED_BUCKET_BUFFER": f"PT{EXPIRED_WINDOWS_KEPT}S"}
    with (
        prefect_server(tmp_path / "prefect", kept) as server,
        temporary_settings(updates={PREFECT_API_URL: server.api_url}),
    ):
        print(f"server started in {server.start():.1f} s")
        assert asyncio.run(_setup()) == []
        expected = asyncio.run(_leave_silent(server.api_url, "outage"))
        silent_since = time.monotonic()
        _wait_watched(server, list(expected))
        server.kill()  # no shutdown of any kind: the server's memory is gone
        # Down until their windows ended more than EXPIRED_WINDOWS_KEPT ago.
        time.sleep(silent_since + TIMEOUT + EXPIRED_WINDOWS_KEPT + 5 - time.monotonic())
        print(f"back after a long outage in {server.start():.1f} s")
        finished_by_setup = asyncio.run(_setup())

        before = asyncio.run(_leave_silent(server.api_url, "before"))
        _wait_watched(server, list(before))
        server.kill()
        print(f"back after a quick restart in {server.start():.1f} s")
        assert asyncio.run(_setup()) == []  # their windows are open: the automations' part
        after = asyncio.run(_leave_silent(server.api_url, "after"))
        expected |= before | after

        runs = asyncio.run(wait_final([str(i) for i in expected], timeout=TIMEOUT + 150))

    seen = []
    for run in runs:
        assert run.state is not None
        took = (run.state.timestamp - expected[run.id][1]).total_seconds()
        print(f"{run.name}: {run.state_name} {took:.1f} s after its last event")
        seen.append((run.name, run.state_name, f"{TIMEOUT} s" in (run.state.message or "")))
    # Finished by the watchdogs (their message names the window), not by anything else.
    assert seen == [(r.name, expected[r.id][0], True) for r in runs]
    assert sorted(finished_by_setup) == ["outage-cancel", "outage-silent"]
