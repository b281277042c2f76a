"""The exceptions of the domain, and which of them are critical.

    BiasBenchError             `field`: the input field it is about, if any
    ├── InvalidConfig          a task's input is wrong                        (the API: 400)
    ├── NotFound               a task, dataset or run that is named does not exist      (404)
    ├── QueueError             a queue operation cannot be done                         (400)
    │   ├── InvalidSubmission  a task's type, config or upstream is wrong               (400)
    │   ├── NotAllowedNow      the task's status does not allow it (retry a running task) (409)
    │   └── QueueBusy          Prefect could not make the change now; try again         (503)
    ├── LLMError
    │   ├── LLMUnreachable     connection refused, timeouts, DNS: retries exhausted   [critical]
    │   ├── LLMModelNotServed  the server is up but does not serve the requested model
    │   ├── ModelServerFailed  the model host could not start or keep its server   [critical]
    │   ├── ModelDoesNotFit    the GPU has less free memory than the model needs    [critical]
    │   ├── LLMErrorShareExceeded  too many items of a run failed on the server (not one item)
    │   └── LLMResponseError   the server answered, but not usefully (4xx, 5xx after retries)
    │       └── LLMOutOfMemory the server's GPU ran out of memory                  [critical]
    └── ParseError             an answer could not be read; recorded as a failure, never fatal

Critical failures mean "the machine or its services are broken, a human should look now".
`critical_kind()` names the kind of a critical failure from the exception's type (ours, or
MemoryError, a database connection error, a CUDA error), never by matching words in a message. A
task flow ends such a run in a Failed state named after the kind ("LLM unreachable"), so the
queue, the UI and the notifications see it without the exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from sqlalchemy import exc as sql


@dataclass(frozen=True)
class Critical:
    """A kind of critical failure: its name (the Failed state's name) and what to check first."""

    name: str
    hint: str


LLM_UNREACHABLE = Critical(
    "LLM unreachable", "is the vLLM server running and reachable at the configured base URL?"
)
OUT_OF_MEMORY = Critical(
    "Out of memory", "the machine or the GPU ran out of memory: lower batch_size or max_new_tokens"
)
GPU_ERROR = Critical("GPU error", "check the GPU (nvidia-smi); the vLLM server may need a restart")
DATABASE_DOWN = Critical(
    "Database unavailable",
    "is the database server up, and is its connection pool large enough (DB_URL)?",
)
CRASHED = Critical(
    "Crashed", "its process was killed or its host went away: see the worker's log (out of memory?)"
)
MODEL_SERVER_FAILED = Critical(
    "Model server failed to start",
    "read the server's output in the message; check the model's serve command (MODEL_CATALOGUE)",
)
STALLED = Critical("Stalled", "no progress for a long time: is the LLM server responding?")

# Failed-state names that mark a critical failure (plus Prefect's own CRASHED state type).
CRITICAL_STATE_NAMES = {
    k.name: k
    for k in (
        LLM_UNREACHABLE,
        OUT_OF_MEMORY,
        GPU_ERROR,
        DATABASE_DOWN,
        STALLED,
        CRASHED,
        MODEL_SERVER_FAILED,
    )
}


class BiasBenchError(Exception):
    """Base of every error the domain raises on purpose. `str(error)` is "<field>: <message>"
    when it is about one input field, which `field` names. `critical` is set on the types that
    mean "the infrastructure is broken, a human should look now"."""

    critical: ClassVar[Critical | None] = None

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field, self.message = field, message


class InvalidConfig(BiasBenchError):
    """A task's input is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, field=field)


class NotFound(BiasBenchError):
    """A task, dataset, run or model that the input (or the request's path) names does not
    exist."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message, field=field)


class QueueError(BiasBenchError):
    """A queue operation cannot be done (e.g. the deployments are missing)."""


class InvalidSubmission(QueueError):
    """A submission is refused before anything is created."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, field=field)


class NotAllowedNow(QueueError):
    """What the task's status (or its dependents) does not allow now: cancel a finished task,
    retry a running one, remove one that others wait for."""


class QueueBusy(QueueError):
    """Prefect could not carry the change out now (its database was busy); nothing was made.
    Worth trying again in a few seconds."""


class LLMError(BiasBenchError):
    """Talking to the LLM server went wrong."""


class LLMUnreachable(LLMError):
    """The LLM server cannot be reached at all (after retries)."""

    critical = LLM_UNREACHABLE


class LLMModelNotServed(LLMError):
    """The LLM server is up, but the requested model is not among those it serves."""


class ModelServerFailed(LLMError):
    """The GPU's model host could not start the model's server (it exited four times, or was
    not ready within its start timeout), or lost it for good mid-task. The message ends with
    the server's last output lines."""

    critical = MODEL_SERVER_FAILED


class ModelDoesNotFit(LLMError):
    """The model needs more GPU memory than is free: refused before a start, instead of an
    out-of-memory crash minutes later. The message names both numbers."""

    critical = OUT_OF_MEMORY


class LLMErrorShareExceeded(LLMError):
    """More items of a task failed on the LLM server than LLM_MAX_ERROR_SHARE allows: the
    server is broken, not flaky (see `biasbench.error_budget`)."""


class LLMResponseError(LLMError):
    """The LLM server answered with an error that retrying did not cure."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class LLMOutOfMemory(LLMResponseError):
    """The server says its GPU ran out of memory (vLLM's CUDA OutOfMemoryError): every further
    request would fail the same way, so the run stops rather than recording each item."""

    critical = OUT_OF_MEMORY


class ParseError(BiasBenchError):
    """An LLM answer could not be parsed into the expected shape."""


def _kind_of_type(exc: BaseException) -> Critical | None:
    if isinstance(exc, BiasBenchError) and exc.critical is not None:
        return exc.critical
    if isinstance(exc, MemoryError):
        return OUT_OF_MEMORY
    # Connection errors and an exhausted pool; not IntegrityError and the like (a bug or bad data).
    if isinstance(exc, sql.OperationalError | sql.InterfaceError | sql.TimeoutError):
        return DATABASE_DOWN
    kind = type(exc)
    if kind.__module__.startswith("torch") and kind.__name__ == "OutOfMemoryError":
        return OUT_OF_MEMORY  # torch.cuda.OutOfMemoryError, should a flow ever load a model
    if kind.__module__.startswith("torch.cuda") or kind.__name__ == "CudaError":
        return GPU_ERROR
    return None


def critical_kind(exc: BaseException) -> Critical | None:
    """The kind of critical failure `exc` (or an exception it was raised from) is, or None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if (kind := _kind_of_type(current)) is not None:
            return kind
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def is_critical(exc: BaseException) -> bool:
    """True when `exc` (or an exception it was raised from) is a critical failure."""
    return critical_kind(exc) is not None


def critical_of_state(state_type: str, state_name: str | None) -> Critical | None:
    """The kind of critical failure a final Prefect state records, or None."""
    if state_type == "CRASHED":
        return CRASHED
    if state_type == "FAILED" and state_name is not None:
        return CRITICAL_STATE_NAMES.get(state_name)
    return None
