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
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from deployments.process_tree import stop_process_group
from queue_api.health import SILENT_LIMIT_SECONDS
from tests.support.outbox import in_outbox, wait_drained
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


@dataclass
class Started:
    server: subprocess.Popen[bytes]
    api: subprocess.Popen[bytes]
    base: str  # the API's
    env: dict[str, str]
    home: Path

    def start_api(self) -> None:
        """Start the API again (after the test killed it), with its log appended."""
        self.api = _start(["queue_api"], self.env, self.home / "api-again.log")


@pytest.fixture
def server_and_api(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    for started in _server_and_api(tmp_path, deployed=False):
        yield started.server, started.base


@pytest.fixture
def deployed(tmp_path: Path) -> Iterator[Started]:
    yield from _server_and_api(tmp_path, deployed=True)


def _server_and_api(tmp_path: Path, *, deployed: bool) -> Iterator[Started]:
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
    started = Started(
        server,
        _start(["queue_api"], env, tmp_path / "api.log"),
        f"http://127.0.0.1:{api_port}",
        env,
        tmp_path,
    )
    try:
        _until_ok(f"http://127.0.0.1:{port}/api/health")
        if deployed:
            setup = [sys.executable, "-m", "deployments", "setup"]
            subprocess.run(setup, cwd=REPO, env=env, check=True, capture_output=True)
        _until_ok(f"{started.base}/queue")
        yield started
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGCONT)
        stop_process_group(started.api)
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


def test_adds_during_a_prefect_outage_are_created_once_each(deployed: Started) -> None:
    """Clients keep adding while the server stops for longer than the API waits for it; each
    retries a 503 as told. An add whose create was already sent when the server stopped must not
    be refused (its retry would add it a second time), and one refused while waiting must not be
    created after all."""
    server, base = deployed.server, deployed.base
    clients, adds_each = 10, 12  # one add a second each: the adds span the whole outage
    answers: list[int] = []

    def client(number: int) -> None:
        with httpx.Client(base_url=base, timeout=90) as http:
            for n in range(adds_each):
                body = {"task_type": "pool_gen", "label": f"c{number}-{n}", "config": {"n": 10}}
                while (status := http.post("/queue/add", json=body).status_code) == 503:
                    answers.append(status)
                    time.sleep(0.5)
                answers.append(status)
                time.sleep(1)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # adds under way
    os.killpg(server.pid, signal.SIGSTOP)
    time.sleep(SILENT_LIMIT_SECONDS + 4)
    os.killpg(server.pid, signal.SIGCONT)
    for thread in threads:
        thread.join(120)

    wait_drained(deployed.env["DB_URL"])  # answered adds are created once Prefect is back
    _until_ok(f"{base}/queue")
    listing = httpx.get(f"{base}/queue", params={"limit": 500}).json()
    labels = [t["label"] for t in listing]
    expected = sorted(f"c{i}-{n}" for i in range(clients) for n in range(adds_each))
    print(f"answers: {answers.count(200)} created, {answers.count(503)} refused (503)")
    assert set(answers) <= {200, 503}, answers
    assert 503 in answers, "no add met the outage: the test proved nothing about retries"
    twice = sorted(label for label in set(labels) if labels.count(label) > 1)
    lost = sorted(set(expected) - set(labels))
    assert (twice, lost, len(labels)) == ([], [], len(expected)), "added twice, or lost"


def test_adds_answered_while_prefect_is_stopped_survive_a_killed_api_and_are_created_once(
    deployed: Started,
) -> None:
    """The outbox: an add is answered once it is kept in the domain database. Prefect stops
    (its creates hang, possibly received), the API is SIGKILLed before it learns whether they
    were made; a new API and Prefect back: each answered add exists once, with its id."""
    with httpx.Client(base_url=deployed.base, timeout=10) as http:
        assert http.post("/queue/pause").is_success
        warm = {"task_type": "pool_gen", "label": "warm", "config": {"n": 10}}
        assert http.post("/queue/add", json=warm).is_success  # its deployment is now known
        os.killpg(deployed.server.pid, signal.SIGSTOP)
        answered: dict[str, int] = {}
        for n in range(20):
            body = {"task_type": "pool_gen", "label": f"kept-{n}", "config": {"n": 10}}
            with contextlib.suppress(httpx.HTTPError):
                if (answer := http.post("/queue/add", json=body)).status_code == 200:
                    answered[body["label"]] = answer.json()["task_id"]
    assert answered, "no add was answered before the API saw Prefect stop"
    os.killpg(deployed.api.pid, signal.SIGKILL)
    deployed.api.wait(10)
    deployed.start_api()
    os.killpg(deployed.server.pid, signal.SIGCONT)

    deadline = time.monotonic() + 120
    while True:
        with contextlib.suppress(httpx.HTTPError):
            listing = httpx.get(f"{deployed.base}/queue", params={"limit": 500}, timeout=10)
            if listing.status_code == 200 and not in_outbox(deployed.env["DB_URL"]):
                break
        assert time.monotonic() < deadline, "the kept adds were not created"
        time.sleep(0.5)
    tasks = [t for t in listing.json() if t["label"].startswith("kept-")]
    print(f"{len(answered)} adds answered while Prefect was stopped")
    assert sorted((t["label"], t["id"]) for t in tasks) == sorted(answered.items())
    assert _runs_labelled(deployed.env, "kept-") == len(answered)  # in Prefect, once each


def _runs_labelled(env: dict[str, str], prefix: str) -> int:
    """Flow runs whose name starts with `prefix`, as the test's Prefect server has them."""
    url = env["PREFECT_API_URL"]
    body = {"flow_runs": {"name": {"like_": prefix}}, "limit": 200}
    runs = httpx.post(f"{url}/flow_runs/filter", json=body, timeout=30).json()
    return sum(1 for r in runs if r["name"].startswith(prefix))
