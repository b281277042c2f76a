"""The shim's own settings; the domain's (database, ...) come from biasbench.settings."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    # --- where it listens
    host: str = Field(default="127.0.0.1", validation_alias="QUEUE_API_HOST")
    port: int = Field(default=8765, validation_alias="QUEUE_API_PORT")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        validation_alias="QUEUE_API_ALLOWED_HOSTS",
        description="Host names the API answers to besides localhost, 127.0.0.1, ::1 and "
        'QUEUE_API_HOST, as JSON: ["gpu-box.lan"]. Other Host headers are refused (400), '
        "which stops DNS-rebinding pages.",
    )

    # --- who may call it
    token: SecretStr | None = Field(
        default=None,
        validation_alias="QUEUE_API_TOKEN",
        description="If set (not empty), mutating endpoints need `Authorization: Bearer <token>`.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        validation_alias="QUEUE_API_CORS_ORIGINS",
        description='Browser origins allowed to call the API, as JSON: ["http://localhost:3000"]. '
        "A request from any other origin is refused (403).",
    )
    max_body_bytes: int = Field(
        default=8_000_000,
        validation_alias="QUEUE_API_MAX_BODY_BYTES",
        description="Larger request bodies are refused (413) before they are read whole.",
    )

    # --- load
    one_writer: bool = Field(
        default=True,
        validation_alias="QUEUE_API_ONE_WRITER",
        description="Send the API's changes to Prefect one at a time (queue_api/writes.py): "
        "the Prefect server on SQLite fails colliding writes. `false` only to measure it.",
    )
    write_wait_seconds: float = Field(
        default=15.0,
        gt=0,
        validation_alias="QUEUE_API_WRITE_WAIT_SECONDS",
        description="A change that waits longer than this for its turn is refused with a 503 "
        "and Retry-After (the API is saturated), not made.",
    )

    @field_validator("token", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        """`QUEUE_API_TOKEN=` (as an .env template leaves it) means no token."""
        return None if value in ("", None) else value

    @property
    def host_names(self) -> list[str]:
        return ["localhost", "127.0.0.1", "::1", "[::1]", self.host, *self.allowed_hosts]
