"""`make serve` (`python -m deployments serve`): the whole queue and its /queue API, until SIGTERM.

It runs against the test session's Prefect server (PREFECT_API_URL), as it would against a
shared one; everything else (warm starter, GPU worker, manager, REST API) is its own."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.ports import free_port
from tests.support.stack import REPO
from tests.support.waiting import until


def test_serve_runs_tasks_submitted_over_the_queue_api_and_stops_cleanly(
    prefect_server: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "SMTP_"))},
        "PREFECT_API_URL": prefect_server,
        "DB_URL": f"sqlite:///{tmp_path / 'queue.db'}",
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "deployments", "serve", "--api-port", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        stats = until(
            lambda: (
                (r := httpx.get(f"{base}/queue/stats")).status_code == 200
                and r.json()["executor_running"]
                and r.json()
            ),
            120,
            "the /queue API answers and the manager runs",
        )
        assert stats["executor_paused"] is False
        added = httpx.post(
            f"{base}/queue/add",
            json={"task_type": "pool_gen", "config": {"n": 20}, "label": "served"},
        ).json()
        task = until(
            lambda: (
                (t := httpx.get(f"{base}/queue/{added['task_id']}").json())["status"]
                in {"done", "failed"}
                and t
            ),
            120,
            "the task ran",
        )
        assert (task["status"], task["label"], task["result_run_type"]) == (
            "done",
            "served",
            "dataset",
        )
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=120)
    output = log.read_text()
    assert serve.returncode == 0, output
    assert f"/queue API at http://127.0.0.1:{port}/queue" in output
    until(lambda: _refused(port), 30, "the API's port is closed")


def _refused(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0
