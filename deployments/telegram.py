"""Telegram's Bot API as a Prefect notification block, with the retries Prefect's blocks lack.

The server's send-notification action calls `notify()` once and gives up on the first error
(prefect-notes §11); the one message about a crashed overnight run is the one users must not
miss. So this block retries 429 (after Telegram's `retry_after`), 5xx and connection errors with
backoff, and says in plain words what to fix when Telegram refuses. The Prefect server imports it
through the `prefect.collections` entry point in pyproject.toml. The token lives only in the
block (a secret field); it never appears in a log line or an error message."""

from __future__ import annotations

import html
import logging
import re
from typing import Any

import httpx
from prefect.blocks.abstract import NotificationBlock, NotificationError
from pydantic import Field, SecretStr
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)


class _HideBotTokens(logging.Filter):
    """httpx logs each request's URL at INFO, and the Bot API puts the token in the path."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "/bot" in message:
            record.msg, record.args = _BOT_PATH.sub("/bot<token>/", message), None
        return True


_BOT_PATH = re.compile(r"/bot[^/\s]+/")
logging.getLogger("httpx").addFilter(_HideBotTokens())

TEXT_LIMIT = 4096  # characters Telegram accepts in one message (after parsing the markup)
PARSE_MODE = "HTML"  # messages mark up their headline; user text in them is escaped


class TelegramError(Exception):
    """Telegram did not take the message; the text says what to check."""


class _Retryable(Exception):
    def __init__(self, what: str, retry_after: float | None = None) -> None:
        super().__init__(what)
        self.retry_after = retry_after


class TelegramBot(NotificationBlock):
    """Sends each notification as one message to a Telegram chat."""

    _block_type_name = "BiasBench Telegram"
    _block_type_slug = "biasbench-telegram"
    _description = (
        "Telegram Bot API messages with retries (429 retry_after, 5xx, connection errors)."
    )

    bot_token: SecretStr = Field(description="The bot's token, from @BotFather.")
    chat_id: str = Field(description="The chat, group or channel that receives the messages.")
    api_base: str = Field(
        default="https://api.telegram.org",
        description="Bot API server: Telegram's, a self-hosted one, or a test server.",
    )
    attempts: int = Field(default=4, ge=1, le=10, description="Tries per message.")
    backoff_seconds: float = Field(
        default=1.0, gt=0, le=60, description="First wait between tries; it doubles."
    )

    async def notify(self, body: str, subject: str | None = None) -> None:
        try:
            await self.send(body)
        except TelegramError as exc:
            self.logger.error("Telegram message not sent: %s", exc)
            if self._raise_on_failure:
                raise NotificationError(log=str(exc)) from exc

    async def send(self, text: str) -> dict[str, Any]:
        """Sends `text` (HTML markup); returns Telegram's message object. Markup Telegram cannot
        parse, or a text over its limit, goes out as plain text rather than not at all."""
        if len(text) > TEXT_LIMIT:
            return await self._send(_shortened(plain_text(text)), parse_mode=None)
        try:
            return await self._send(text, parse_mode=PARSE_MODE)
        except TelegramError as exc:
            if "can't parse entities" not in str(exc):
                raise
            return await self._send(_shortened(plain_text(text)), parse_mode=None)

    async def _send(self, text: str, parse_mode: str | None) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "chat_id": self.chat_id,
            "text": text,
            "link_preview_options": {"is_disabled": True},
        }
        if parse_mode:
            payload["parse_mode"] = parse_mode
        url = f"/bot{self.bot_token.get_secret_value()}/sendMessage"
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=self._wait,
            retry=retry_if_exception_type((_Retryable, httpx.TransportError)),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            async with httpx.AsyncClient(base_url=self.api_base, timeout=15) as http:
                async for attempt in retrying:
                    with attempt:
                        response = await http.post(url, json=payload)
                        return self._result(response)
        except _Retryable as exc:
            raise TelegramError(f"{exc}, {self.attempts} tries") from None
        except httpx.TransportError as exc:
            raise TelegramError(
                f"cannot reach {self.api_base} ({type(exc).__name__}, {self.attempts} tries): "
                "check the network, or TELEGRAM_API_BASE"
            ) from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _result(self, response: httpx.Response) -> dict[str, Any]:
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        description = answer.get("description") or response.reason_phrase
        status = response.status_code
        if status == 200 and answer.get("ok"):
            return dict(answer.get("result") or {})
        if status == 429:
            retry_after = (answer.get("parameters") or {}).get("retry_after")
            raise _Retryable(f"Telegram kept answering 429 ({description})", retry_after)
        if status >= 500:
            raise _Retryable(f"Telegram kept answering {status} ({description})")
        raise TelegramError(
            f"Telegram refused the message ({status} {description}): " + _fix(status)
        )

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, _Retryable) and error.retry_after is not None:
            return min(float(error.retry_after), 300.0)
        # Doubling from backoff_seconds plus up to 1 s of jitter, at most 60 s: what
        # wait_exponential_jitter(initial=...) computes, without its `initial`, deprecated from
        # tenacity 9.2 on (its replacement `multiplier` does not exist before 9.2).
        backoff = wait_exponential(multiplier=self.backoff_seconds) + wait_random(0, 1)
        return min(backoff(state), 60.0)

    def _log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0
        self.logger.warning(
            "Telegram: %s; try %d of %d in %.1f s",
            type(error).__name__ if isinstance(error, httpx.TransportError) else error,
            state.attempt_number + 1,
            self.attempts,
            wait,
        )


def _fix(status: int) -> str:
    match status:
        case 401 | 404:
            return "check TELEGRAM_BOT_TOKEN"
        case 400:
            return (
                "check TELEGRAM_CHAT_ID; a user must have written to the bot first, a group "
                "must have the bot as a member"
            )
        case 403:
            return "the bot may not write to this chat: unblock it, or add it to the group"
    return "see Telegram's description above"


def plain_text(markup: str) -> str:
    """The text of a message without its markup (for plain-text channels and fallbacks)."""
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


def _shortened(text: str) -> str:
    return text if len(text) <= TEXT_LIMIT else text[: TEXT_LIMIT - 1] + "…"
