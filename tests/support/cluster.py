"""The cluster profile of the stack for tests (deployments/cluster.py): `serve --profile cluster`
as a user starts it, with the address of each of its parts and the processes behind them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.ports import free_port
from tests.support.process_tree import command_line, descendants
from tests.support.services import postgres_database, redis_database
from tests.support.stack import REPO
from tests.support.telegram_server import CHAT_ID, TOKEN, TelegramServer
from tests.support.waiting import until


@dataclass
class Cluster:
    serve: subprocess.Popen[bytes]
    base: str  # the /queue API
    prefect_api: str  # the one address of the API processes
    prefect_db: str  # Prefect's own database (a synchronous URL, to look into it)
    domain_db: str
    log: Path
    telegram: TelegramServer
    retried: int = 0  # requests the /queue API answered with 503 (try again)

    def api_processes(self) -> list[int]:
        """The processes that serve requests: uvicorn's workers under `prefect server start`."""
        (server,) = [
            pid
            for pid in descendants(self.serve.pid)
            if "prefect server start" in command_line(pid)
        ]
        return [pid for pid in descendants(server) if "spawn_main" in command_line(pid)]

    def services_processes(self) -> list[int]:
        return [
            pid
            for pid in descendants(self.serve.pid)
            if "prefect server services start" in command_line(pid)
        ]

    def add(self, task_type: str, config: dict[str, Any], label: str, **extra: Any) -> int:
        """As a client does: a 503 says "not carried out, try again" (Retry-After)."""
        body = {"task_type": task_type, "config": config, "label": label, **extra}
        for _ in range(30):
            response = httpx.post(f"{self.base}/queue/add", json=body, timeout=120)
            if response.status_code != 503:
                break
            self.retried += 1
            time.sleep(1)
        assert response.status_code == 200, response.text
        return int(response.json()["task_id"])

    def task(self, task_id: int) -> dict[str, Any]:
        response = httpx.get(f"{self.base}/queue/{task_id}", timeout=30)
        if response.status_code == 503:  # "try again" (Retry-After): a client asks again
            self.retried += 1
            return {"status": "unknown yet"}
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_done(self, task_ids: list[int], timeout: float = 150) -> list[dict[str, Any]]:
        def finished() -> list[dict[str, Any]] | None:
            tasks = [self.task(i) for i in task_ids]
            ended = {"done", "failed", "cancelled", "skipped"}
            return tasks if all(t["status"] in ended for t in tasks) else None

        tasks: list[dict[str, Any]] = self.wait(finished, timeout, f"tasks {task_ids} end")
        return tasks

    def wait(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        """`until`, and where it fails, what Prefect says of the runs."""
        try:
            return until(check, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; runs: {self.runs()}") from None

    def runs(self) -> list[tuple[str, str, str]]:
        body = {"sort": "EXPECTED_START_TIME_DESC", "limit": 50}
        try:
            found = httpx.post(f"{self.prefect_api}/flow_runs/filter", json=body, timeout=30)
            return [(r["name"], r["state_type"], r["state_name"]) for r in found.json()]
        except httpx.HTTPError as exc:
            return [("?", "?", repr(exc))]


@contextmanager
def cluster_stack(home: Path, role: str = "all") -> Iterator[Cluster]:
    """`serve --profile cluster --role <role>` on fresh PostgreSQL databases and an empty Redis
    database, with Telegram pointed at a test server; once its manager runs."""
    with (
        postgres_database("asyncpg") as prefect_db,
        postgres_database() as domain_db,
        redis_database() as redis_url,
        TelegramServer() as telegram,
    ):
        port, api_port = free_port(), free_port()
        env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("TELEGRAM_", "SMTP_", "PREFECT_API_"))
            },
            "PREFECT_HOME": str(home / "prefect"),
            "PREFECT_API_DATABASE_CONNECTION_URL": prefect_db,
            "REDIS_URL": redis_url,
            "DB_URL": domain_db,
            "PROGRESS_INTERVAL": "0.5",
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_CHAT_ID": CHAT_ID,
            "TELEGRAM_API_BASE": telegram.base_url,
        }
        log = home / "serve.log"
        command = [
            sys.executable,
            "-m",
            "deployments",
            "serve",
            "--profile",
            "cluster",
            "--role",
            role,
        ]
        options = ["--port", str(port), "--api-port", str(api_port), "--logs", str(home / "logs")]
        with log.open("wb") as out:
            serve = subprocess.Popen(
                [*command, *options],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        stack = Cluster(
            serve,
            f"http://127.0.0.1:{api_port}",
            f"http://127.0.0.1:{port}/api",
            prefect_db.replace("+asyncpg", "+psycopg"),
            domain_db,
            log,
            telegram,
        )
        try:
            until(
                lambda: (
                    serve.poll() is not None
                    or f"Queue running (cluster, {role})" in log.read_text()
                ),
                240,
                "the cluster stack starts",
            )
            assert serve.poll() is None, log.read_text()
            until(
                lambda: httpx.get(f"{stack.base}/queue/stats").json()["executor_running"],
                120,
                "the /queue API answers and the manager runs",
            )
            yield stack
        finally:
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(serve.pid, signal.SIGKILL)
                serve.wait()
