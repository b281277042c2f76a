"""The LLM API key goes only to allowed servers: real OpenAI-protocol servers on 127.0.0.1 record
the Authorization header each task run sent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from prefect import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterTimestamp

from flows.attrgen import attrgen
from tests.flows.conftest import MODEL
from tests.support.openai_server import OpenAIServer

KEY = "sk-test-0123456789"


@pytest.fixture
def servers() -> Iterator[tuple[OpenAIServer, OpenAIServer, OpenAIServer]]:
    """The default server (needs the key), one allowed by LLM_ALLOWED_BASE_URLS (needs the key),
    and an unauthenticated one on another port that nobody allowed."""
    with (
        OpenAIServer(models=[MODEL], api_key=KEY) as default,
        OpenAIServer(models=[MODEL], api_key=KEY) as allowed,
        OpenAIServer(models=[MODEL]) as other,
    ):
        yield default, allowed, other


def authorizations(server: OpenAIServer) -> set[str | None]:
    return {r.headers.get("Authorization") for r in server.records}


def run_attrgen(dataset_id: int, vllm_base_url: str | None) -> None:
    asyncio.run(
        attrgen(dataset_id=dataset_id, model_name=MODEL, llm="vllm", vllm_base_url=vllm_base_url)
    )


async def warnings_since(since: float) -> list[str]:
    from datetime import UTC, datetime

    async with get_client() as client:
        logs = await client.read_logs(
            LogFilter(timestamp=LogFilterTimestamp(after_=datetime.fromtimestamp(since, UTC)))
        )
    return [log.message for log in logs]


def test_the_key_goes_to_allowed_servers_only_and_another_server_is_called_without_it(
    monkeypatch: pytest.MonkeyPatch,
    servers: tuple[OpenAIServer, OpenAIServer, OpenAIServer],
    small_dataset: int,
) -> None:
    default, allowed, other = servers
    monkeypatch.setenv("VLLM_API_KEY", KEY)
    monkeypatch.setenv("VLLM_BASE_URL", default.base_url)
    monkeypatch.setenv("LLM_ALLOWED_BASE_URLS", f"{allowed.base_url}/v1")
    since = time.time()

    run_attrgen(small_dataset, None)  # the default server
    run_attrgen(small_dataset, allowed.base_url)
    run_attrgen(small_dataset, other.base_url)  # completes: the server needs no key

    assert authorizations(default) == {f"Bearer {KEY}"}
    assert authorizations(allowed) == {f"Bearer {KEY}"}
    assert authorizations(other) == {None} and len(other.requests) == 8

    # The run says why, once, naming the server and never the key.
    port = f":{other.port}"
    deadline = time.monotonic() + 15  # logs reach the server in batches
    while not (said := [m for m in asyncio.run(warnings_since(since)) if port in m]):
        assert time.monotonic() < deadline, "no log line about the withheld key"
        time.sleep(0.5)
    assert len(said) == 1 and "without the LLM API key" in said[0]
    assert all(KEY not in m for m in asyncio.run(warnings_since(since)))
