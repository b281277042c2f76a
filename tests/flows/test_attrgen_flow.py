"""The attrgen flow against a real OpenAI-protocol server on 127.0.0.1: what gets stored."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Engine, select

from biasbench.db.engine import session_scope
from biasbench.db.models import Failure, PersonaAttribute
from flows.attrgen import attrgen
from tests.flows.conftest import MODEL
from tests.support.openai_server import OpenAIServer, Reply, Status
from tests.support.rows import count

FENCED = (
    '```json\n{"name": "Ana Lima", "appearance": "Tall, short grey hair.", '
    '"biography": "A nurse."}\n```'
)
THINKING = (
    '<think>Let me consider {"draft": 1} first.</think>\n'
    '{"name": "Omar Haddad", "appearance": "Wears glasses.", "biography": "Teaches maths."}'
)


def run_attrgen(server: OpenAIServer, dataset_id: int, **config: object):  # type: ignore[no-untyped-def]
    return asyncio.run(
        attrgen(
            dataset_id=dataset_id,
            model_name=MODEL,
            llm="vllm",
            vllm_base_url=server.base_url,
            **config,
        )
    )  # type: ignore[arg-type]


def attributes(engine: Engine, run_id: int) -> dict[int, dict[str, str]]:
    found: dict[int, dict[str, str]] = {}
    with session_scope(engine) as session:
        for row in session.scalars(
            select(PersonaAttribute).where(PersonaAttribute.attrgen_run_id == run_id)
        ):
            found.setdefault(row.persona_id, {})[row.key] = row.value
    return found


def test_every_persona_gets_a_name_appearance_and_biography(
    engine: Engine, llm_server: OpenAIServer, small_dataset: int
) -> None:
    llm_server.script([Reply(FENCED), Reply(THINKING)])
    result = run_attrgen(llm_server, small_dataset, batch_size=1)

    stored = attributes(engine, result.run_id)
    assert result.run_type == "attrgen" and result.dataset_id == small_dataset
    assert len(stored) == 8 and all(
        set(a) == {"name", "appearance", "biography"} for a in stored.values()
    )
    names = {a["name"] for a in stored.values()}
    assert {"Ana Lima", "Omar Haddad"} <= names and len(names) == 8
    assert result.summary == {"personas": 8, "with_attributes": 8, "missing": 0}


def test_unparseable_answers_are_retried_stricter_then_recorded_and_asked_again_on_resume(
    engine: Engine, llm_server: OpenAIServer, small_dataset: int
) -> None:
    llm_server.script([Reply("Sure! Here is a person."), Reply('{"name": "X"}'), Reply("[]")])
    first = run_attrgen(llm_server, small_dataset, batch_size=1, max_attempts=3)

    stricter = llm_server.requests[1]["messages"][-1]["content"]
    assert "only one JSON object" in stricter
    assert first.summary == {"personas": 8, "with_attributes": 7, "missing": 1}
    with session_scope(engine) as session:
        failure = session.scalars(select(Failure)).one()
    assert (failure.run_type, failure.kind, failure.attempt) == ("attrgen", "parse", 3)

    asked_before = len(llm_server.requests)
    again = run_attrgen(llm_server, small_dataset, batch_size=1, resume_run_id=first.run_id)
    assert again.run_id == first.run_id and again.summary["missing"] == 0
    assert len(llm_server.requests) - asked_before == 1
    assert count(engine, PersonaAttribute) == 8 * 3
    assert count(engine, Failure) == 0  # answered now: nothing is missing any more


def test_a_server_that_keeps_failing_fails_the_flow_and_keeps_what_was_stored(
    engine: Engine, llm_server: OpenAIServer, small_dataset: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_MAX_RETRIES", "2")
    llm_server.script([Reply(FENCED)] + [Status(503)] * 40)
    state = asyncio.run(
        attrgen(
            dataset_id=small_dataset,
            model_name=MODEL,
            llm="vllm",
            vllm_base_url=llm_server.base_url,
            batch_size=1,
            return_state=True,
        )
    )
    assert state.is_failed()
    assert "503" in str(state.result(raise_on_failure=False))
    assert count(engine, PersonaAttribute) == 3  # the one answer that came is kept
