"""`OpenAICompatClient` against a real OpenAI-protocol server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from biasbench.errors import (
    OUT_OF_MEMORY,
    LLMModelNotServed,
    LLMOutOfMemory,
    LLMResponseError,
    LLMUnreachable,
    critical_kind,
    is_critical,
)
from biasbench.llm.base import ChatClient, Message
from biasbench.llm.openai_compat import OpenAICompatClient
from tests.support.openai_server import (
    Delay,
    Disconnect,
    Malformed,
    OpenAIServer,
    Reply,
    Status,
    closed_port_url,
)

T = TypeVar("T")
QUESTION: list[Message] = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "How old is the sea?"},
]
SECRET = "sk-test-9f8e7d6c5b4a"


def echo(messages: Any, model: str) -> str:
    return f"{model} heard: {messages[-1]['content']}"


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(models=["m"], answer=echo) as srv:
        yield srv


def run(base_url: str, use: Callable[[OpenAICompatClient], Awaitable[T]], **config: Any) -> T:
    """Run `use(client)` in a fresh event loop with quick backoff, then close the client."""
    config = {"model_name": "m", "in_flight": 4, "backoff_base": 0.01, **config}

    async def main() -> T:
        async with OpenAICompatClient(base_url=base_url, **config) as client:
            return await use(client)

    return asyncio.run(main())


def ask(client: OpenAICompatClient) -> Awaitable[str]:
    return client.chat(QUESTION, max_tokens=16)


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
def test_chat_posts_an_openai_request_and_returns_the_text(
    server: OpenAIServer, suffix: str
) -> None:
    assert run(server.base_url + suffix, ask) == "m heard: How old is the sea?"
    assert server.requests == [
        {"model": "m", "messages": QUESTION, "max_tokens": 16, "temperature": 0}
    ]


def test_null_content_is_an_empty_answer(server: OpenAIServer) -> None:
    server.script([Reply(None)])
    assert run(server.base_url, ask) == ""


def test_the_default_server_answers_like_the_fake_backend() -> None:
    from biasbench.llm.fake import answer_for

    with OpenAIServer(models=["m"]) as srv:
        assert run(srv.base_url, ask) == answer_for(QUESTION, "m")


def test_probe_passes_when_the_model_is_served(server: OpenAIServer) -> None:
    run(server.base_url, lambda c: c.probe())
    assert [r.path for r in server.records] == ["/v1/models"]


def test_probe_names_the_served_models_when_ours_is_missing() -> None:
    with (
        OpenAIServer(models=["llama-3-8b", "qwen-2"]) as srv,
        pytest.raises(LLMModelNotServed, match="llama-3-8b, qwen-2") as info,
    ):
        run(srv.base_url, lambda c: c.probe())
    assert not is_critical(info.value)


def test_probe_of_a_closed_port_is_critical_and_quick() -> None:
    started = time.monotonic()
    with pytest.raises(LLMUnreachable) as info:
        # default backoff: this is the timing a flow sees
        run(closed_port_url(), lambda c: c.probe(), backoff_base=0.5)
    assert time.monotonic() - started < 30
    assert is_critical(info.value)


def test_chat_to_a_closed_port_gives_up_after_unreachable_after() -> None:
    started = time.monotonic()
    with pytest.raises(LLMUnreachable) as info:
        run(closed_port_url(), ask, max_retries=1000, backoff_base=0.05, unreachable_after=1.0)
    assert time.monotonic() - started >= 1.0
    assert is_critical(info.value)


def test_a_refused_connection_is_retried_past_max_retries_until_unreachable_after() -> None:
    """A server restarting mid-task is waited out by time, not by a count of attempts."""
    with pytest.raises(LLMUnreachable, match=r"after (\d+) attempt") as info:
        run(closed_port_url(), ask, max_retries=0, backoff_base=0.05, unreachable_after=1.0)
    attempts = int(re.search(r"after (\d+) attempt", str(info.value)).group(1))  # type: ignore[union-attr]
    assert attempts > 1


def test_a_server_error_is_retried(server: OpenAIServer) -> None:
    server.script([Status(500), Status(503), Reply("fine now")])
    assert run(server.base_url, ask) == "fine now"
    assert len(server.requests) == 3


def test_server_errors_that_persist_raise_a_response_error(server: OpenAIServer) -> None:
    server.script([Status(500, message="engine step failed")] * 3)
    with pytest.raises(LLMResponseError, match="engine step failed") as info:
        run(server.base_url, ask, max_retries=2)
    assert info.value.status_code == 500 and not is_critical(info.value)
    assert len(server.requests) == 3


@pytest.mark.parametrize(
    "error",
    [
        # vLLM before the OpenAI-style body: flat, the exception's text in `message`
        Status(
            500,
            message="CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.15 GiB total)",
            error_type="InternalServerError",
        ),
        # newer vLLM: nested under "error", the exception class named in `type`
        Status(500, message="engine died", error_type="torch.OutOfMemoryError", nested=True),
        Status(400, message="OutOfMemoryError: out of memory during prefill", nested=True),
    ],
)
def test_a_gpu_out_of_memory_is_critical_and_not_retried(
    server: OpenAIServer, error: Status
) -> None:
    server.script([error, Reply("never asked")])
    with pytest.raises(LLMOutOfMemory) as info:
        run(server.base_url, ask)
    assert critical_kind(info.value) is OUT_OF_MEMORY
    assert len(server.requests) == 1


def test_rate_limiting_waits_as_long_as_retry_after_says(server: OpenAIServer) -> None:
    server.script([Status(429, retry_after=1), Reply("after the wait")])
    started = time.monotonic()
    assert run(server.base_url, ask) == "after the wait"
    assert time.monotonic() - started >= 1.0
    chats = [r for r in server.records if r.path.endswith("/completions")]
    assert chats[0].finished is not None and chats[1].started - chats[0].finished >= 0.9


def test_retry_after_as_an_http_date_is_honoured(server: OpenAIServer) -> None:
    # The date has one-second resolution: "now + 3 s" means a wait of 2 to 3 s, far above the
    # backoff of this client (at most 0.01 s), so a client ignoring the date fails here.
    server.script([Status(429, retry_after_date=3), Reply("after the date")])
    assert run(server.base_url, ask) == "after the date"
    first, second = server.chat_records()
    assert first.finished is not None and second.started - first.finished >= 1.5


def test_a_retry_after_longer_than_a_request_may_take_is_capped_at_the_request_timeout(
    server: OpenAIServer,
) -> None:
    server.script([Status(503, retry_after=3600), Reply("soon enough")])
    assert run(server.base_url, ask, request_timeout=1.0) == "soon enough"
    first, second = server.chat_records()
    assert first.finished is not None and 0.9 <= second.started - first.finished < 10


def test_a_malformed_body_is_retried(server: OpenAIServer) -> None:
    server.script([Malformed(), Reply("well formed")])
    assert run(server.base_url, ask) == "well formed"
    assert len(server.requests) == 2


def test_a_body_that_stays_malformed_raises_a_response_error(server: OpenAIServer) -> None:
    server.script([Malformed()] * 2)
    with pytest.raises(LLMResponseError, match="unusable body") as info:
        run(server.base_url, ask, max_retries=1)
    assert not is_critical(info.value)


def test_a_client_error_is_not_retried(server: OpenAIServer) -> None:
    server.script([Status(400, message="prompt is longer than the context")])
    with pytest.raises(LLMResponseError, match="longer than the context") as info:
        run(server.base_url, ask)
    assert info.value.status_code == 400
    assert len(server.requests) == 1


def test_an_unknown_model_on_chat_is_a_response_error(server: OpenAIServer) -> None:
    with pytest.raises(LLMResponseError, match="does not exist") as info:
        run(server.base_url, ask, model_name="other")
    assert info.value.status_code == 404


def test_a_dropped_connection_is_retried(server: OpenAIServer) -> None:
    server.script([Disconnect(), Reply("reconnected")])
    assert run(server.base_url, ask) == "reconnected"


def test_a_request_that_times_out_is_retried(server: OpenAIServer) -> None:
    server.script([Delay(5), Reply("in time")])
    assert run(server.base_url, ask, request_timeout=0.3) == "in time"
    assert len(server.requests) == 2


def test_in_flight_bounds_concurrent_requests(server: OpenAIServer) -> None:
    server.script([Delay(0.1)] * 12)

    async def twelve_at_once(client: OpenAICompatClient) -> list[str]:
        return await asyncio.gather(*(ask(client) for _ in range(12)))

    assert len(run(server.base_url, twelve_at_once, in_flight=3)) == 12
    assert server.max_in_flight == 3


def test_the_api_key_is_sent_as_bearer_and_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with OpenAIServer(models=["m"], answer=echo, api_key=SECRET) as srv:
        srv.script([Status(500), Status(400, message=f"the key {SECRET} is banned here")])
        with pytest.raises(LLMResponseError) as refused:
            run(srv.base_url, ask, api_key=SECRET)
        assert run(srv.base_url, ask, api_key=SECRET).startswith("m heard")
        with pytest.raises(LLMResponseError) as wrong:
            run(srv.base_url, ask, api_key=SECRET + "-wrong")
        headers = [r.headers.get("Authorization") for r in srv.records]
    with pytest.raises(LLMUnreachable) as unreachable:
        run(closed_port_url(), ask, api_key=SECRET, max_retries=1, unreachable_after=0.5)

    assert headers[:3] == [f"Bearer {SECRET}"] * 3
    assert wrong.value.status_code == 401
    for exc in (refused.value, wrong.value, unreachable.value):
        assert SECRET not in str(exc) and SECRET not in repr(exc)
    assert "***" in str(refused.value)
    assert SECRET not in caplog.text
    client: ChatClient = OpenAICompatClient(
        base_url="http://h:8000", model_name="m", api_key=SECRET, in_flight=1
    )
    assert SECRET not in repr(client)
