"""A second host's GPU side for tests (README "Scaling out"): `serve --role gpu` from a copy of
the source tree in a directory of its own, with its own PREFECT_HOME and a model catalogue whose
model server is the OpenAI-compatible test server, against another host's Prefect server and the
shared domain database."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from deployments.process_tree import STACK_ENV
from tests.support.model_host import model_entry, write_catalogue
from tests.support.stack import REPO
from tests.support.waiting import until

# What a GPU host needs of the project: the packages and the files that describe them.
COPIED = ("biasbench", "flows", "deployments", "queue_api", "prefect.yaml", "pyproject.toml")
MODEL = "remote-model"  # the model the GPU host serves, half a second an answer


@dataclass
class GpuHost:
    """`serve --role gpu` from its own copy of the code, with its own PREFECT_HOME."""

    root: Path
    api_url: str  # host 1's Prefect server
    db_url: str  # the shared domain database
    process: subprocess.Popen[bytes] | None = None

    @property
    def checkout(self) -> Path:
        return self.root / "checkout"

    @property
    def home(self) -> Path:
        return self.root / "prefect"

    @property
    def log(self) -> Path:
        return self.root / "serve.log"

    @property
    def catalogue(self) -> Path:
        return self.root / "models.toml"

    @property
    def model_state(self) -> Path:
        return self.checkout / ".stack-logs" / "model-host-0"

    def install(self) -> None:
        """The code, and a model catalogue whose server is the test OpenAI server (copied too:
        it is this host's "vLLM")."""
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for name in COPIED:
            source = REPO / name
            if source.is_dir():
                shutil.copytree(source, self.checkout / name, ignore=ignore)
            else:
                shutil.copy2(source, self.checkout / name)
        shutil.copytree(
            REPO / "tests" / "support", self.checkout / "tests" / "support", ignore=ignore
        )
        write_catalogue(self.catalogue, model_entry(MODEL, options="--latency 0.5"))

    def start(self, timeout: float = 180) -> None:
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TELEGRAM_", "SMTP_", "PREFECT_", "PYTHONPATH", STACK_ENV))
        }
        env = {
            **inherited,
            "PREFECT_HOME": str(self.home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_LOGGING_LEVEL": "INFO",
            "DB_URL": self.db_url,
            "MODEL_CATALOGUE": str(self.catalogue),
        }
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "deployments", "serve", "--role", "gpu"],
                cwd=self.checkout,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = self.process
        until(
            lambda: "GPU side running" in self.output() or process.poll() is not None,
            timeout,
            "host 2's GPU side starts",
        )
        assert process.poll() is None, self.output()

    def stop(self, timeout: float = 120) -> int:
        """SIGTERM, as a service manager stops it; its exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
