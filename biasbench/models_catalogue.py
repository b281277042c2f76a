"""The model catalogue: which models this machine can serve, and how to start each one.

Models are configuration, not task parameters: a task names `model_name`, and the GPU's model
host (deployments/model_host.py) looks the name up here to start, wake or swap its server. The
catalogue is a TOML file (stdlib `tomllib`, so no new dependency) whose path is the setting
`MODEL_CATALOGUE`; without one, tasks call `vllm_base_url` / `VLLM_BASE_URL` as before::

    [models.mistral-24b]
    hf_id = "mistralai/Mistral-Small-24B-Instruct-2501"
    serve = "vllm serve {hf_id} --port {port} --gpu-memory-utilization 0.9 --enable-sleep-mode"
    env = { VLLM_SERVER_DEV_MODE = "1" }   # vLLM's sleep endpoints need dev mode
    supports_sleep = true
    gpu_memory_gb = 60
    start_timeout = 900

The command template knows `{port}` (picked by the host), `{hf_id}`, `{name}` and `{python}`
(this interpreter, for test servers)."""

from __future__ import annotations

import shlex
import sys
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from biasbench.errors import InvalidConfig


class ModelSpec(BaseModel):
    """One servable model. `name` is the model's name as served (what `/v1/models` lists and
    what tasks give as `model_name`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    serve: str = Field(min_length=1, description="Command template that starts the server.")
    hf_id: str | None = Field(default=None, description="Weights to load; default: the name.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment.")
    health_path: str = Field(default="/health", description="Answers 200 once the server is up.")
    start_timeout: float = Field(default=900.0, gt=0, description="Seconds to become ready.")
    supports_sleep: bool = Field(default=False, description="vLLM --enable-sleep-mode (+ dev).")
    gpu_memory_gb: float | None = Field(
        default=None, ge=0, description="GPU memory it needs; checked before a start."
    )
    wake_timeout: float = Field(default=120.0, gt=0, description="Seconds a wake may take.")

    def command(self, port: int) -> list[str]:
        """The serve command with its placeholders filled in, split like a shell would."""
        values = {
            "port": port,
            "hf_id": self.hf_id or self.name,
            "name": self.name,
            "python": sys.executable,
        }
        try:
            return shlex.split(self.serve.format(**values))
        except (KeyError, IndexError, ValueError) as exc:
            raise InvalidConfig(
                "serve", f"model {self.name!r}: bad command template: {exc}"
            ) from None


class Catalogue(BaseModel):
    """Every model of the machine, by served name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: dict[str, ModelSpec] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _names_from_keys(cls, data: object) -> object:
        """`[models.<name>]` tables need not repeat their name."""
        if isinstance(data, dict) and isinstance(data.get("models"), dict):
            models = {
                key: {"name": key, **spec} if isinstance(spec, dict) else spec
                for key, spec in data["models"].items()
            }
            return {**data, "models": models}
        return data

    @property
    def names(self) -> list[str]:
        return sorted(self.models)

    def get(self, name: str) -> ModelSpec:
        """The model, or InvalidConfig naming the known ones."""
        spec = self.models.get(name)
        if spec is None:
            known = ", ".join(self.names) or "none"
            raise InvalidConfig("model_name", f"unknown model {name!r}; known models: {known}")
        return spec


def load_catalogue(path: Path | str | None) -> Catalogue | None:
    """The catalogue at `path`, or None when no path is configured. A file that is missing or
    wrong is an error at once, naming the file: a night must not start on a typo."""
    if path is None or str(path) == "":
        return None
    file = Path(path).expanduser()
    try:
        data = tomllib.loads(file.read_text())
        return Catalogue.model_validate(data)
    except OSError as exc:
        raise InvalidConfig("MODEL_CATALOGUE", f"cannot read {file}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidConfig("MODEL_CATALOGUE", f"{file} is not valid TOML: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidConfig("MODEL_CATALOGUE", f"{file}: {where}: {first['msg']}") from None
