"""The watchdog automations: written only when their definition changes, and still acting after
the Prefect server restarts."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from prefect import get_client
from prefect.client.orchestration import PrefectClient
from prefect.events.schemas.automations import AutomationCore

from deployments.automations import ensure_automation, watchdog_automations


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
