"""Which servers may receive the LLM API key, and the setting that lists them."""

from __future__ import annotations

import pytest

from biasbench.llm.key_scope import may_receive_key, shown
from biasbench.settings import Settings

ALLOWED = ["http://gpu-box:8000", "https://llm.example.org/team/"]


@pytest.mark.parametrize(
    "url",
    [
        "http://gpu-box:8000",
        "http://GPU-box:8000/",
        "http://gpu-box:8000/v1",
        "http://gpu-box:8000/v1/",
        "https://llm.example.org:443/team/v1",
    ],
)
def test_the_same_server_written_differently_gets_the_key(url: str) -> None:
    assert may_receive_key(url, ALLOWED)


@pytest.mark.parametrize(
    "url",
    [
        "http://gpu-box:8001",  # another port
        "https://gpu-box:8000",  # another scheme
        "http://gpu-box.evil.org:8000",
        "http://gpu-box:8000@evil.org:8000",  # user info: the request goes to evil.org
        "https://llm.example.org/other",
        "ftp://gpu-box:8000",
        "http://gpu-box:99999",
        "",
    ],
)
def test_any_other_server_does_not(url: str) -> None:
    assert not may_receive_key(url, ALLOWED)


def test_a_logged_url_leaves_out_user_and_password() -> None:
    assert shown("http://me:pw@Box:8000/v1") == "http://box:8000"


def test_the_default_server_is_always_allowed_and_the_list_reads_commas_or_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VLLM_BASE_URL", "http://127.0.0.1:8000")
    assert Settings().llm_key_servers == ["http://127.0.0.1:8000"]
    monkeypatch.setenv("LLM_ALLOWED_BASE_URLS", "http://a:1, http://b:2")
    assert Settings().llm_key_servers == ["http://127.0.0.1:8000", "http://a:1", "http://b:2"]
    monkeypatch.setenv("LLM_ALLOWED_BASE_URLS", '["http://c:3"]')
    assert Settings().llm_key_servers == ["http://127.0.0.1:8000", "http://c:3"]
