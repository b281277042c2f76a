"""Every setting of the domain, read once at the edges (flow entry, CLI) and passed inward."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DB_PATH = Path.home() / ".biasbench" / "biasbench.db"


class Settings(BaseSettings):
    """Configuration from the environment (and an optional `.env` file)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    # --- storage ---
    db_url: str = Field(
        default=f"sqlite:///{DEFAULT_DB_PATH}",
        validation_alias="DB_URL",
        description="SQLAlchemy URL of the domain database: a SQLite file by default, "
        "postgresql+psycopg://... at scale.",
    )

    # --- LLM server ---
    vllm_base_url: str = Field(
        default="http://localhost:8000",
        validation_alias="VLLM_BASE_URL",
        description="Default OpenAI-compatible server for tasks that do not name one.",
    )
    vllm_api_key: SecretStr | None = Field(
        default=None,
        validation_alias="VLLM_API_KEY",
        description="Bearer key for the LLM server; never a flow parameter. A Prefect Secret "
        "block named by LLM_API_KEY_BLOCK takes precedence.",
    )
    llm_api_key_block: str = Field(
        default="vllm-api-key",
        validation_alias="LLM_API_KEY_BLOCK",
        description="Name of the Prefect Secret block holding the LLM API key, if any.",
    )
    llm_request_timeout: float = Field(
        default=600.0,
        validation_alias="LLM_REQUEST_TIMEOUT",
        description="Seconds one LLM request may take (long generations on a busy GPU).",
    )
    llm_max_retries: int = Field(
        default=6,
        validation_alias="LLM_MAX_RETRIES",
        description="Retries per request on connection errors, timeouts, 5xx and 429.",
    )
    llm_unreachable_after: float = Field(
        default=20.0,
        validation_alias="LLM_UNREACHABLE_AFTER",
        description="Seconds of failed connections after which the server counts as unreachable.",
    )

    # --- queue ---
    queue_stall_seconds: float = Field(
        default=600.0,
        validation_alias="QUEUE_STALL_SECONDS",
        description="A running task without progress this long is stopped and failed as stalled.",
    )
    queue_heartbeat_timeout: int = Field(
        default=90,
        ge=45,
        validation_alias="QUEUE_HEARTBEAT_TIMEOUT",
        description="A running flow whose heartbeats (every 30 s) stop this long is marked "
        "Crashed: its process or its host is gone. Applied by `python -m deployments setup`.",
    )

    # --- notifications (applied by `python -m deployments setup`) ---
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
    smtp_host: str | None = Field(
        default=None,
        validation_alias="SMTP_HOST",
        description="SMTP server for e-mail messages; unset: no e-mail.",
    )
    smtp_port: int = Field(default=587, validation_alias="SMTP_PORT")
    smtp_username: str | None = Field(default=None, validation_alias="SMTP_USERNAME")
    smtp_password: SecretStr | None = Field(default=None, validation_alias="SMTP_PASSWORD")
    smtp_starttls: bool = Field(
        default=True,
        validation_alias="SMTP_STARTTLS",
        description="Upgrade the connection with STARTTLS (port 587); false for a local relay.",
    )
    email_from: str | None = Field(default=None, validation_alias="EMAIL_FROM")
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

    # --- observability ---
    progress_interval: float = Field(
        default=3.0,
        validation_alias="PROGRESS_INTERVAL",
        description="Seconds between progress artifact updates and result flushes.",
    )
