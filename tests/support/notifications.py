"""Pointing the queue's notifications at a test Bot API server, and waiting for its messages."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_client
from prefect.utilities.asyncutils import run_coro_as_sync

from deployments.notifications import ensure_notifications
from deployments.settings import DeploymentSettings
from tests.support.telegram_server import CHAT_ID, TOKEN, Message, TelegramServer


@contextmanager
def telegram_for_tests() -> Iterator[tuple[TelegramServer, dict[str, str]]]:
    """A Bot API server and the environment that points setup at it. Afterwards the blocks and
    automations are removed again: the Prefect server is shared by the whole test session."""
    with TelegramServer() as server:
        env = {
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_CHAT_ID": CHAT_ID,
            "TELEGRAM_API_BASE": server.base_url,
        }
        try:
            yield server, env
        finally:
            run_coro_as_sync(_remove_notifications())


async def _remove_notifications() -> None:
    async with get_client() as client:
        await ensure_notifications(client, DeploymentSettings(_env_file=None))  # type: ignore[call-arg]


def wait_for_message(
    server: TelegramServer, *parts: str, after: int = 0, timeout: float = 60
) -> Message:
    """The first accepted message (from the `after`-th on) that contains every one of `parts`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in list(server.messages)[after:]:
            if all(part in message.text for part in parts):
                return message
        time.sleep(0.1)
    raise AssertionError(f"no message with {parts} after {timeout} s; got {server.texts()}")
