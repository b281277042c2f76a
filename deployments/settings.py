"""The set-up's own settings: message channels and the watchdog, applied by
`python -m deployments setup`. The domain's (database, LLM, ...) come from biasbench.settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class DeploymentSettings(BaseSettings):
    """Configuration from the environment (and an optional `.env` file)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    # --- stack profile (README "Scaling out", deployments/cluster.py) ---
    stack_profile: Literal["embedded", "cluster"] = Field(
        default="embedded",
        validation_alias="STACK_PROFILE",
        description="embedded: one Prefect server process on SQLite. cluster: Prefect on "
        "PostgreSQL with Redis messaging, several API processes and one services process.",
    )
    prefect_database_url: str | None = Field(
        default=None,
        validation_alias="PREFECT_API_DATABASE_CONNECTION_URL",
        description="Prefect's own database; the cluster profile needs a PostgreSQL one "
        "(postgresql+asyncpg://...).",
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias="REDIS_URL",
        description="Redis of the cluster profile: the server processes' messaging, event "
        "ordering, concurrency leases and background tasks.",
    )
    api_processes: int = Field(
        default=2,
        ge=1,
        validation_alias="STACK_API_PROCESSES",
        description="Prefect API processes of the cluster profile, behind one port.",
    )

    # --- watchdog ---
    queue_heartbeat_timeout: int = Field(
        default=90,
        ge=45,
        validation_alias="QUEUE_HEARTBEAT_TIMEOUT",
        description="A running flow whose heartbeats (every 30 s) stop this long is marked "
        "Crashed: its process or its host is gone.",
    )

    # --- Telegram ---
    telegram_bot_token: SecretStr | None = Field(
        default=None,
        validation_alias="TELEGRAM_BOT_TOKEN",
        description="Bot token from @BotFather. Setup stores it in a Prefect block; unset: "
        "messages are only logged.",
    )
    telegram_chat_id: str | None = Field(
        default=None,
        validation_alias="TELEGRAM_CHAT_ID",
        description="Chat, group or channel that receives the messages.",
    )
    telegram_api_base: str = Field(
        default="https://api.telegram.org",
        validation_alias="TELEGRAM_API_BASE",
        description="Bot API server: Telegram's, a self-hosted one, or a test server.",
    )

    # --- e-mail ---
    smtp_host: str | None = Field(
        default=None,
        validation_alias="SMTP_HOST",
        description="SMTP server for e-mail messages; unset: no e-mail.",
    )
    smtp_port: int = Field(
        default=587,
        validation_alias="SMTP_PORT",
        description="Port of the SMTP server.",
    )
    smtp_username: str | None = Field(
        default=None,
        validation_alias="SMTP_USERNAME",
        description="SMTP login, used together with SMTP_PASSWORD; unset: no login.",
    )
    smtp_password: SecretStr | None = Field(
        default=None,
        validation_alias="SMTP_PASSWORD",
        description="SMTP password. Setup stores it in a Prefect block (secret field).",
    )
    smtp_starttls: bool = Field(
        default=True,
        validation_alias="SMTP_STARTTLS",
        description="Upgrade the connection with STARTTLS (port 587); false for a local relay.",
    )
    email_from: str | None = Field(
        default=None,
        validation_alias="EMAIL_FROM",
        description="Sender address; unset: biasbench@<SMTP_HOST>.",
    )
    email_to: str | None = Field(
        default=None,
        validation_alias="EMAIL_TO",
        description="Comma-separated recipients of the e-mail messages.",
    )

    @property
    def telegram_configured(self) -> bool:
        # Empty values (as copied from .env.example) mean "not configured".
        token = self.telegram_bot_token.get_secret_value() if self.telegram_bot_token else ""
        return bool(token and self.telegram_chat_id)

    @property
    def email_configured(self) -> bool:
        return bool(self.smtp_host and self.email_to)
