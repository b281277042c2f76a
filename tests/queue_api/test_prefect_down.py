"""While the Prefect server does not answer (stopped, or gone), the /queue API says so at once
with a 503 and a reason, instead of holding every client for a minute; it serves again as soon
as the server is back. A real `prefect server start` of its own (this test stops it), and the
API as `python -m queue_api` in its own process."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deployments.process_tree import stop_process_group
from tests.support.ports import free_port
from tests.support.stack import REPO


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _until_ok(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s")


@pytest.fixture
def server_and_api(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    yield from _server_and_api(tmp_path, deployed=False)


@pytest.fixture
def deployed_server_and_api(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    yield from _server_and_api(tmp_path, deployed=True)


def _server_and_api(
    tmp_path: Path, *, deployed: bool
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port, api_port = free_port(), free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DB_URL": f"sqlite:///{tmp_path / 'queue.db'}",
        "QUEUE_API_PORT": str(api_port),
    }
    server = _start(["prefect", "server", "start", "--port", str(port)], env, tmp_path / "s.log")
    api = _start(["queue_api"], env, tmp_path / "api.log")
    base = f"http://127.0.0.1:{api_port}"
    try:
        _until_ok(f"http://127.0.0.1:{port}/api/health")
        if deployed:
            setup = [sys.executable, "-m", "deployments", "setup"]
            subprocess.run(setup, cwd=REPO, env=env, check=True, capture_output=True)
        _until_ok(f"{base}/queue")
        yield server, base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGCONT)
        stop_process_group(api)
        stop_process_group(server)


def answer_while_down(base: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = httpx.get(f"{base}/queue", timeout=90)
    return response, time.monotonic() - started


def test_a_stopped_then_killed_prefect_server_is_a_503_with_its_reason(
    server_and_api: tuple[subprocess.Popen[bytes], str],
) -> None:
    server, base = server_and_api
    os.killpg(server.pid, signal.SIGSTOP)  # accepts connections, never answers
    stopped, took_stopped = answer_while_down(base)
    os.killpg(server.pid, signal.SIGCONT)
    _until_ok(f"{base}/queue")
    server.kill()
    server.wait(10)
    gone, took_gone = answer_while_down(base)

    print(f"503 after {took_stopped:.1f} s (server stopped), {took_gone:.1f} s (server gone)")
    for response in (stopped, gone):
        assert response.status_code == 503
        assert "Prefect server" in response.json()["detail"]
        assert "no task is lost" in response.json()["detail"]


def test_adds_during_a_prefect_outage_are_created_once_each(
    deployed_server_and_api: tuple[subprocess.Popen[bytes], str],
) -> None:
    """Clients keep adding while the server stops for 6 s; each retries a 503 as told. An add
    whose create was already sent when the server stopped must not be refused (its retry would
    add it a second time), and one refused while waiting must not be created after all."""
    server, base = deployed_server_and_api
    clients, adds_each = 10, 4
    answers: list[int] = []

    def client(number: int) -> None:
        with httpx.Client(base_url=base, timeout=90) as http:
            for n in range(adds_each):
                body = {"task_type": "pool_gen", "label": f"c{number}-{n}", "config": {"n": 10}}
                while (status := http.post("/queue/add", json=body).status_code) == 503:
                    answers.append(status)
                    time.sleep(0.5)
                answers.append(status)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # adds under way
    os.killpg(server.pid, signal.SIGSTOP)
    time.sleep(6)
    os.killpg(server.pid, signal.SIGCONT)
    for thread in threads:
        thread.join(120)

    listing = httpx.get(f"{base}/queue", params={"limit": 500}).json()
    labels = [t["label"] for t in listing]
    expected = sorted(f"c{i}-{n}" for i in range(clients) for n in range(adds_each))
    print(f"answers: {answers.count(200)} created, {answers.count(503)} refused (503)")
    assert set(answers) <= {200, 503}, answers
    twice = sorted(label for label in set(labels) if labels.count(label) > 1)
    lost = sorted(set(expected) - set(labels))
    assert (twice, lost, len(labels)) == ([], [], len(expected)), "added twice, or lost"
