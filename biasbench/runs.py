"""Attrgen and benchmark run rows: open (create or resume), read what is stored, save batches.

A run is resumed, never restarted: re-running the same Prefect flow run, or naming the run in
`resume_run_id`, continues the same row, and unique keys make every save idempotent."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any, Final

from sqlalchemy import ColumnElement, Table, bindparam, delete, func, or_, select
from sqlalchemy.orm import Session

from biasbench.asking import Answered, Unanswered
from biasbench.db.models import (
    ATTRGEN_FAILURE,
    ATTRGEN_FAILURE_KEY,
    BENCHMARK_FAILURE,
    BENCHMARK_FAILURE_KEY,
    AttrgenRun,
    BenchmarkResult,
    BenchmarkRun,
    Dataset,
    Failure,
    Model,
    PersonaAttribute,
    RunResumption,
    Trait,
    utcnow,
)
from biasbench.db.upsert import insert_ignoring_duplicates, upsert
from biasbench.errors import InvalidConfig, NotFound
from biasbench.parsing import RatingAnswer
from biasbench.plan import PlanItem
from biasbench.prompts import ATTRIBUTE_KEYS, TraitView

AttrgenOutcome = Answered[dict[str, str]] | Unanswered
BenchmarkOutcome = Answered[RatingAnswer] | Unanswered


def model_id(session: Session, name: str) -> int:
    insert_ignoring_duplicates(session, Model.__table__, [{"name": name}])  # type: ignore[arg-type]
    found = session.scalar(select(Model.id).where(Model.name == name))
    assert found is not None
    return found


def _run_to_resume(
    session: Session,
    run_class: type[AttrgenRun] | type[BenchmarkRun],
    *,
    resume_run_id: int | None,
    flow_run_id: str | None,
) -> Any:
    if resume_run_id is not None:
        run = session.get(run_class, resume_run_id)
        if run is None:
            raise NotFound("resume_run_id", f"run {resume_run_id} does not exist")
        return run
    if flow_run_id is None:
        return None
    return session.scalar(
        select(run_class).where(worked_on_by(run_class, flow_run_id)).order_by(run_class.id.desc())
    )


def worked_on_by(
    run_class: type[AttrgenRun] | type[BenchmarkRun], flow_run_id: str
) -> ColumnElement[bool]:
    """The runs a flow run created or resumed: a retry of either task continues the same run."""
    resumed = select(RunResumption.run_id).where(
        RunResumption.run_type == _RUN_TYPE[run_class], RunResumption.flow_run_id == flow_run_id
    )
    return or_(run_class.prefect_flow_run_id == flow_run_id, run_class.id.in_(resumed))


_RUN_TYPE: Final[dict[type[Any], str]] = {AttrgenRun: "attrgen", BenchmarkRun: "benchmark"}


def _continue(session: Session, run: AttrgenRun | BenchmarkRun, flow_run_id: str | None) -> None:
    """Keep the creator's link (its task keeps its result) and add this flow run's."""
    if run.prefect_flow_run_id is None:
        run.prefect_flow_run_id = flow_run_id
    elif flow_run_id is not None and flow_run_id != run.prefect_flow_run_id:
        link = {"run_type": _RUN_TYPE[type(run)], "run_id": run.id, "flow_run_id": flow_run_id}
        insert_ignoring_duplicates(session, RunResumption.__table__, [link])  # type: ignore[arg-type]
    run.finished_at = None


def _refuse_changes(run: Any, expected: Mapping[str, Any]) -> None:
    """A resumed run must ask the same questions: plan-defining fields may not change."""
    for field, value in expected.items():
        stored = getattr(run, field)
        if value is not None and stored != value:
            raise InvalidConfig(
                field,
                f"run {run.id} was started with {field}={stored!r}; cannot resume with {value!r}",
            )


def check_resumable(
    session: Session,
    run_class: type[AttrgenRun] | type[BenchmarkRun],
    resume_run_id: int,
    *,
    model_name: str,
    expected: Mapping[str, Any],
) -> None:
    """The run `resume_run_id` names exists and asks the same questions (what `open_*_run`
    refuses when it resumes), checked without writing anything."""
    run: Any = session.get(run_class, resume_run_id)
    if run is None:
        raise NotFound("resume_run_id", f"run {resume_run_id} does not exist")
    stored_model = session.scalar(select(Model.name).where(Model.id == run.model_id))
    if stored_model != model_name:
        raise InvalidConfig(
            "model_name",
            f"run {run.id} was started with model_name={stored_model!r}; "
            f"cannot resume with {model_name!r}",
        )
    _refuse_changes(run, expected)


def open_attrgen_run(
    session: Session,
    *,
    dataset_id: int,
    model_name: str,
    llm: str,
    config: Mapping[str, Any],
    flow_run_id: str | None,
    resume_run_id: int | None,
) -> AttrgenRun:
    mid = model_id(session, model_name)
    run: AttrgenRun | None = _run_to_resume(
        session, AttrgenRun, resume_run_id=resume_run_id, flow_run_id=flow_run_id
    )
    if run is not None:
        _refuse_changes(run, {"dataset_id": dataset_id, "model_id": mid})
        _continue(session, run, flow_run_id)
        return run
    run = AttrgenRun(
        dataset_id=dataset_id,
        pool_dataset_id=pool_of(session, dataset_id),
        model_id=mid,
        llm=llm,
        config=dict(config),
        prefect_flow_run_id=flow_run_id,
    )
    session.add(run)
    session.flush()
    return run


def pool_of(session: Session, dataset_id: int) -> int | None:
    """The pool a dataset's personas were drawn in, recorded on each run for provenance."""
    dataset = session.get(Dataset, dataset_id)
    return dataset.pool_dataset_id if dataset is not None else None


