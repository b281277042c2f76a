"""Beyond what the API can write in time, a change is refused with a 503, a Retry-After and a
message, never a bare 500, and a refused add leaves nothing behind. Saturation is made cheap here:
a change may wait only 10 ms for its turn to be written to Prefect."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from biasbench.settings import Settings
from queue_api.app import create_app
from queue_api.settings import ApiSettings
from tests.support.outbox import wait_drained
from tests.support.ports import free_port
from tests.support.stack import RunningStack

CONCURRENT = 20


@pytest.fixture
def impatient_api(stack: RunningStack, home: Path) -> Iterator[str]:
    settings = ApiSettings(write_wait_seconds=0.01)
    app = create_app(settings, Settings(db_url=f"sqlite:///{home / 'queue.db'}"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    # The thread sees the test session's Prefect server (a context variable, not os.environ).
    thread = threading.Thread(target=contextvars.copy_context().run, args=(server.run,))
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


async def _adds(base: str, db_url: str) -> tuple[list[httpx.Response], list[dict[str, object]]]:
    """Adds at once, while as many cancels hold the writer: adds are answered from the outbox
    (queue_api/outbox.py) and never wait for the writer, so only the cancels can be refused.
    (Cancels, not deletes: concurrent deletes are one bulk write (biasbench/queue/removals.py),
    which may find the writer free; each cancel is a write of its own.)"""
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        assert (await http.post("/queue/pause")).is_success
        doomed = [
            (await http.post("/queue/add", json={"task_type": "pool_gen", "config": {"n": 10}}))
            for _ in range(CONCURRENT)
        ]
        wait_drained(db_url)  # in Prefect: their cancels are writes there (queue_api/outbox.py)
        cancels = [
            http.post(f"/queue/{a.json()['task_id']}/cancel") for a in doomed if a.is_success
        ]
        adds = [
            http.post(
                "/queue/add",
                json={"task_type": "pool_gen", "config": {"n": 10}, "label": f"busy-{i}"},
            )
            for i in range(CONCURRENT)
        ]
        answers = await asyncio.gather(*adds, *cancels)
        listed = (await http.get("/queue", params={"limit": 10_000})).json()
        added = [a for a in answers if a.request.method == "POST" and a.url.path.endswith("/add")]
        for answer in added:
            if answer.is_success:
                await http.delete(f"/queue/{answer.json()['task_id']}")
        for answer in doomed:  # those whose cancel was refused
            await http.delete(f"/queue/{answer.json()['task_id']}")
    return list(answers), listed


def test_a_saturated_api_answers_503_with_retry_after(impatient_api: str, home: Path) -> None:
    answers, listed = asyncio.run(_adds(impatient_api, f"sqlite:///{home / 'queue.db'}"))
    assert {a.status_code for a in answers} <= {200, 503}
    busy = [a for a in answers if a.status_code == 503]
    assert busy, "40 changes at once, each allowed 10 ms of waiting: some must have been refused"
    for answer in busy:
        assert answer.headers["Retry-After"].isdigit()
        assert "busy" in answer.json()["detail"]
    refused_adds = [a for a in busy if a.url.path.endswith("/add")]
    made = {t["label"] for t in listed if str(t["label"]).startswith("busy-")}
    assert len(made) == CONCURRENT - len(refused_adds)  # a refused add created nothing
