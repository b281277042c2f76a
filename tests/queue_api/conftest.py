"""The shim served for real: uvicorn on 127.0.0.1, over the queue stack of tests/support."""

from __future__ import annotations

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
from tests.support.ports import free_port
from tests.support.stack import RunningStack, queue_stack


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shim")


@pytest.fixture(scope="module")
def stack(prefect_server: str, home: Path) -> Iterator[RunningStack]:
    with queue_stack(prefect_server, f"sqlite:///{home / 'queue.db'}", home) as running:
        yield running


@pytest.fixture(scope="module")
def api(stack: RunningStack, home: Path) -> Iterator[httpx.Client]:
    """An HTTP client of the shim, as existing scripts are (`requests.post(base + ...)`)."""
    app = create_app(ApiSettings(), Settings(db_url=f"sqlite:///{home / 'queue.db'}"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    # The thread sees the test session's Prefect server (a context variable, not os.environ).
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(server.run,), daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        yield client
    server.should_exit = True
    thread.join(10)
