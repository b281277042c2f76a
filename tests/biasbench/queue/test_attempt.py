"""A task's current attempt from its state history: what the /queue page shows as its times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from biasbench.queue.attempt import USER_CANCEL, StateRecord, current_attempt

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def history(*steps: tuple[str, str | None, str | None]) -> list[StateRecord]:
    """(type, name, message) one minute apart, from T0."""
    return [
        StateRecord(type_, name, message, T0 + timedelta(minutes=i))
        for i, (type_, name, message) in enumerate(steps)
    ]


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


HELD = ("PAUSED", "Queued", None)
RELEASED = [("PAUSED", "Releasing", None), ("SCHEDULED", "Released", None), ("PENDING", None, None)]
RUNNING = ("RUNNING", "Running", None)


def test_a_retried_task_shows_only_its_last_attempt() -> None:
    states = history(HELD, *RELEASED, RUNNING, ("FAILED", "Failed", "boom"), HELD, *RELEASED)
    requeued = current_attempt(states)
    assert (requeued.started_at, requeued.finished_at) == (None, None)  # queued again

    later = [*states, StateRecord("RUNNING", "Running", None, at(20))]
    later.append(StateRecord("COMPLETED", "Completed", None, at(21)))
    done = current_attempt(later)
    assert (done.started_at, done.finished_at, done.cancel_reason) == (at(20), at(21), None)


def test_a_task_cancelled_while_held_never_started_and_a_user_cancelled_it() -> None:
    attempt = current_attempt(history(HELD, ("CANCELLED", "Cancelled", None)))
    assert (attempt.started_at, attempt.finished_at) == (None, at(1))
    assert attempt.cancel_reason == USER_CANCEL


def test_a_cancelled_running_task_gives_the_requests_reason_not_the_workers_message() -> None:
    attempt = current_attempt(
        history(
            HELD,
            *RELEASED,
            RUNNING,
            ("CANCELLING", "Cancelling", USER_CANCEL),
            ("CANCELLED", "Cancelled", "Flow run was cancelled successfully."),
        )
    )
    assert (attempt.started_at, attempt.finished_at) == (at(4), at(6))
    assert attempt.cancel_reason == USER_CANCEL


def test_a_cascade_names_its_upstream_and_a_skip_is_no_cancel() -> None:
    cascade = current_attempt(history(HELD, ("CANCELLED", "Cancelled", "upstream #3 cancelled")))
    assert cascade.cancel_reason == "upstream #3 cancelled"
    skipped = current_attempt(history(HELD, ("CANCELLED", "Skipped", "upstream #3 failed")))
    assert skipped.cancel_reason is None


def test_a_run_still_running_has_no_end_and_order_of_reading_does_not_matter() -> None:
    states = history(HELD, *RELEASED, RUNNING)
    attempt = current_attempt(list(reversed(states)))
    assert (attempt.started_at, attempt.finished_at) == (at(4), None)
