"""Notification channels and the automations that use them, from the environment (idempotent).

- Each configured channel (TELEGRAM_BOT_TOKEN + TELEGRAM_CHAT_ID; SMTP_HOST + EMAIL_TO) is saved
  as one Prefect block; the token and password live only there, in secret fields.
- "send queue messages" forwards the messages the queue manager emits (flows/notices.py) to every
  channel, word for word.
- "warn when the queue manager stops" is the one message the manager cannot send itself: the
  server notices its run failing or crashing (heartbeats stop) and sends a critical message.
Without channels, both automations and the blocks are removed: the messages stay in the manager's
log only."""

from __future__ import annotations

import socket
from collections.abc import Iterable
from uuid import UUID

from prefect.blocks.abstract import NotificationBlock, NotificationError
from prefect.client.orchestration import PrefectClient
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.exceptions import ObjectNotFound

from biasbench.queue.messages import MESSAGE_EVENTS
from biasbench.queue.model import MANAGER_FLOW
from deployments.automations import ensure_automation
from deployments.email import EmailNotification
from deployments.settings import DeploymentSettings
from deployments.telegram import TelegramBot, TelegramError

TELEGRAM_BLOCK = "biasbench-telegram"
EMAIL_BLOCK = "biasbench-email"
SEND_MESSAGES = "biasbench: send queue messages"
MANAGER_STOPPED = "biasbench: warn when the queue manager stops"
CHANNEL_TYPES: dict[str, type[NotificationBlock]] = {
    TELEGRAM_BLOCK: TelegramBot,
    EMAIL_BLOCK: EmailNotification,
}

MANAGER_STOPPED_TEXT = (
    "⚠️ <b>CRITICAL: queue manager {{ flow_run.state.name | e }}</b>\n"
    "Hint: no queued task starts until it runs again (make serve, or a worker on the "
    "queue-manager pool).\n"
    "{{ (flow_run.state.message or '') | truncate(300) | e }}\n"
    '<a href="{{ flow_run | ui_url }}">Open in Prefect</a>'
)


def channels(settings: DeploymentSettings) -> dict[str, NotificationBlock | None]:
    """Block name -> the block the environment asks for (None: that channel is off)."""
    telegram = email = None
    if settings.telegram_configured:
        assert settings.telegram_bot_token is not None and settings.telegram_chat_id is not None
        telegram = TelegramBot(
            bot_token=settings.telegram_bot_token,
            chat_id=settings.telegram_chat_id,
            api_base=settings.telegram_api_base,
        )
    if settings.email_configured:
        assert settings.smtp_host is not None and settings.email_to is not None
        email = EmailNotification(
            smtp_host=settings.smtp_host,
            smtp_port=settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
            sender=settings.email_from or f"biasbench@{settings.smtp_host}",
            recipients=[a.strip() for a in settings.email_to.split(",") if a.strip()],
        )
    return {TELEGRAM_BLOCK: telegram, EMAIL_BLOCK: email}


def message_automations(block_ids: list[UUID]) -> list[AutomationCore]:
    return [
        AutomationCore(
            name=SEND_MESSAGES,
            description="Sends the queue manager's messages (task failed or done, queue "
            "started, paused, drained) to every configured channel.",
            trigger=EventTrigger(
                expect=set(MESSAGE_EVENTS),
                posture=Posture.Reactive,
                threshold=1,
                within=0,
            ),
            actions=_to_every_channel(
                block_ids, subject="{{ event.payload.subject }}", body="{{ event.payload.text }}"
            ),
        ),
        AutomationCore(
            name=MANAGER_STOPPED,
            description="Critical message when the queue manager's run fails or crashes.",
            trigger=EventTrigger(
                expect={"prefect.flow-run.*"},
                match=ResourceSpecification(
                    {
                        "prefect.resource.id": "prefect.flow-run.*",
                        # The state type, not the event name: custom state names rename events.
                        "prefect.state-type": ["FAILED", "CRASHED"],
                    }
                ),
                match_related=ResourceSpecification(
                    {"prefect.resource.role": "flow", "prefect.resource.name": MANAGER_FLOW}
                ),
                posture=Posture.Reactive,
                threshold=1,
                within=0,
            ),
            actions=_to_every_channel(
                block_ids,
                subject="⚠️ CRITICAL: queue manager {{ flow_run.state.name }}",
                body=MANAGER_STOPPED_TEXT,
            ),
        ),
    ]


def _to_every_channel(block_ids: list[UUID], *, subject: str, body: str) -> list[SendNotification]:
    return [
        SendNotification(block_document_id=block_id, subject=subject, body=body)
        for block_id in block_ids
    ]


async def ensure_notifications(client: PrefectClient, settings: DeploymentSettings) -> list[str]:
    """Blocks and automations as the environment says; returns the channels that are on."""
    wanted = channels(settings)
    block_ids: list[UUID] = []
    for name, block in wanted.items():
        if block is not None:
            block_ids.append(await block.asave(name, overwrite=True))
        else:
            await _delete_block(client, name)
    for automation in message_automations(block_ids):
        if block_ids:
            await ensure_automation(client, automation)
        else:
            for existing in await client.read_automations_by_name(automation.name):
                await client.delete_automation(existing.id)
    return _described(wanted.values())


def describe_channels(settings: DeploymentSettings) -> list[str]:
    """Where messages go, in words: "Telegram chat -100777", "e-mail to a@b"."""
    return _described(channels(settings).values())


def _described(blocks: Iterable[NotificationBlock | None]) -> list[str]:
    described = []
    for block in blocks:
        if isinstance(block, TelegramBot):
            described.append(f"Telegram chat {block.chat_id}")
        elif isinstance(block, EmailNotification):
            described.append(f"e-mail to {', '.join(block.recipients)}")
    return described


async def _delete_block(client: PrefectClient, name: str) -> None:
    try:
        document = await client.read_block_document_by_name(
            name, block_type_slug=CHANNEL_TYPES[name].get_block_type_slug()
        )
    except ObjectNotFound:
        return
    await client.delete_block_document(document.id)


async def send_test_message(settings: DeploymentSettings) -> int:
    """Sends one message through every configured channel and says plainly what went wrong
    (the seed's troubleshooting step). Returns the number of channels that failed."""
    wanted = {name: block for name, block in channels(settings).items() if block is not None}
    if not wanted:
        print(
            "No channel is configured: set TELEGRAM_BOT_TOKEN and TELEGRAM_CHAT_ID (or SMTP_HOST "
            "and EMAIL_TO). Until then the messages are only written to the queue manager's log."
        )
        return 1
    host = socket.gethostname()
    text = f"✅ <b>Test message</b> from the LLM queue on {host}: messages arrive here."
    failed = 0
    for block in wanted.values():
        try:
            if isinstance(block, TelegramBot):
                await block.send(text)
                print(f"Telegram: sent to chat {block.chat_id}.")
            else:
                with block.raise_on_failure():
                    await block.notify(text, subject="LLM queue: test message")
                print(f"E-mail: sent to {', '.join(getattr(block, 'recipients', []))}.")
        except (TelegramError, NotificationError) as exc:
            failed += 1
            reason = exc.log if isinstance(exc, NotificationError) else str(exc)
            print(
                f"{'Telegram' if isinstance(block, TelegramBot) else 'E-mail'}: NOT sent: {reason}"
            )
    return failed
