"""Which failures are critical comes from the exception's type (and the final state), never from
words in its message."""

from __future__ import annotations

import pytest
from sqlalchemy import exc as sql

from biasbench.errors import (
    CRASHED,
    DATABASE_DOWN,
    LLM_UNREACHABLE,
    OUT_OF_MEMORY,
    STALLED,
    InvalidConfig,
    LLMOutOfMemory,
    LLMResponseError,
    LLMUnreachable,
    critical_kind,
    critical_of_state,
)


def _raised_from(cause: BaseException) -> BaseException:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise RuntimeError("while saving results") from inner
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (LLMUnreachable("connection refused"), LLM_UNREACHABLE),
        (MemoryError(), OUT_OF_MEMORY),
        (LLMOutOfMemory("CUDA out of memory", 500), OUT_OF_MEMORY),
        (sql.TimeoutError("QueuePool limit of size 5 overflow 10 reached"), DATABASE_DOWN),
        (sql.OperationalError("SELECT 1", {}, Exception("server closed")), DATABASE_DOWN),
        (_raised_from(LLMUnreachable("timeout")), LLM_UNREACHABLE),
    ],
)
def test_critical_kinds_follow_the_exception_type_and_its_causes(
    error: BaseException, kind: object
) -> None:
    assert critical_kind(error) == kind


@pytest.mark.parametrize(
    "error",
    [
        # The words of a critical failure in an ordinary error do not make it critical.
        ValueError("connection refused: CUDA out of memory"),
        InvalidConfig("model_name", "out of memory? no: unknown model"),
        LLMResponseError("500 from the LLM server", status_code=500),
        sql.IntegrityError("INSERT", {}, Exception("duplicate key")),
    ],
)
def test_ordinary_failures_are_not_critical(error: BaseException) -> None:
    assert critical_kind(error) is None


def test_final_states_name_their_critical_kind() -> None:
    assert critical_of_state("CRASHED", "Crashed") == CRASHED
    assert critical_of_state("FAILED", "Stalled") == STALLED
    assert critical_of_state("FAILED", "LLM unreachable") == LLM_UNREACHABLE
    assert critical_of_state("FAILED", "Failed") is None
    assert critical_of_state("CANCELLED", "Skipped") is None
