"""A queue manager whose process died is replaced by the Prefect server itself, with no channel
and no local supervisor needed (it may have been the host that died).

The trigger is the manager's run entering CRASHED: its worker saw the process die, or its
heartbeats stopped (deployments/automations.py). A manager that ended on purpose (a stop
request) completes, and a stale one that a restarted stack replaces is cancelled; neither is
revived. The deployment's concurrency limit of 1 keeps it to one manager."""

from __future__ import annotations

from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.events.actions import RunDeployment
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification

from biasbench.queue.model import MANAGER_DEPLOYMENT, MANAGER_FLOW
from deployments.automations import ensure_automation

REVIVE_MANAGER = "biasbench: start a new queue manager when one crashes"


def manager_revival(manager_deployment_id: UUID) -> AutomationCore:
    return AutomationCore(
        name=REVIVE_MANAGER,
        description="Runs the queue-manager deployment again when a manager's run crashes.",
        trigger=EventTrigger(
            expect={"prefect.flow-run.*"},
            match=ResourceSpecification(
                {
                    "prefect.resource.id": "prefect.flow-run.*",
                    # The state type, not the event name: custom state names rename events.
                    "prefect.state-type": "CRASHED",
                }
            ),
            match_related=ResourceSpecification(
                {"prefect.resource.role": "flow", "prefect.resource.name": MANAGER_FLOW}
            ),
            posture=Posture.Reactive,
            threshold=1,
            within=0,
        ),
        actions=[RunDeployment(source="selected", deployment_id=manager_deployment_id)],
    )


async def ensure_manager_revival(client: PrefectClient) -> None:
    deployment = await client.read_deployment_by_name(MANAGER_DEPLOYMENT)
    await ensure_automation(client, manager_revival(deployment.id))