def check_attrgen_run_fits(session: Session, attrgen_run_id: int, dataset_id: int) -> None:
    """Refuse attributes generated for another dataset before any benchmark row exists."""
    attrgen = session.get(AttrgenRun, attrgen_run_id)
    if attrgen is None:
        raise NotFound("attrgen_run_id", f"attrgen run {attrgen_run_id} does not exist")
    if attrgen.dataset_id != dataset_id:
        raise InvalidConfig(
            "attrgen_run_id",
            f"attrgen run {attrgen_run_id} belongs to dataset {attrgen.dataset_id}, "
            f"not to dataset {dataset_id}",
        )


# What a resumed benchmark run may not change: it would ask other questions.
PLAN_DEFINING: Final = (
    "dataset_id",
    "attrgen_run_id",
    "scale_mode",
    "dual_fraction",
    "include_rationale",
)


def open_benchmark_run(
    session: Session,
    *,
    fields: Mapping[str, Any],
    model_name: str,
    flow_run_id: str | None,
    resume_run_id: int | None,
) -> BenchmarkRun:
    """`fields` holds the BenchmarkRun columns from the task's parameters."""
    mid = model_id(session, model_name)
    run: BenchmarkRun | None = _run_to_resume(
        session, BenchmarkRun, resume_run_id=resume_run_id, flow_run_id=flow_run_id
    )
    if run is not None:
        _refuse_changes(run, {"model_id": mid, **{k: fields.get(k) for k in PLAN_DEFINING}})
        for tunable in ("batch_size", "max_new_tokens", "max_attempts", "vllm_base_url", "llm"):
            setattr(run, tunable, fields[tunable])
        _continue(session, run, flow_run_id)
        return run
    run = BenchmarkRun(
        model_id=mid,
        run_seed=0,
        prefect_flow_run_id=flow_run_id,
        pool_dataset_id=pool_of(session, fields["dataset_id"]),
        **fields,
    )
    session.add(run)
    session.flush()
    run.run_seed = run.id
    return run


def active_traits(session: Session) -> list[TraitView]:
    return [
        TraitView(id=t.id, adjective=t.adjective)
        for t in session.scalars(select(Trait).where(Trait.active.is_(True)).order_by(Trait.id))
    ]


# --- attrgen results -------------------------------------------------------------------------


def personas_with_attributes(session: Session, run_id: int) -> set[int]:
    """Personas whose attributes are complete in this run (so they are not asked again)."""
    return set(
        session.scalars(
            select(PersonaAttribute.persona_id)
            .where(PersonaAttribute.attrgen_run_id == run_id)
            .group_by(PersonaAttribute.persona_id)
            .having(func.count() >= len(ATTRIBUTE_KEYS))
        )
    )


def save_attributes(
    session: Session, run_id: int, answers: Iterable[tuple[int, Mapping[str, str], int]]
) -> None:
    """answers: (persona_id, {name, appearance, biography}, attempt)."""
    rows = [
        {
            "attrgen_run_id": run_id,
            "persona_id": pid,
            "key": key,
            "value": attrs[key],
            "attempt": attempt,
        }
        for pid, attrs, attempt in answers
        for key in ATTRIBUTE_KEYS
    ]
    insert_ignoring_duplicates(session, PersonaAttribute.__table__, rows)  # type: ignore[arg-type]


