"""The messages users read on their phone: what each says, escaped for Telegram's HTML."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from biasbench.errors import LLM_UNREACHABLE
from biasbench.queue.messages import (
    ERROR_LIMIT,
    Forecast,
    TaskSeen,
    completion_text,
    duration_text,
    failure_text,
    queue_text,
    subject,
)
from biasbench.results import TaskResult
from tests.support.telegram_server import markup_error

TASK = TaskSeen("benchmark", "Benchmark: <llama> & co - DS#4", "http://127.0.0.1:4200/runs/x")


@pytest.mark.parametrize(
    ("seconds", "text"), [(42, "42s"), (303, "5m 3s"), (7260, "2h 1m"), (0, "0s")]
)
def test_durations_read_like_the_original(seconds: int, text: str) -> None:
    assert duration_text(timedelta(seconds=seconds)) == text


def test_a_failure_names_task_error_dependents_and_link_with_user_text_escaped() -> None:
    text = failure_text(
        TASK,
        error="Flow run encountered an exception: ValueError: bad <input> & more",
        critical=None,
        dependents=2,
    )
    assert text.startswith("❌ <b>Failed</b>: benchmark “Benchmark: &lt;llama&gt; &amp; co")
    assert "ValueError: bad &lt;input&gt; &amp; more" in text  # Prefect's preamble dropped
    assert "2 dependent tasks will be skipped." in text
    assert '<a href="http://127.0.0.1:4200/runs/x">' in text
    assert markup_error(text) is None  # Telegram would accept it


def test_a_critical_failure_is_marked_with_its_hint_and_a_long_error_is_cut() -> None:
    text = failure_text(TASK, error="x" * 5000, critical=LLM_UNREACHABLE, dependents=0)
    assert text.startswith("⚠️ <b>CRITICAL: LLM unreachable</b>")
    assert f"Hint: {LLM_UNREACHABLE.hint}" in text
    assert "x" * (ERROR_LIMIT - 1) + "…" in text and "x" * ERROR_LIMIT not in text
    assert "will be skipped" not in text
    assert markup_error(text) is None


def test_a_completion_gives_duration_result_and_the_benchmark_quick_analysis() -> None:
    summary = {
        "planned": 60,
        "results": 59,
        "failures": 1,
        "error_share": 1 / 60,
        "dual_pairs": 0,
        "rma": None,
        "mae": None,
        "share_extreme": 0.25,
        "share_middle": 0.5,
    }
    result = TaskResult(run_type="benchmark", run_id=12, dataset_id=4, summary=summary)
    text = completion_text(TASK, duration=timedelta(seconds=303), result=result)
    assert text.startswith("✅ <b>Done</b> in 5m 3s: benchmark")
    assert "Result: benchmark 12 (dataset 4)" in text
    assert "Quick analysis: 59/60 results, 1 failed (1.7% errors)" in text
    assert "extreme 25.0%, middle 50.0%" in text
    assert markup_error(text) is None


def test_completion_says_how_and_when_the_model_was_loaded() -> None:
    at = datetime(2026, 11, 30, 2, 13, tzinfo=UTC).timestamp()
    load = {"model": "mistral-24b", "how": "cold start", "seconds": 41.2, "at": at}
    swap = {**load, "swapped": "qwen-32b stopped"}
    text = completion_text(TASK, duration=timedelta(seconds=90), result=None, model_load=swap)
    assert "Model mistral-24b: cold start at 02:13 UTC, took 41.2 s (qwen-32b stopped)" in text
    reused = completion_text(TASK, duration=None, result=None, model_load={**load, "how": "reused"})
    assert "Model mistral-24b: reused (already loaded)" in reused
    assert markup_error(text) is None


def test_queue_messages() -> None:
    assert queue_text("started", waiting=3) == "▶️ <b>Queue started</b>: 3 tasks waiting."
    assert "nothing new starts" in queue_text("paused")
    drained = queue_text("drained", tally={"done": 10, "failed": 1, "skipped": 2, "cancelled": 0})
    assert drained == "🏁 <b>All queued tasks processed</b>: 10 done, 1 failed, 2 skipped."


def test_the_subject_is_the_first_line_without_markup() -> None:
    text = failure_text(TASK, error="boom", critical=None, dependents=0)
    assert subject(text) == "❌ Failed: benchmark “Benchmark: <llama> & co - DS#4”"


def test_the_started_and_drained_messages_carry_the_expected_and_actual_times() -> None:
    now = datetime(2026, 11, 30, 22, 5, tzinfo=UTC)
    forecast = Forecast(
        datetime(2026, 12, 1, 5, 40, tzinfo=UTC),
        datetime(2026, 12, 1, 6, 30, tzinfo=UTC),
        ZoneInfo("Europe/Berlin"),
    )
    started = queue_text("started", waiting=12, forecast=forecast, now=now)
    # The drain is tomorrow in Berlin: its weekday is named; its P90 is the same morning.
    assert started == "▶️ <b>Queue started</b>: 12 tasks, done by about Tue 06:40 (P90 07:30 CET)."
    finished = datetime(2026, 12, 1, 5, 52, tzinfo=UTC)
    drained = queue_text("drained", tally={"done": 12}, forecast=forecast, now=finished)
    assert drained == (
        "🏁 <b>All queued tasks processed</b>: 12 done.\n"
        "Finished at 06:52; predicted 06:40 (P90 07:30)."
    )
