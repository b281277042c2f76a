"""What every task flow returns, and how far a running one has got: small, typed, read from the
domain database by flow-run id, so any process sees the same."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.orm import Session

from biasbench.db.models import (
    AttrgenRun,
    BenchmarkResult,
    BenchmarkRun,
    Dataset,
    Failure,
    PersonaAttribute,
)
from biasbench.queue.progress import ProgressCount
from biasbench.runs import personas_with_attributes, worked_on_by

RunType = Literal["dataset", "attrgen", "benchmark"]


class TaskResult(BaseModel):
    """The id of what a task produced, plus the dataset it belongs to (what dependents need)."""

    run_type: RunType = Field(
        description="What `run_id` points at: a dataset, attrgen or benchmark run."
    )
    run_id: int = Field(description="Id of the produced dataset / attrgen run / benchmark run.")
    dataset_id: int = Field(
        description="Dataset the result belongs to (the new one for generators)."
    )
    summary: dict[str, Any] = Field(
        default_factory=dict, description="Short figures for humans, e.g. the quick analysis."
    )


def result_of_flow_run(session: Session, flow_run_id: str) -> TaskResult | None:
    """What a finished task produced, found from its Prefect flow-run id in the domain database.

    This is how another process or host (the queue manager, the REST shim) reads a result
    without access to the Prefect worker's result storage; the flows return the same thing."""
    if (dataset_id := _newest(session, Dataset, flow_run_id)) is not None:
        return dataset_result(session, dataset_id)
    finished = AttrgenRun.finished_at.is_not(None)
    if (attrgen_id := _newest(session, AttrgenRun, flow_run_id, finished)) is not None:
        return attrgen_result(session, attrgen_id)
    finished = BenchmarkRun.finished_at.is_not(None)
    if (bench_id := _newest(session, BenchmarkRun, flow_run_id, finished)) is not None:
        return benchmark_result(session, bench_id)
    return None


def dataset_result(session: Session, dataset_id: int) -> TaskResult:
    """The generator's figures, read back from the row it wrote (also when a re-run found it)."""
    dataset = session.get_one(Dataset, dataset_id)
    summary: dict[str, Any] = {"personas": dataset.size}
    if dataset.population is not None:  # provenance: which population, which tables
        summary["population"] = f"{dataset.population} {dataset.population_version or ''}".strip()
    if dataset.kind == "pool":
        summary["seed"] = dataset.seed
    else:
        summary["source_dataset_id"] = dataset.source_dataset_id
        summary["pool_dataset_id"] = dataset.pool_dataset_id
        summary["max_deviation"] = dataset.report.get("max_deviation")
    return TaskResult(run_type="dataset", run_id=dataset.id, dataset_id=dataset.id, summary=summary)


def attrgen_result(session: Session, run_id: int) -> TaskResult:
    """Counted over every pass of the run, so a resumed run reports the whole dataset."""
    run = session.get_one(AttrgenRun, run_id)
    personas = session.get_one(Dataset, run.dataset_id).size
    complete = len(personas_with_attributes(session, run_id))
    summary = {"personas": personas, "with_attributes": complete, "missing": personas - complete}
    return TaskResult(run_type="attrgen", run_id=run_id, dataset_id=run.dataset_id, summary=summary)


def benchmark_result(session: Session, run_id: int) -> TaskResult:
    """The summary is the quick analysis stored when the run finished."""
    run = session.get_one(BenchmarkRun, run_id)
    return TaskResult(
        run_type="benchmark", run_id=run_id, dataset_id=run.dataset_id, summary=dict(run.analysis)
    )


def progress_of_flow_run(session: Session, flow_run_id: str) -> ProgressCount | None:
    """How far a task's run has got, counted in the rows it stored: what its progress artifact
    shows, as numbers. A failure is not done, since a resumed run asks it again. None before
    the task has opened its run (and for generators, which store all at once)."""
    if (attrgen_id := _newest(session, AttrgenRun, flow_run_id)) is not None:
        run = session.get_one(AttrgenRun, attrgen_id)
        personas = session.get_one(Dataset, run.dataset_id).size
        return ProgressCount(len(personas_with_attributes(session, attrgen_id)), personas)
    if (bench_id := _newest(session, BenchmarkRun, flow_run_id)) is not None:
        answered = session.scalar(
            select(func.count())
            .select_from(BenchmarkResult)
            .where(BenchmarkResult.run_id == bench_id)
        )
        return ProgressCount(answered or 0, session.get_one(BenchmarkRun, bench_id).planned)
    return None


def _newest(
    session: Session,
    row: type[Dataset] | type[AttrgenRun] | type[BenchmarkRun],
    flow_run_id: str,
    *where: ColumnElement[bool],
) -> int | None:
    """One flow run can carry several rows (a retry told to resume another run): the newest.
    A run that another task resumed belongs to both tasks."""
    if issubclass(row, Dataset):
        mine = row.prefect_flow_run_id == flow_run_id
    else:
        mine = worked_on_by(row, flow_run_id)
    return session.scalar(select(row.id).where(mine, *where).order_by(row.id.desc()))


def forget_results(session: Session, flow_run_id: str) -> int:
    """Delete the answers stored by the runs a task created (a retry then asks everything
    again); the runs themselves stay, so ids users have seen keep meaning the same thing. A run
    the task only resumed is another task's result and stays whole. Returns rows deleted."""
    deleted = 0
    attrgen = select(AttrgenRun.id).where(AttrgenRun.prefect_flow_run_id == flow_run_id)
    bench = select(BenchmarkRun.id).where(BenchmarkRun.prefect_flow_run_id == flow_run_id)
    for statement in (
        delete(PersonaAttribute).where(PersonaAttribute.attrgen_run_id.in_(attrgen)),
        delete(BenchmarkResult).where(BenchmarkResult.run_id.in_(bench)),
        delete(Failure).where(Failure.run_type == "attrgen", Failure.run_id.in_(attrgen)),
        delete(Failure).where(Failure.run_type == "benchmark", Failure.run_id.in_(bench)),
    ):
        deleted += session.execute(statement).rowcount or 0  # type: ignore[attr-defined]
    return deleted
