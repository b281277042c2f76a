"""Every setting of the domain, read once at the edges (flow entry, CLI) and passed inward."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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
    llm_allowed_base_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias="LLM_ALLOWED_BASE_URLS",
        description="Servers besides VLLM_BASE_URL that may receive the API key, comma-separated "
        "or as JSON. A task naming another server calls it without the key.",
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
    llm_max_error_share: float = Field(
        default=0.2,
        ge=0,
        le=1,
        validation_alias="LLM_MAX_ERROR_SHARE",
        description="Share of a task's items that may fail on the LLM server (after retries) "
        "before the task fails; below it they are stored as failures and asked again on resume. "
        "A server failing one item in five is broken, not flaky.",
    )
    llm_unreachable_after: float = Field(
        # Long enough to ride out a vLLM restart mid-task; a server that is down when a task
        # starts is caught by the start-up probe within seconds.
        default=90.0,
        validation_alias="LLM_UNREACHABLE_AFTER",
        description="Seconds of failed connections after which the server counts as unreachable.",
    )

    @field_validator("llm_allowed_base_urls", mode="before")
    @classmethod
    def _url_list(cls, value: Any) -> Any:
        """`http://a:8000,http://b:8000` or `["http://a:8000"]`."""
        if isinstance(value, str):
            text = value.strip()
            return (
                json.loads(text)
                if text.startswith("[")
                else [u.strip() for u in text.split(",") if u.strip()]
            )
        return value

    @field_validator("queue_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        """Refused here, not when the manager first writes a message."""
        try:
            ZoneInfo(value)
        except (ValueError, ZoneInfoNotFoundError):
            raise ValueError(
                f"unknown time zone {value!r} (an IANA name, e.g. Europe/Berlin)"
            ) from None
        return value

    @property
    def llm_key_servers(self) -> list[str]:
        """Where the LLM API key may go: the default server and the allowed ones."""
        return [self.vllm_base_url, *self.llm_allowed_base_urls]

    # --- queue ---
    queue_crash_retries: int = Field(
        default=1,
        ge=0,
        le=10,
        validation_alias="QUEUE_CRASH_RETRIES",
        description="How often a task whose process was killed from outside (its worker or host "
        "died, the server lost it) is put back in its place automatically; it resumes. Its own "
        "exceptions are never retried.",
    )
    queue_stall_seconds: float = Field(
        default=600.0,
        validation_alias="QUEUE_STALL_SECONDS",
        description="A running task without progress this long is stopped and failed as stalled.",
    )

    queue_timezone: str = Field(
        default="UTC",
        validation_alias="QUEUE_TIMEZONE",
        description="Time zone (IANA name, e.g. Europe/Berlin) of the times in queue messages.",
    )
    queue_model_swap_seconds: float = Field(
        default=60.0,
        ge=0,
        validation_alias="QUEUE_MODEL_SWAP_SECONDS",
        description="What loading another model on a GPU costs, for the queue's ETAs (until "
        "model hosts publish measured load times).",
    )

    # --- observability ---
    progress_interval: float = Field(
        default=3.0,
        validation_alias="PROGRESS_INTERVAL",
        description="Seconds between progress artifact updates and result flushes.",
    )
