"""The benchmark flow against a real OpenAI-protocol server on 127.0.0.1: what gets stored."""

from __future__ import annotations

import re
import time

import pytest
from sqlalchemy import Engine, delete, select

from biasbench.db.engine import session_scope
from biasbench.db.models import BenchmarkResult, BenchmarkRun, Failure, PersonaAttribute, Trait
from biasbench.errors import InvalidConfig, LLMErrorShareExceeded, LLMUnreachable, is_critical
from biasbench.parsing import extract_json_object
from biasbench.prompts import QUESTION_PREFIX, scale_lines
from biasbench.results import forget_results, result_of_flow_run
from biasbench.runs import open_benchmark_run
from flows.attrgen import attrgen
from flows.balanced_gen import balanced_gen
from flows.benchmark import benchmark
from flows.pool_gen import pool_gen
from tests.flows.conftest import MODEL
from tests.support.openai_server import (
    EmptyChoices,
    Malformed,
    OpenAIServer,
    Reply,
    Status,
    closed_port_url,
)
from tests.support.rows import count, result_keys


def active_traits(engine: Engine) -> int:
    return count(engine, Trait, active=True)


def run_benchmark(server: OpenAIServer, dataset_id: int, **config: object):  # type: ignore[no-untyped-def]
    return pytest.importorskip("asyncio").run(
        benchmark(
            dataset_id=dataset_id,
            model_name=MODEL,
            llm="vllm",
            vllm_base_url=server.base_url,
            **config,
        )  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("dual_fraction", [0.0, 0.25, 1.0])
def test_total_is_personas_times_traits_times_one_plus_dual_fraction(
    engine: Engine, llm_server: OpenAIServer, small_dataset: int, dual_fraction: float
) -> None:
    result = run_benchmark(
        llm_server, small_dataset, scale_mode="in", dual_fraction=dual_fraction, batch_size=8
    )

    pairs = 8 * active_traits(engine)
    keys = result_keys(engine, result.run_id)
    assert len(keys) == len(set(keys)) == pairs + round(dual_fraction * pairs)
    assert result.summary["planned"] == len(keys) and result.summary["error_share"] == 0
    if dual_fraction == 1.0:
        assert {o for _, _, o in keys} == {"in", "rev"}


def test_rev_stores_the_raw_rating_with_its_order(
    engine: Engine, llm_server: OpenAIServer, small_dataset: int
) -> None:
    result = run_benchmark(llm_server, small_dataset, scale_mode="rev", include_rationale=True)

    with session_scope(engine) as session:
        rows = session.scalars(
            select(BenchmarkResult).where(BenchmarkResult.run_id == result.run_id)
        ).all()
    assert rows and {r.scale_order for r in rows} == {"rev"}
    for row in rows:
        answer = extract_json_object(row.raw_answer)
        assert row.rating == int(answer["rating"]) and 1 <= row.rating <= 5
        assert row.rationale
    # Every prompt showed the reversed scale: 1 means "very <adjective>".
    with session_scope(engine) as session:
        adjectives = session.scalars(select(Trait.adjective).where(Trait.active.is_(True))).all()
    prompts = [m["content"] for body in llm_server.requests for m in body["messages"]]
    assert prompts and all(
        any(scale_lines(a, "rev")[0] in p for a in adjectives) for p in prompts if "seem?" in p
    )


def test_bad_answers_and_server_errors_are_retried_and_recorded(
    engine: Engine, llm_server: OpenAIServer, small_dataset: int
) -> None:
    llm_server.script(
        [
            Malformed(),  # 1st request: body is not JSON -> client retries
            Status(500),  # server error -> retried with backoff
            Status(429, retry_after=3),  # rate limited -> waits as told, then retried
            Reply('{"rating": 9}'),  # out of range -> asked again, stricter
            Reply("I would rather not say."),  # no JSON -> asked again, stricter
            Reply('{"rating": 0}'),  # out of range a third time -> recorded as failure
        ]
    )
    result = run_benchmark(llm_server, small_dataset, scale_mode="in", batch_size=1, max_attempts=3)

    planned = 8 * active_traits(engine)
    keys = result_keys(engine, result.run_id)
    with session_scope(engine) as session:
        failures = session.scalars(select(Failure).where(Failure.run_id == result.run_id)).all()
        attempts = session.scalars(
            select(BenchmarkResult.attempt).where(BenchmarkResult.run_id == result.run_id)
        ).all()
    # Retry-After was honoured: the retry came 3 s after the 429, where the backoff alone
    # (1-2 s at that retry) would have sent it sooner.
    chats = llm_server.chat_records()
    assert chats[2].finished is not None and chats[3].started - chats[2].finished >= 2.9
    assert len(keys) == planned - 1 and len(failures) == 1
    assert (
        failures[0].kind == "parse" and failures[0].attempt == 3 and "rating" in failures[0].snippet
    )
    assert result.summary["error_share"] == pytest.approx(1 / planned)
    assert max(attempts) == 1  # the one failed item is not in the results


def active_adjectives(engine: Engine) -> list[str]:
    with session_scope(engine) as session:
        return list(
            session.scalars(
                select(Trait.adjective).where(Trait.active.is_(True)).order_by(Trait.id)
            )
        )


def question_about(adjective: str) -> str:
    """Text only the rating prompts of this adjective contain."""
    return f"{QUESTION_PREFIX}{adjective} does "


def test_requests_that_outlast_their_retries_become_failures_and_the_run_goes_on(
    engine: Engine, llm_server: OpenAIServer, small_dataset: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_MAX_RETRIES", "1")
    monkeypatch.setenv("LLM_MAX_ERROR_SHARE", "0.3")  # 3 of 15 traits fail: 20 % of the items
    lasting_500, lasting_429, no_choices = active_adjectives(engine)[:3]
    llm_server.on_prompt(question_about(lasting_500), Status(500, message="engine hiccup"))
    llm_server.on_prompt(question_about(lasting_429), Status(429, retry_after=0))
    llm_server.on_prompt(question_about(no_choices), EmptyChoices())

    first = run_benchmark(llm_server, small_dataset, scale_mode="in", batch_size=4)

    planned = 8 * active_traits(engine)
    with session_scope(engine) as session:
        failures = session.scalars(select(Failure).where(Failure.run_id == first.run_id)).all()
    assert len(result_keys(engine, first.run_id)) == planned - 3 * 8
    assert len(failures) == 3 * 8 and {f.kind for f in failures} == {"llm_error"}
    snippets = " ".join(f.snippet for f in failures)
    assert "HTTP 500: engine hiccup" in snippets and "HTTP 429" in snippets
    assert "unusable body" in snippets  # the empty choices
    assert first.summary["failures"] == 3 * 8

    # Asked again on resume; failing again, each item keeps one row, saying why this time.
    asked_before = len(llm_server.requests)
    run_benchmark(llm_server, small_dataset, scale_mode="in", resume_run_id=first.run_id)
    assert len(llm_server.requests) - asked_before == 3 * 8 * 2  # 1 retry each
    assert count(engine, Failure) == 3 * 8
    with session_scope(engine) as session:
        latest = session.scalars(select(Failure.created_at)).all()
    assert min(latest) > max(f.created_at for f in failures)

    # The server has recovered: only the failed items are asked, and no failure remains.
    with OpenAIServer(models=[MODEL]) as recovered:
        again = run_benchmark(recovered, small_dataset, scale_mode="in", resume_run_id=first.run_id)
        assert len(recovered.requests) == 3 * 8
    assert len(result_keys(engine, again.run_id)) == planned
    assert again.summary["failures"] == 0 and count(engine, Failure) == 0


def test_the_analysis_of_a_resumed_run_counts_only_its_current_plan(
    engine: Engine, llm_server: OpenAIServer, small_dataset: int
) -> None:
    first = run_benchmark(llm_server, small_dataset, scale_mode="in")
    with session_scope(engine) as session:  # a trait is retired between the two passes
        retired = session.scalars(select(Trait).where(Trait.active.is_(True))).first()
        assert retired is not None
        retired.active = False

    again = run_benchmark(llm_server, small_dataset, scale_mode="in", resume_run_id=first.run_id)

    planned = 8 * active_traits(engine)
    assert len(result_keys(engine, first.run_id)) == planned + 8  # its answers stay stored
    assert again.summary["planned"] == again.summary["results"] == planned


def test_a_server_failing_more_items_than_the_error_share_fails_the_run(
    engine: Engine, llm_server: OpenAIServer, small_dataset: int, monkeypatch: pytest.MonkeyPatch
) -> None:

    monkeypatch.setenv("LLM_MAX_RETRIES", "0")
    for adjective in active_adjectives(engine)[:4]:  # 4 of 15 traits: 27 % of the items
        llm_server.on_prompt(question_about(adjective), Status(503, message="overloaded"))

    state = run_benchmark(llm_server, small_dataset, batch_size=4, return_state=True)

    assert state.is_failed() and state.name == "Failed"  # broken, but not critical
    error = state.result(raise_on_failure=False)
    assert isinstance(error, LLMErrorShareExceeded) and not is_critical(error)
    assert "LLM_MAX_ERROR_SHARE=20%" in str(error) and "HTTP 503: overloaded" in str(error)
    # Everything asked before the run stopped is stored: what failed (asked again on resume)
    # and what was answered.
    found = re.match(r"(\d+) of (\d+) items asked so far", str(error))
    assert found is not None
    failed, asked = int(found[1]), int(found[2])
    assert count(engine, Failure) == failed and count(engine, BenchmarkResult) == asked - failed


def test_unreachable_server_fails_fast_with_a_critical_error(
    engine: Engine, small_dataset: int
) -> None:
    import asyncio

    started = time.monotonic()
    state = asyncio.run(
        benchmark(
            dataset_id=small_dataset,
            model_name=MODEL,
            llm="vllm",
            vllm_base_url=closed_port_url(),
            return_state=True,
        )
    )
    elapsed = time.monotonic() - started

    assert state.is_failed() and state.name == "LLM unreachable"  # the run's badge in the UI
    error = state.result(raise_on_failure=False)
    assert isinstance(error, LLMUnreachable) and is_critical(error)
    assert elapsed < 30
    assert count(engine, BenchmarkRun) == 0  # nothing half-created


def test_a_gpu_out_of_memory_fails_the_run_as_out_of_memory_at_once(
    engine: Engine, llm_server: OpenAIServer, small_dataset: int
) -> None:

    llm_server.script([Reply('{"rating": 2}')] * 3)
    llm_server.script([Status(500, message="CUDA out of memory. Tried to allocate 1.2 GiB")] * 50)
    state = run_benchmark(llm_server, small_dataset, batch_size=1, return_state=True)

    assert state.is_failed() and state.name == "Out of memory"  # critical: the run's badge
    assert len(llm_server.requests) == 4  # the first out-of-memory answer ends the run
    assert count(engine, BenchmarkResult) == 3  # what was answered before is kept


def test_attributes_of_another_dataset_are_refused_before_any_run_exists(
    engine: Engine, llm_server: OpenAIServer, small_dataset: int
) -> None:
    import asyncio

    other = asyncio.run(
        balanced_gen(dataset_id=asyncio.run(pool_gen(n=200, seed=8)).dataset_id, n=4)
    ).dataset_id
    attrs = asyncio.run(
        attrgen(
            dataset_id=other,
            model_name=MODEL,
            llm="vllm",
            vllm_base_url=llm_server.base_url,
            batch_size=4,
        )
    )
    with pytest.raises(
        InvalidConfig, match=rf"attrgen_run_id: attrgen run {attrs.run_id} belongs to dataset"
    ):
        run_benchmark(llm_server, small_dataset, attrgen_run_id=attrs.run_id)
    assert count(engine, BenchmarkRun) == 0


def test_a_resumed_run_asks_only_what_is_missing_and_keeps_its_random_choices(
    engine: Engine, llm_server: OpenAIServer, small_dataset: int
) -> None:
    first = run_benchmark(llm_server, small_dataset, scale_mode="random50", dual_fraction=0.3)
    keys = sorted(result_keys(engine, first.run_id))
    orders = {o for _, _, o in keys}
    assert orders == {"in", "rev"}

    with session_scope(engine) as session:  # lose a third of the answers
        session.execute(
            delete(BenchmarkResult).where(
                BenchmarkResult.run_id == first.run_id, BenchmarkResult.id % 3 == 0
            )
        )
    kept = len(result_keys(engine, first.run_id))
    asked_before = len(llm_server.requests)

    again = run_benchmark(
        llm_server,
        small_dataset,
        scale_mode="random50",
        dual_fraction=0.3,
        resume_run_id=first.run_id,
    )

    assert again.run_id == first.run_id
    assert sorted(result_keys(engine, first.run_id)) == keys
    assert len(llm_server.requests) - asked_before == len(keys) - kept


def test_a_run_resumed_by_a_later_task_stays_the_result_of_both_tasks(
    engine: Engine, llm_server: OpenAIServer, small_dataset: int
) -> None:
    first_state = run_benchmark(llm_server, small_dataset, scale_mode="in", return_state=True)
    first, first_task = first_state.result(), str(first_state.state_details.flow_run_id)
    later_state = run_benchmark(
        llm_server, small_dataset, scale_mode="in", resume_run_id=first.run_id, return_state=True
    )
    later_task = str(later_state.state_details.flow_run_id)

    with session_scope(engine) as session:
        for task in (first_task, later_task):
            found = result_of_flow_run(session, task)
            assert found is not None and found.run_id == first.run_id, task
        # A retry of the first task continues the run instead of starting a new one.
        retried = open_benchmark_run(
            session,
            fields=benchmark_fields(engine, first.run_id),
            model_name=MODEL,
            flow_run_id=first_task,
            resume_run_id=None,
        )
        assert retried.id == first.run_id
        # Asking the later task's answers again from scratch keeps the first task's run whole.
        answers = len(result_keys(engine, first.run_id))
        assert forget_results(session, later_task) == 0
    assert len(result_keys(engine, first.run_id)) == answers


def benchmark_fields(engine: Engine, run_id: int) -> dict[str, object]:
    with session_scope(engine) as session:
        run = session.get_one(BenchmarkRun, run_id)
        columns = BenchmarkRun.__table__.columns.keys()
        skip = {"id", "model_id", "run_seed", "planned", "prefect_flow_run_id", "created_at"}
        return {c: getattr(run, c) for c in columns if c not in skip | {"finished_at", "analysis"}}


def test_a_resumed_run_refuses_a_different_scale(
    engine: Engine, llm_server: OpenAIServer, small_dataset: int
) -> None:
    first = run_benchmark(llm_server, small_dataset, scale_mode="in")
    with pytest.raises(InvalidConfig, match=r"scale_mode: run .* was started with scale_mode='in'"):
        run_benchmark(llm_server, small_dataset, scale_mode="rev", resume_run_id=first.run_id)


def test_benchmark_with_attributes_names_the_persona_and_publishes_the_analysis(
    engine: Engine, llm_server: OpenAIServer, small_dataset: int
) -> None:
    import asyncio

    from prefect import get_client

    attrs = asyncio.run(
        attrgen(
            dataset_id=small_dataset,
            model_name=MODEL,
            llm="vllm",
            vllm_base_url=llm_server.base_url,
            batch_size=4,
        )
    )
    result = run_benchmark(
        llm_server, small_dataset, attrgen_run_id=attrs.run_id, dual_fraction=0.5
    )

    with session_scope(engine) as session:
        names = set(
            session.scalars(
                select(PersonaAttribute.value).where(
                    PersonaAttribute.attrgen_run_id == attrs.run_id, PersonaAttribute.key == "name"
                )
            )
        )
    rating_prompts = [
        m["content"]
        for body in llm_server.requests
        for m in body["messages"]
        if "seem?" in m["content"]
    ]
    assert len(names) == 8 and rating_prompts
    # every rating question is asked about a persona by its generated name
    assert all(any(f"does {name} seem?" in p for name in names) for p in rating_prompts)
    assert result.summary["rma"] is not None and 0 <= result.summary["rma"] <= 1

    async def artifact_markdown() -> str:
        async with get_client() as client:
            artifact = await client.read_latest_artifacts()
            return " ".join(
                str(a.data) for a in artifact if a.key == f"benchmark-run-{result.run_id}"
            )

    assert "RMA" in asyncio.run(artifact_markdown())
