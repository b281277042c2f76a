"""The exceptions of the domain, and which of them are critical.

    BiasBenchError
    ├── InvalidConfig          bad task input; names the field (a ValueError)
    ├── NotFound               a referenced dataset/run does not exist (a ValueError)
    ├── QueueError             a queue operation cannot be done
    │   ├── InvalidSubmission  a task's type, config, upstream or priority is wrong; names the field
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


class InvalidConfig(BiasBenchError, ValueError):
    """A task's input is wrong. `field` names the offending parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFound(BiasBenchError, ValueError):
    """A dataset, run or model that the input refers to does not exist."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class QueueError(BiasBenchError):
    """A queue operation cannot be done (e.g. the deployments are missing)."""


class InvalidSubmission(QueueError, ValueError):
    """A submission is refused before anything is created. `field` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


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
