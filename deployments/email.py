"""E-mail over SMTP as a Prefect notification block: the same messages as Telegram.

Prefect's own e-mail support (prefect-email's `EmailServerCredentials`) is not a notification
block, so a server-side automation cannot send through it; this small block can. Temporary
failures (connection errors, 4xx replies) are retried like the Telegram ones."""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage

from prefect.blocks.abstract import NotificationBlock, NotificationError
from pydantic import Field, SecretStr
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from deployments.telegram import plain_text


def _temporary(error: BaseException) -> bool:
    if isinstance(error, smtplib.SMTPResponseException):
        return 400 <= error.smtp_code < 500
    return isinstance(error, smtplib.SMTPServerDisconnected | ConnectionError | TimeoutError)


class EmailNotification(NotificationBlock):
    """Sends each notification as one e-mail (plain text and HTML)."""

    _block_type_name = "BiasBench E-mail"
    _block_type_slug = "biasbench-email"
    _description = "E-mail over SMTP, with retries of temporary failures."

    smtp_host: str
    smtp_port: int = 587
    username: str | None = None
    password: SecretStr | None = None
    starttls: bool = Field(default=True, description="False for a local relay without TLS.")
    sender: str
    recipients: list[str] = Field(min_length=1)
    attempts: int = Field(default=3, ge=1, le=10)

    async def notify(self, body: str, subject: str | None = None) -> None:
        message = EmailMessage()
        message["Subject"] = subject or plain_text(body).splitlines()[0][:120]
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message.set_content(plain_text(body))
        message.add_alternative(f"<p>{body.replace(chr(10), '<br>')}</p>", subtype="html")
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential_jitter(initial=1, max=30),
            retry=retry_if_exception(_temporary),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await asyncio.to_thread(self._send, message)
        except (smtplib.SMTPException, OSError) as exc:
            text = f"e-mail via {self.smtp_host}:{self.smtp_port} failed: {type(exc).__name__}"
            self.logger.error("%s", text)
            if self._raise_on_failure:
                raise NotificationError(log=text) from exc

    def _send(self, message: EmailMessage) -> None:
        with smtplib.SMTP(self.smtp_host, self.smtp_port, timeout=30) as smtp:
            if self.starttls:
                smtp.starttls()
            if self.username and self.password:
                smtp.login(self.username, self.password.get_secret_value())
            smtp.send_message(message)