def save_attrgen_batch(
    session: Session, run_id: int, batch: Sequence[tuple[int, AttrgenOutcome]]
) -> None:
    """Answers by persona id as they arrive; the unanswered are recorded, and asked again on
    resume because they have no attributes."""
    answered = [(pid, out.value, out.attempt) for pid, out in batch if isinstance(out, Answered)]
    save_attributes(session, run_id, answered)
    forget_failures(session, "attrgen", run_id, [{"persona_id": pid} for pid, _, _ in answered])
    save_failures(
        session,
        "attrgen",
        run_id,
        [
            {"persona_id": pid, "kind": out.kind, "snippet": out.snippet, "attempt": out.attempt}
            for pid, out in batch
            if isinstance(out, Unanswered)
        ],
    )


# --- benchmark results -----------------------------------------------------------------------

ResultKey = tuple[int, int, str]  # persona_id, trait_id, scale_order


def stored_result_keys(session: Session, run_id: int) -> set[ResultKey]:
    return {
        (p, t, o)
        for p, t, o in session.execute(
            select(
                BenchmarkResult.persona_id, BenchmarkResult.trait_id, BenchmarkResult.scale_order
            ).where(BenchmarkResult.run_id == run_id)
        )
    }


def save_results(session: Session, run_id: int, rows: Sequence[Mapping[str, Any]]) -> None:
    """rows: persona_id, trait_id, scale_order, rating, rationale, raw_answer, attempt."""
    insert_ignoring_duplicates(
        session,
        BenchmarkResult.__table__,  # type: ignore[arg-type]
        [{"run_id": run_id, **row} for row in rows],
    )


def save_benchmark_batch(
    session: Session, run_id: int, batch: Sequence[tuple[PlanItem, BenchmarkOutcome]]
) -> None:
    """Answers by plan item as they arrive; the unanswered are recorded, and asked again on
    resume because they have no result."""
    answered = [(asdict(item), out) for item, out in batch if isinstance(out, Answered)]
    save_results(
        session,
        run_id,
        [
            {
                **key,
                "rating": out.value.rating,
                "rationale": out.value.rationale,
                "raw_answer": out.raw,
                "attempt": out.attempt,
            }
            for key, out in answered
        ],
    )
    forget_failures(session, "benchmark", run_id, [key for key, _ in answered])
    save_failures(
        session,
        "benchmark",
        run_id,
        [
            {**asdict(item), "kind": out.kind, "snippet": out.snippet, "attempt": out.attempt}
            for item, out in batch
            if isinstance(out, Unanswered)
        ],
    )


def rated_rows(session: Session, run_id: int) -> list[tuple[int, int, str, int]]:
    return [
        (p, t, o, r)
        for p, t, o, r in session.execute(
            select(
                BenchmarkResult.persona_id,
                BenchmarkResult.trait_id,
                BenchmarkResult.scale_order,
                BenchmarkResult.rating,
            ).where(BenchmarkResult.run_id == run_id)
        )
    ]


# --- shared ----------------------------------------------------------------------------------


def save_failures(
    session: Session, run_type: str, run_id: int, rows: Sequence[Mapping[str, Any]]
) -> None:
    """rows: persona_id, trait_id?, scale_order?, kind, snippet, attempt. An item that failed
    in an earlier pass keeps one row, now saying why it failed this time."""
    attrgen = run_type == "attrgen"
    upsert(
        session,
        Failure.__table__,  # type: ignore[arg-type]
        [
            {
                "run_type": run_type,
                "run_id": run_id,
                "trait_id": None,
                "scale_order": None,
                **row,
                "created_at": utcnow(),
            }
            for row in rows
        ],
        key=ATTRGEN_FAILURE_KEY if attrgen else BENCHMARK_FAILURE_KEY,
        key_where=ATTRGEN_FAILURE if attrgen else BENCHMARK_FAILURE,
    )


def forget_failures(
    session: Session, run_type: str, run_id: int, items: Sequence[Mapping[str, Any]]
) -> None:
    """The failure rows of items that now have an answer go: they are no longer missing.
    items: persona_id (attrgen), or persona_id, trait_id, scale_order (benchmark)."""
    if not items:
        return
    table: Table = Failure.__table__  # type: ignore[assignment]
    stmt = delete(table).where(table.c.run_type == run_type, table.c.run_id == run_id)
    for column in items[0]:
        stmt = stmt.where(table.c[column] == bindparam(f"item_{column}"))
    session.execute(stmt, [{f"item_{k}": v for k, v in item.items()} for item in items])


def mark_finished(
    session: Session, run_type: str, run_id: int, *, analysis: Mapping[str, Any] | None = None
) -> None:
    if run_type == "attrgen":
        session.get_one(AttrgenRun, run_id).finished_at = utcnow()
        return
    run = session.get_one(BenchmarkRun, run_id)
    run.finished_at = utcnow()
    if analysis is not None:
        run.analysis = dict(analysis)
