"""A Prefect server of a test's own (`prefect server start`, SQLite in its own PREFECT_HOME) that
the test may SIGKILL and start again on the same port and database, as a host failure would."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import httpx

from tests.support.ports import free_port


class PrefectServer:
    """`start`, `kill` (SIGKILL, no shutdown of any kind), `start` again: same port, same file."""

    def __init__(self, home: Path, settings: dict[str, str] | None = None) -> None:
        """settings: extra PREFECT_* settings of the server."""
        self.home = home
        self.database = home / "prefect.db"
        self.log = home / "server.log"
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.process: subprocess.Popen[bytes] | None = None
        self.env = {
            **os.environ,
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.database}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            # The triggers service logs every event a trigger covers: the evidence of a failure.
            "PREFECT_LOGGING_LEVEL": "INFO",
            **(settings or {}),
        }

    def start(self, timeout: float = 120) -> float:
        """Starts it and waits until it answers; returns how long that took."""
        self.home.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        address = ["--host", "127.0.0.1", "--port", str(self.port)]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "prefect", "server", "start", *address],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        while time.monotonic() - began < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"prefect server exited; see {self.log}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return time.monotonic() - began
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prefect server not healthy after {timeout} s; see {self.log}")

    def kill(self) -> None:
        """SIGKILL to its whole process group, as when the host loses power."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def trigger_windows(self, resource_id: str) -> list[tuple[str, str, str]]:
        """The automation buckets the server keeps for a resource (Prefect's own table): the
        open windows of its proactive triggers, as (trigger id, start, end)."""
        with closing(sqlite3.connect(f"file:{self.database}?mode=ro", uri=True)) as db:
            rows = db.execute(
                "SELECT trigger_id, bucketing_key, start, end FROM automation_bucket"
            ).fetchall()
        return [(t, s, e) for t, key, s, e in rows if resource_id in json.loads(key)]


@contextmanager
def prefect_server(home: Path, settings: dict[str, str] | None = None) -> Iterator[PrefectServer]:
    server = PrefectServer(home, settings)
    try:
        yield server
    finally:
        server.kill()
