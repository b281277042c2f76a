"""The words of the queue's messages (Telegram, e-mail, logs): short enough for a phone.

Messages use Telegram's HTML markup for the headline; everything that comes from users or
exceptions (labels, errors) is escaped. Pure functions, so the wording is tested without
Prefect."""

from __future__ import annotations

import html
import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from biasbench.analysis import QuickAnalysis
from biasbench.errors import Critical
from biasbench.results import TaskResult

ERROR_LIMIT = 300  # characters of an error shown in a message; the rest is one click away
_PREFECT_PREFIX = "Flow run encountered an exception: "
_OUTCOMES = ("done", "failed", "cancelled", "skipped")


@dataclass(frozen=True)
class TaskSeen:
    """A finished task as a message shows it."""

    task_type: str
    label: str
    url: str | None = None


def duration_text(duration: timedelta) -> str:
    """`5m 3s`, `2h 0m`, `42s`."""
    seconds = max(int(duration.total_seconds()), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {seconds}s"
    return f"{seconds}s"


def error_text(message: str | None) -> str:
    """The error as users need it: without Prefect's preamble, cut to a readable length."""
    text = (message or "no error message").strip()
    text = text.removeprefix(_PREFECT_PREFIX)
    if len(text) > ERROR_LIMIT:
        text = text[: ERROR_LIMIT - 1].rstrip() + "…"
    return text


def failure_text(
    task: TaskSeen, *, error: str | None, critical: Critical | None, dependents: int
) -> str:
    lines = []
    if critical is None:
        lines.append(f"❌ <b>Failed</b>: {_task(task)}")
    else:
        lines.append(f"⚠️ <b>CRITICAL: {_e(critical.name)}</b>: {_task(task)}")
        lines.append(f"Hint: {_e(critical.hint)}")
    lines.append(_e(error_text(error)))
    if dependents:
        lines.append(f"{_count(dependents, 'dependent task')} will be skipped.")
    return _with_link(lines, task.url)


def completion_text(
    task: TaskSeen,
    *,
    duration: timedelta | None,
    result: TaskResult | None,
    model_load: Mapping[str, Any] | None = None,
) -> str:
    """model_load: how its GPU's model host got the task's model ready (model, how, seconds,
    at: epoch seconds), when a host did."""
    took = f" in {duration_text(duration)}" if duration is not None else ""
    lines = [f"✅ <b>Done</b>{took}: {_task(task)}"]
    if model_load is not None:
        lines.append(_e(model_load_text(model_load)))
    if result is not None:
        lines.append(f"Result: {result.run_type} {result.run_id} (dataset {result.dataset_id})")
        if result.run_type == "benchmark" and result.summary:
            lines.append(f"Quick analysis: {_e(_analysis(result.summary))}")
    return _with_link(lines, task.url)


def model_load_text(load: Mapping[str, Any]) -> str:
    """ "Model mistral-24b: cold start at 02:13 UTC, took 41 s" (or "reused")."""
    model, how = load.get("model"), load.get("how")
    if how == "reused":
        return f"Model {model}: reused (already loaded)"
    at = datetime.fromtimestamp(float(load.get("at", 0)), UTC).strftime("%H:%M UTC")
    swapped = f" ({load['swapped']})" if load.get("swapped") else ""
    return f"Model {model}: {how} at {at}, took {float(load.get('seconds', 0)):.1f} s{swapped}"


@dataclass(frozen=True)
class Forecast:
    """When the queue is expected to drain (biasbench.queue.eta), as the messages show it."""

    drain: datetime
    drain_p90: datetime
    timezone: tzinfo  # the one users read times in (QUEUE_TIMEZONE)


def clock_text(when: datetime, timezone: tzinfo, *, today: datetime) -> str:
    """`06:40`, or `Tue 06:40` when not on the day of `today` (both in `timezone`)."""
    local = when.astimezone(timezone)
    same_day = local.date() == today.astimezone(timezone).date()
    return local.strftime("%H:%M" if same_day else "%a %H:%M")


def _forecast_text(forecast: Forecast, *, now: datetime) -> str:
    zone = forecast.drain.astimezone(forecast.timezone).tzname() or ""
    drain = clock_text(forecast.drain, forecast.timezone, today=now)
    p90 = clock_text(forecast.drain_p90, forecast.timezone, today=forecast.drain)
    return f"done by about {drain} (P90 {p90} {zone})".replace(" )", ")")


def queue_text(
    what: str,
    *,
    waiting: int = 0,
    tally: Mapping[str, int] | None = None,
    forecast: Forecast | None = None,
    now: datetime | None = None,
) -> str:
    """started, paused, resumed, drained, stopped. `forecast`: for started, when the queue is
    expected to drain; for drained, what was expected when it started (shown next to `now`)."""
    match what:
        case "started":
            if waiting and forecast is not None and now is not None:
                tail = f": {_count(waiting, 'task')}, {_forecast_text(forecast, now=now)}"
            else:
                tail = f": {_count(waiting, 'task')} waiting" if waiting else ""
            return f"▶️ <b>Queue started</b>{tail}."
        case "paused":
            return "⏸ <b>Queue paused</b>: the running task finishes, nothing new starts."
        case "resumed":
            return "▶️ <b>Queue resumed</b>."
        case "drained":
            tally = tally or {}
            counts = ", ".join(f"{tally[s]} {s}" for s in _OUTCOMES if tally.get(s))
            text = f"🏁 <b>All queued tasks processed</b>{': ' + counts if counts else ''}."
            if forecast is not None and now is not None:
                zone = forecast.timezone
                text += (
                    f"\nFinished at {clock_text(now, zone, today=now)}; predicted "
                    f"{clock_text(forecast.drain, zone, today=now)} "
                    f"(P90 {clock_text(forecast.drain_p90, zone, today=now)})."
                )
            return text
        case "stopped":
            return "⏹ <b>Queue stopped</b>: queued tasks stay queued until it starts again."
    raise ValueError(f"unknown queue event {what!r}")


def subject(text: str) -> str:
    """The message's first line without markup: an e-mail subject."""
    first = text.split("\n", 1)[0]
    return html.unescape(re.sub(r"<[^>]+>", "", first))


def _analysis(summary: Mapping[str, Any]) -> str:
    try:
        return QuickAnalysis(**summary).summary_line()
    except TypeError:  # stored by an older version of the analysis
        return ", ".join(f"{k} {v}" for k, v in summary.items())


def _task(task: TaskSeen) -> str:
    return f"{_e(task.task_type)} “{_e(task.label)}”"


def _with_link(lines: list[str], url: str | None) -> str:
    if url:
        lines.append(f'<a href="{html.escape(url)}">Open in Prefect</a>')
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _e(text: str) -> str:
    return html.escape(text, quote=False)


# The queue itself, as the resource of its events (started, paused, drained, ...).
QUEUE_RESOURCE = {"prefect.resource.id": "biasbench.queue", "prefect.resource.name": "LLM queue"}
# The stack (deployments/stack.py), as the resource of its events: its supervisor
# (deployments/supervisor.py) restarts dead processes.
STACK_RESOURCE = {"prefect.resource.id": "biasbench.stack", "prefect.resource.name": "queue stack"}
STACK_RESTARTED = "biasbench.stack.restarted"  # a process of the stack died and runs again
STACK_GAVE_UP = "biasbench.stack.gave-up"  # a process kept dying: the stack stopped everything
# The events automations turn into messages (the manager also emits resumed and stopped).
MESSAGE_EVENTS = (
    "biasbench.task.failed",
    "biasbench.task.completed",
    "biasbench.queue.started",
    "biasbench.queue.paused",
    "biasbench.queue.drained",
    STACK_RESTARTED,
    STACK_GAVE_UP,
)


def exit_text(status: int | str) -> str:
    """`exit 1`, `exit -9, SIGKILL`, or what the start itself said went wrong."""
    if isinstance(status, str):
        return status
    if status < 0:
        try:
            return f"exit {status}, {signal.Signals(-status).name}"
        except ValueError:
            pass
    return f"exit {status}"


def restart_text(process: str, *, deaths: int, last_exit: int | str) -> str:
    """A process of the stack died (`deaths` times since the last message) and runs again."""
    times = "" if deaths == 1 else f" {deaths} times"
    return (
        f"⚠️ <b>CRITICAL</b>: the {_e(process)} died{times} ({_e(exit_text(last_exit))}) "
        "and was restarted."
    )


def gave_up_text(process: str, *, restarts: int, minutes: int, last_exit: int | str) -> str:
    return (
        f"⛔ <b>CRITICAL: the queue stopped</b>: the {_e(process)} died again after "
        f"{_count(restarts, 'restart')} within {minutes} minutes ({_e(exit_text(last_exit))}).\n"
        "Hint: its log is in the stack's log directory; start the queue again (make serve) once "
        "the cause is fixed."
    )
