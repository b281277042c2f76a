"""Pick the backend a task asked for."""

from __future__ import annotations

from typing import Literal

from biasbench.llm.base import ChatClient
from biasbench.llm.fake import FakeChatClient
from biasbench.llm.openai_compat import OpenAICompatClient

Backend = Literal["vllm", "fake"]


def make_chat_client(
    llm: Backend,
    *,
    model_name: str,
    base_url: str,
    api_key: str | None,
    in_flight: int,
    request_timeout: float = 600.0,
    unreachable_after: float = 90.0,
    max_retries: int = 6,
) -> ChatClient:
    if llm == "fake":
        return FakeChatClient(model_name)
    return OpenAICompatClient(
        base_url=base_url,
        model_name=model_name,
        api_key=api_key,
        in_flight=in_flight,
        request_timeout=request_timeout,
        unreachable_after=unreachable_after,
        max_retries=max_retries,
    )
