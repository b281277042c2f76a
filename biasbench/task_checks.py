"""What each task type refuses, in one place. A submission runs `check_task` before it creates
anything, and the task's flow runs it again when it starts (the database may have changed in
between), so a task the queue accepted fails at run time only for what happened since.

`filled_by_upstream` names the parameters an upstream task's result will fill in
(`biasbench.queue.wiring.RESULT_WIRING`): they need not be given, and are not looked up, yet.
The references (datasets, runs) are looked up when a database session is given."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from biasbench import runs
from biasbench.datasets import BALANCING_AXES, require_dataset
from biasbench.db.models import AttrgenRun, BenchmarkRun, Dataset
from biasbench.errors import InvalidConfig
from biasbench.models_catalogue import Catalogue
from biasbench.population.pool import check_pool_request
from biasbench.population.profiles import DEFAULT_POPULATION

MAX_ID: Final = 2**63 - 1  # ids are 64-bit integers: a larger one cannot name anything
SEEDS: Final = range(-(2**31), 2**31)  # seeds are stored in a 32-bit column
MAX_URL_LENGTH: Final = 300  # the runs table's vllm_base_url column
MAX_MODEL_NAME_LENGTH: Final = 200  # the models table's name column


@dataclass(frozen=True)
class _Given:
    """A task's parameters (defaults included), and which of them an upstream fills in."""

    values: Mapping[str, Any]
    filled_by_upstream: Set[str]
    catalogue: Catalogue | None = None

    def get(self, name: str) -> Any:
        return self.values.get(name)

    def id(self, name: str) -> int | None:
        """The id the parameter names, or None when it is empty or an upstream fills it in."""
        value = self.values.get(name)
        if value is None or name in self.filled_by_upstream:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
            raise InvalidConfig(name, f"must be an id from 1 to 2**63-1, got {value!r}")
        return value

    def integer(self, name: str, allowed: range) -> int | None:
        value = self.values.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value not in allowed:
            raise InvalidConfig(
                name, f"must be an integer from {allowed.start} to {allowed.stop - 1}"
            )
        return value


def check_task(
    task_type: str,
    parameters: Mapping[str, Any],
    *,
    session: Session | None,
    filled_by_upstream: Set[str] = frozenset(),
    catalogue: Catalogue | None = None,
) -> None:
    """Raise InvalidConfig or NotFound, naming the parameter, for what the task would refuse.
    With a model catalogue (MODEL_CATALOGUE), a task that leaves the server to its GPU's model
    host must name a model the catalogue knows."""
    _CHECKS[task_type](_Given(parameters, filled_by_upstream, catalogue), session)


def _pool_gen(given: _Given, _: Session | None) -> None:
    check_pool_request(
        given.values.get("population", DEFAULT_POPULATION),
        given.get("n"),
        given.get("temperature"),
        given.get("age_from"),
        given.get("age_to"),
        given.integer("seed", SEEDS),
        given.get("temperatures"),
        given.get("exclude"),
    )


def _balanced_gen(given: _Given, session: Session | None) -> None:
    given.integer("seed", SEEDS)
    axes = given.get("axes")
    if axes is not None:
        if not isinstance(axes, list) or not axes:
            raise InvalidConfig("axes", "name at least one axis, e.g. ['gender', 'age_bin']")
        for axis in axes:
            if axis not in BALANCING_AXES:
                raise InvalidConfig(
                    "axes", f"unknown axis {axis!r}; one of {', '.join(BALANCING_AXES)}"
                )
        if len(set(axes)) != len(axes):
            raise InvalidConfig("axes", "an axis is named twice")
    pool = _dataset(given, session, "the pool dataset to draw from")
    n = given.get("n")
    if pool is not None and isinstance(n, int) and n > pool.size:
        raise InvalidConfig("n", f"the pool has only {pool.size} personas, cannot draw {n}")


def _attrgen(given: _Given, session: Session | None) -> None:
    _llm_fields(given)
    dataset = _dataset(given, session, "the dataset whose personas get attributes")
    resume = given.id("resume_run_id")
    if session is not None and resume is not None:
        expected = {"dataset_id": dataset.id if dataset else None}
        runs.check_resumable(
            session, AttrgenRun, resume, model_name=given.get("model_name"), expected=expected
        )


def _benchmark(given: _Given, session: Session | None) -> None:
    _llm_fields(given)
    dataset = _dataset(given, session, "the dataset to rate")
    attrgen_run_id = given.id("attrgen_run_id")
    resume = given.id("resume_run_id")
    if session is None:
        return
    if dataset is not None:
        if attrgen_run_id is not None:
            runs.check_attrgen_run_fits(session, attrgen_run_id, dataset.id)
        # Only with a dataset at hand: the pool_gen that makes one seeds the starter traits.
        if not runs.active_traits(session):
            raise InvalidConfig("traits", "no active traits: activate at least one trait to rate")
    if resume is not None:
        expected = {name: given.get(name) for name in runs.PLAN_DEFINING}
        expected |= {"dataset_id": dataset.id if dataset else None}
        if "attrgen_run_id" in given.filled_by_upstream:
            expected["attrgen_run_id"] = None  # not known yet: checked when the flow starts
        runs.check_resumable(
            session, BenchmarkRun, resume, model_name=given.get("model_name"), expected=expected
        )


def _dataset(given: _Given, session: Session | None, what: str) -> Dataset | None:
    """The dataset the task works on, if it is known now and a session can read it."""
    if "dataset_id" in given.filled_by_upstream:
        return None
    dataset_id = given.id("dataset_id")
    if dataset_id is None:
        raise InvalidConfig(
            "dataset_id", f"required: {what} (or an upstream task that produces one)"
        )
    return require_dataset(session, dataset_id) if session is not None else None


def _llm_fields(given: _Given) -> None:
    model_name = given.get("model_name")
    if isinstance(model_name, str) and len(model_name) > MAX_MODEL_NAME_LENGTH:
        raise InvalidConfig("model_name", f"at most {MAX_MODEL_NAME_LENGTH} characters")
    if (url := given.get("vllm_base_url")) is not None:
        check_base_url(url)
    elif given.catalogue is not None and given.get("llm") in (None, "vllm"):
        # A task naming its own server runs against it; the rest are the model host's.
        given.catalogue.get(str(model_name))


def check_base_url(url: object, field: str = "vllm_base_url") -> None:
    """An http(s) URL with a host, as an OpenAI-compatible client can call it."""
    example = "e.g. http://127.0.0.1:8000/v1"
    if not isinstance(url, str) or len(url) > MAX_URL_LENGTH:
        raise InvalidConfig(field, f"must be a URL of at most {MAX_URL_LENGTH} characters")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise InvalidConfig(field, f"must be a URL without spaces, {example}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise InvalidConfig(field, f"not a URL, {example}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidConfig(field, f"must be an http or https URL with a host, {example}")


_CHECKS: dict[str, Callable[[_Given, Session | None], None]] = {
    "pool_gen": _pool_gen,
    "balanced_gen": _balanced_gen,
    "attrgen": _attrgen,
    "benchmark": _benchmark,
}
