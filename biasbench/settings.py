"""Every setting of the domain, read once at the edges (flow entry, CLI) and passed inward."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from biasbench.models_catalogue import Catalogue, load_catalogue

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

    # --- model hosts (deployments/model_host.py) ---
    model_catalogue: Path | None = Field(
        default=None,
        validation_alias="MODEL_CATALOGUE",
        description="TOML file of the models this machine serves (biasbench.models_catalogue). "
        "Set: tasks name a model and the GPU's model host starts, reuses or swaps its server; "
        "unset: tasks call vllm_base_url / VLLM_BASE_URL as before.",
    )
    model_idle_ttl: float = Field(
        default=600.0,
        gt=0,
        validation_alias="MODEL_IDLE_TTL",
        description="Seconds a model host keeps its servers while no task uses them; then they "
        "are stopped, so the GPU is free in the morning.",
    )

    model_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias="BIASBENCH_MODEL_HOSTS",
        description="Set by the stack on its GPU worker: the model hosts' channel sockets, one "
        "per GPU slot (separated by the OS path separator).",
    )

    @field_validator("model_hosts", mode="before")
    @classmethod
    def _socket_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part for part in value.split(os.pathsep) if part]
        return value

    @property
    def catalogue(self) -> Catalogue | None:
        """The model catalogue, read from MODEL_CATALOGUE; None when unset."""
        return load_catalogue(self.model_catalogue)

    @field_validator("model_catalogue", mode="before")
    @classmethod
    def _empty_path(cls, value: Any) -> Any:
        return None if value == "" else value

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

    queue_model_grouping: bool = Field(
        default=True,
        validation_alias="QUEUE_MODEL_GROUPING",
        description="Among ready tasks of equal priority, prefer one for the model a GPU has "
        "loaded (bounded by QUEUE_MAX_OVERTAKE and QUEUE_MAX_WAIT); false: strict FIFO.",
    )
    queue_max_overtake: int = Field(
        default=8,
        ge=0,
        validation_alias="QUEUE_MAX_OVERTAKE",
        description="No task is overtaken by more than this many same-model tasks.",
    )
    queue_max_wait: float = Field(
        default=7200.0,
        ge=0,
        validation_alias="QUEUE_MAX_WAIT",
        description="Seconds a task may wait beyond its FIFO turn because of model grouping.",
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
        description="What loading another model on a GPU costs, for the queue's ETAs, for a "
        "model no model host has measured a load of yet (measured ones are used otherwise).",
    )

    # --- observability ---
    progress_interval: float = Field(
        default=3.0,
        validation_alias="PROGRESS_INTERVAL",
        description="Seconds between progress artifact updates and result flushes.",
    )
