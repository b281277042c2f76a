"""The Telegram block against a real Bot API server on 127.0.0.1: delivery, retries, and errors
that say what to fix."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from deployments.telegram import TEXT_LIMIT, TelegramBot, TelegramError
from tests.support.openai_server import closed_port_url
from tests.support.telegram_server import CHAT_ID, TOKEN, Answer, TelegramServer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def telegram() -> Iterator[TelegramServer]:
    with TelegramServer() as server:
        yield server


def bot(server_url: str, token: str = TOKEN, chat_id: str = CHAT_ID) -> TelegramBot:
    return TelegramBot(
        bot_token=SecretStr(token), chat_id=chat_id, api_base=server_url, backoff_seconds=0.1
    )


def test_a_message_arrives_once_with_its_markup(
    telegram: TelegramServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    asyncio.run(bot(telegram.base_url).notify("❌ <b>Failed</b>: benchmark “a &lt;b&gt;”"))
    assert telegram.texts() == ["❌ <b>Failed</b>: benchmark “a &lt;b&gt;”"]
    assert telegram.messages[0].parse_mode == "HTML"
    assert TOKEN not in caplog.text  # the token is in the URL path only


def test_429_twice_then_ok_delivers_exactly_once_after_retry_after(
    telegram: TelegramServer,
) -> None:
    telegram.script([Answer(429, retry_after=1), Answer(429, retry_after=1)])
    asyncio.run(bot(telegram.base_url).notify("hello"))
    assert telegram.texts() == ["hello"]
    times = [r["received"] for r in telegram.requests]
    assert len(times) == 3
    assert times[1] - times[0] >= 1 and times[2] - times[1] >= 1  # retry_after honoured


def test_server_errors_are_retried(telegram: TelegramServer) -> None:
    telegram.script([Answer(500), Answer(502)])
    asyncio.run(bot(telegram.base_url).notify("hello"))
    assert telegram.texts() == ["hello"] and len(telegram.requests) == 3


def test_a_wrong_token_is_not_retried_and_the_error_says_what_to_check(
    telegram: TelegramServer, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(TelegramError, match="TELEGRAM_BOT_TOKEN"):
        asyncio.run(bot(telegram.base_url, token="999:wrong").send("hello"))
    assert len(telegram.requests) == 1 and telegram.texts() == []
    assert "999:wrong" not in caplog.text


def test_an_unknown_chat_names_the_chat_setting(telegram: TelegramServer) -> None:
    with pytest.raises(TelegramError, match=r"chat not found.*TELEGRAM_CHAT_ID"):
        asyncio.run(bot(telegram.base_url, chat_id="42").send("hello"))


def test_an_unreachable_server_is_tried_several_times_then_named() -> None:
    url = closed_port_url()
    with pytest.raises(TelegramError, match=rf"cannot reach {url}.*4 tries"):
        asyncio.run(bot(url).send("hello"))


def test_failures_inside_an_automation_do_not_raise_unless_asked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    asyncio.run(bot(closed_port_url()).notify("hello"))  # logged, not raised
    assert "Telegram message not sent: cannot reach" in caplog.text


def test_a_text_over_telegrams_limit_arrives_shortened_as_plain_text(
    telegram: TelegramServer,
) -> None:
    asyncio.run(bot(telegram.base_url).notify("<b>Done</b> &amp; " + "x" * 5000))
    (message,) = telegram.messages
    assert len(message.text) == TEXT_LIMIT and message.text.startswith("Done & xxx")
    assert message.parse_mode is None and message.text.endswith("…")


def test_markup_telegram_cannot_parse_still_arrives_as_plain_text(
    telegram: TelegramServer,
) -> None:
    asyncio.run(bot(telegram.base_url).notify("<b>Done <i>nested</b>"))
    assert telegram.texts() == ["Done nested"] and len(telegram.requests) == 2


def _notify_test(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "SMTP_"))}
    return subprocess.run(
        [sys.executable, "-m", "deployments", "notify-test"],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_test_message_command_reports_success_and_plain_failures(
    telegram: TelegramServer,
) -> None:
    good = {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": CHAT_ID}
    sent = _notify_test({**good, "TELEGRAM_API_BASE": telegram.base_url})
    assert sent.returncode == 0 and f"sent to chat {CHAT_ID}" in sent.stdout
    assert "Test message" in telegram.texts()[0]

    wrong = _notify_test({**good, "TELEGRAM_API_BASE": telegram.base_url, "TELEGRAM_CHAT_ID": "1"})
    assert wrong.returncode == 1
    assert "NOT sent" in wrong.stdout and "TELEGRAM_CHAT_ID" in wrong.stdout

    unset = _notify_test({})
    assert unset.returncode == 1 and "TELEGRAM_BOT_TOKEN" in unset.stdout
    assert TOKEN not in sent.stdout + sent.stderr + wrong.stdout + wrong.stderr


def test_empty_values_copied_from_env_example_mean_no_channel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from deployments.notifications import channels
    from deployments.settings import DeploymentSettings

    for name in ("TELEGRAM_BOT_TOKEN", "SMTP_HOST", "EMAIL_TO", "SMTP_PASSWORD"):
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("TELEGRAM_CHAT_ID", CHAT_ID)
    assert set(channels(DeploymentSettings(_env_file=None)).values()) == {None}  # type: ignore[call-arg]
