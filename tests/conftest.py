"""Shared fixtures: one real Prefect server per session, a fresh domain database per test,
real HTTP peers on 127.0.0.1 (see tests/support)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Isolate Prefect's home (results, local storage) before prefect is imported anywhere.
_PREFECT_HOME = tempfile.mkdtemp(prefix="biasbench-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.pop("VLLM_API_KEY", None)

import pytest  # noqa: E402
from prefect.settings import PREFECT_API_URL  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from biasbench.db.engine import ready_engine  # noqa: E402
from tests.support.services import postgres_database  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def prefect_server() -> Iterator[str]:
    """A real Prefect API server (SQLite), started once: it takes ~10 s."""
    with prefect_test_harness(server_startup_timeout=60):
        yield str(PREFECT_API_URL.value())


@pytest.fixture(scope="module")
def deployed(prefect_server: str) -> None:
    """The project's deployments on the session's server (`python -m deployments setup`)."""
    subprocess.run(
        [sys.executable, "-m", "deployments", "setup"],
        cwd=Path(__file__).resolve().parents[1],
        check=True,
        capture_output=True,
        env={**os.environ, "PREFECT_API_URL": prefect_server},
    )


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test starts with its own domain database and no LLM credentials."""
    monkeypatch.setenv("DB_URL", f"sqlite:///{tmp_path / 'biasbench.db'}")
    monkeypatch.setenv("PROGRESS_INTERVAL", "0.5")
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    monkeypatch.delenv("VLLM_BASE_URL", raising=False)


@pytest.fixture
def db_url() -> str:
    return os.environ["DB_URL"]


@pytest.fixture
def engine(db_url: str):  # type: ignore[no-untyped-def]
    return ready_engine(db_url)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards. Skips where no server runs (a laptop),
    fails in CI (tests/support/services.py)."""
    with postgres_database() as url:
        yield url


@pytest.fixture(scope="module", autouse=True)
def no_task_left_for_the_next_module(prefect_server: str) -> Iterator[None]:
    """Every module starts with an empty queue: what a module leaves unfinished (or Crashed,
    which the next manager would put back in the queue) is cancelled when it ends."""
    yield
    from prefect.utilities.asyncutils import run_coro_as_sync

    run_coro_as_sync(_cancel_leftover_tasks())


async def _cancel_leftover_tasks() -> None:
    from uuid import UUID

    from prefect import get_client
    from prefect.states import Cancelled

    from biasbench.queue import gateway

    async with get_client() as client:
        for run in [*await gateway.unfinished_runs(client), *await gateway.crashed_runs(client)]:
            await client.set_flow_run_state(
                UUID(run.id), Cancelled(message="left by a finished test module"), force=True
            )
