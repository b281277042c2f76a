"""Fixtures for flow tests: real OpenAI-protocol and Bot API servers, small real datasets."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from flows.balanced_gen import balanced_gen
from flows.pool_gen import pool_gen
from tests.support.notifications import telegram_for_tests
from tests.support.openai_server import OpenAIServer
from tests.support.telegram_server import TelegramServer

MODEL = "test-model"


@pytest.fixture
def llm_server() -> Iterator[OpenAIServer]:
    """A real server on 127.0.0.1 answering like the fake backend, scriptable per test."""
    with OpenAIServer(models=[MODEL]) as server:
        yield server


@pytest.fixture
def small_dataset() -> int:
    """A balanced dataset of 8 personas drawn from a 400-persona pool (made by the real flows)."""
    pool = asyncio.run(pool_gen(n=400, seed=5))
    return asyncio.run(balanced_gen(dataset_id=pool.dataset_id, n=8, seed=1)).dataset_id


@pytest.fixture(scope="module")
def telegram_env() -> Iterator[tuple[TelegramServer, dict[str, str]]]:
    """A Bot API server on 127.0.0.1 and the environment that points setup at it (one per
    module: a module's stack is set up once)."""
    with telegram_for_tests() as pair:
        yield pair


@pytest.fixture(scope="module")
def telegram(telegram_env: tuple[TelegramServer, dict[str, str]]) -> TelegramServer:
    return telegram_env[0]
