"""The shim's own settings; the domain's (database, ...) come from biasbench.settings."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    host: str = Field(default="127.0.0.1", validation_alias="QUEUE_API_HOST")
    port: int = Field(default=8765, validation_alias="QUEUE_API_PORT")
    token: SecretStr | None = Field(
        default=None,
        validation_alias="QUEUE_API_TOKEN",
        description="If set, mutating endpoints need `Authorization: Bearer <token>`.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        validation_alias="QUEUE_API_CORS_ORIGINS",
        description='Browser origins allowed to call the API, as JSON: ["http://localhost:3000"].',
    )
