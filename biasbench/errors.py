"""The exceptions of the domain, and which of them are critical.

    BiasBenchError
    ├── FieldError             about one input field, which it names (a ValueError)
    │   ├── InvalidConfig      bad task input
    │   ├── NotFound           a referenced dataset/run does not exist
    │   └── InvalidSubmission  (also a QueueError) a task's type, config or upstream is wrong
    ├── QueueError             a queue operation cannot be done
    │   ├── InvalidSubmission  see above
    │   └── UnknownTask        no such task
    ├── LLMError
    │   ├── LLMUnreachable     connection refused, timeouts, DNS: retries exhausted   [critical]
    │   ├── LLMModelNotServed  the server is up but does not serve the requested model
    │   └── LLMResponseError   the server answered, but not usefully (4xx, 5xx after retries)
    └── ParseError             an answer could not be read; recorded as a failure, never fatal

`CriticalFailure` is a marker mixed into the types that mean "the machine or its services are
broken, a human should look now". Notifications decide critical vs normal with `is_critical()`,
i.e. from the type, never by matching words in a message.
"""

from __future__ import annotations


class CriticalFailure(Exception):
    """Marker: the infrastructure (LLM server, GPU, database) is broken, not the task input."""

    hint: str = "check the machine and its services"


class BiasBenchError(Exception):
    """Base of every error the domain raises on purpose."""


class FieldError(BiasBenchError, ValueError):
    """An error about one input field, which it names: `str(error)` is "<field>: <message>"."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class InvalidConfig(FieldError):
    """A task's input is wrong."""


class NotFound(FieldError):
    """A dataset, run or model that the input refers to does not exist."""


class QueueError(BiasBenchError):
    """A queue operation cannot be done (e.g. the deployments are missing)."""


class InvalidSubmission(QueueError, FieldError):
    """A submission is refused before anything is created."""


class UnknownTask(QueueError, LookupError):
    """A task id that the queue does not know."""


class LLMError(BiasBenchError):
    """Talking to the LLM server went wrong."""


class LLMUnreachable(LLMError, CriticalFailure):
    """The LLM server cannot be reached at all (after retries)."""

    hint = "is the vLLM server running and reachable at the configured base URL?"


class LLMModelNotServed(LLMError):
    """The LLM server is up, but the requested model is not among those it serves."""


class LLMResponseError(LLMError):
    """The LLM server answered with an error that retrying did not cure."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class ParseError(BiasBenchError):
    """An LLM answer could not be parsed into the expected shape."""


def is_critical(exc: BaseException) -> bool:
    """True when `exc` (or an exception it was raised from) is a critical failure."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, CriticalFailure):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
