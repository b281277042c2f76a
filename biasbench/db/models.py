"""The domain's tables. Run rows hold what a run *is* and what it produced; its lifecycle
(queued, running, failed, ...) lives in Prefect only, linked through `prefect_flow_run_id`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Final

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Named constraints keep Alembic migrations identical on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar = {dict[str, Any]: JSON}


class Country(Base):
    __tablename__ = "countries"

    code: Mapped[str] = mapped_column(String(3), primary_key=True)  # ISO 3166 alpha-3
    name: Mapped[str] = mapped_column(String(80))
    region: Mapped[str] = mapped_column(String(40))
    subregion: Mapped[str] = mapped_column(String(60))


class Persona(Base):
    __tablename__ = "personas"

    id: Mapped[int] = mapped_column(primary_key=True)
    age: Mapped[int] = mapped_column(Integer)
    gender: Mapped[str] = mapped_column(String(16))
    education: Mapped[str] = mapped_column(String(40))
    occupation: Mapped[str] = mapped_column(String(60))
    marriage_status: Mapped[str] = mapped_column(String(16))
    migration_status: Mapped[str] = mapped_column(String(32))
    origin: Mapped[str] = mapped_column(ForeignKey("countries.code"))
    religion: Mapped[str] = mapped_column(String(32))
    sexuality: Mapped[str] = mapped_column(String(24))


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (CheckConstraint("kind IN ('pool', 'balanced')", name="kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(120))
    seed: Mapped[int | None] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # What the generator reported, e.g. the achieved marginals of a balanced draw.
    report: Mapped[dict[str, Any]] = mapped_column(default=dict)
    source_dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"))
    # Provenance: the population profile the personas were drawn from (name, version and the
    # sha256 of each of its files) and the pool they were drawn in (a pool's is its own id).
    population: Mapped[str | None] = mapped_column(String(32))
    population_version: Mapped[str | None] = mapped_column(String(32))
    population_files: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    pool_dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"))
    size: Mapped[int] = mapped_column(Integer, default=0)
    prefect_flow_run_id: Mapped[str | None] = mapped_column(String(36), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DatasetMember(Base):
    __tablename__ = "dataset_members"

    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True
    )
    persona_id: Mapped[int] = mapped_column(ForeignKey("personas.id"), primary_key=True)


class Trait(Base):
    """A rated adjective (the original's table "case")."""

    __tablename__ = "traits"
    __table_args__ = (CheckConstraint("valence IN (-1, 0, 1)", name="valence"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    adjective: Mapped[str] = mapped_column(String(60), unique=True)
    category: Mapped[str] = mapped_column(String(40))
    valence: Mapped[int] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Model(Base):
    """An LLM as named on the server (vLLM's served model name)."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)


class AttrgenRun(Base):
    __tablename__ = "attrgen_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    pool_dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"))  # provenance
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    llm: Mapped[str] = mapped_column(String(16))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)  # never holds secrets
    prefect_flow_run_id: Mapped[str | None] = mapped_column(String(36), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PersonaAttribute(Base):
    __tablename__ = "persona_attributes"
    __table_args__ = (UniqueConstraint("attrgen_run_id", "persona_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    attrgen_run_id: Mapped[int] = mapped_column(ForeignKey("attrgen_runs.id", ondelete="CASCADE"))
    persona_id: Mapped[int] = mapped_column(ForeignKey("personas.id"))
    key: Mapped[str] = mapped_column(String(32))  # name | appearance | biography
    value: Mapped[str] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer, default=1)


class BenchmarkRun(Base):
    __tablename__ = "benchmark_runs"
    __table_args__ = (
        CheckConstraint("scale_mode IN ('in', 'rev', 'random50')", name="scale_mode"),
        CheckConstraint("dual_fraction >= 0 AND dual_fraction <= 1", name="dual_fraction"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    pool_dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"))  # provenance
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    attrgen_run_id: Mapped[int | None] = mapped_column(ForeignKey("attrgen_runs.id"))
    llm: Mapped[str] = mapped_column(String(16))
    vllm_base_url: Mapped[str | None] = mapped_column(String(300))
    include_rationale: Mapped[bool] = mapped_column(Boolean)
    batch_size: Mapped[int] = mapped_column(Integer)
    max_new_tokens: Mapped[int] = mapped_column(Integer)
    max_attempts: Mapped[int] = mapped_column(Integer)
    system_prompt: Mapped[str | None] = mapped_column(Text)
    scale_mode: Mapped[str] = mapped_column(String(10))
    dual_fraction: Mapped[float] = mapped_column(Float)
    # Seeds the random50 and dual choices, so every re-run of this run asks the same questions.
    run_seed: Mapped[int] = mapped_column(Integer)
    planned: Mapped[int] = mapped_column(Integer, default=0)
    prefect_flow_run_id: Mapped[str | None] = mapped_column(String(36), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    analysis: Mapped[dict[str, Any]] = mapped_column(default=dict)


class BenchmarkResult(Base):
    __tablename__ = "benchmark_results"
    __table_args__ = (
        UniqueConstraint("run_id", "persona_id", "trait_id", "scale_order"),
        CheckConstraint("rating BETWEEN 1 AND 5", name="rating"),
        CheckConstraint("scale_order IN ('in', 'rev')", name="scale_order"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("benchmark_runs.id", ondelete="CASCADE"))
    persona_id: Mapped[int] = mapped_column(ForeignKey("personas.id"))
    trait_id: Mapped[int] = mapped_column(ForeignKey("traits.id"))
    scale_order: Mapped[str] = mapped_column(String(3))
    rating: Mapped[int] = mapped_column(Integer)  # raw, as answered on the shown scale
    rationale: Mapped[str | None] = mapped_column(Text)
    raw_answer: Mapped[str] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


ATTRGEN_FAILURE: Final = "run_type = 'attrgen'"
BENCHMARK_FAILURE: Final = "run_type = 'benchmark'"
ATTRGEN_FAILURE_KEY: Final = ("run_type", "run_id", "persona_id")
BENCHMARK_FAILURE_KEY: Final = ("run_type", "run_id", "persona_id", "trait_id", "scale_order")


class Failure(Base):
    """An item of a run that has no usable answer yet, and why (its latest failed pass).

    One row per item: a later failure overwrites it, an answer deletes it, so the table always
    says what a resume will ask again. An attrgen item is a persona, a benchmark item a
    (persona, trait, scale order); two partial unique indexes, because a unique key never
    collides on the NULL trait of an attrgen row (on SQLite or PostgreSQL)."""

    __tablename__ = "failures"
    __table_args__ = (
        CheckConstraint("run_type IN ('attrgen', 'benchmark')", name="run_type"),
        Index(
            "uq_failures_attrgen_item",
            *ATTRGEN_FAILURE_KEY,
            unique=True,
            sqlite_where=text(ATTRGEN_FAILURE),
            postgresql_where=text(ATTRGEN_FAILURE),
        ),
        Index(
            "uq_failures_benchmark_item",
            *BENCHMARK_FAILURE_KEY,
            unique=True,
            sqlite_where=text(BENCHMARK_FAILURE),
            postgresql_where=text(BENCHMARK_FAILURE),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_type: Mapped[str] = mapped_column(String(16))
    run_id: Mapped[int] = mapped_column(Integer, index=True)
    persona_id: Mapped[int] = mapped_column(ForeignKey("personas.id"))
    trait_id: Mapped[int | None] = mapped_column(ForeignKey("traits.id"))
    scale_order: Mapped[str | None] = mapped_column(String(3))
    kind: Mapped[str] = mapped_column(String(32))  # parse | llm_error
    snippet: Mapped[str] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RunResumption(Base):
    """A flow run that continued a run another flow run created (`resume_run_id`).

    The run keeps its creator in `prefect_flow_run_id`, so the earlier task keeps its result
    and a retry of it resumes the same run; this row gives the later task the same run."""

    __tablename__ = "run_resumptions"
    __table_args__ = (
        CheckConstraint("run_type IN ('attrgen', 'benchmark')", name="run_type"),
        UniqueConstraint("run_type", "run_id", "flow_run_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_type: Mapped[str] = mapped_column(String(16))
    run_id: Mapped[int] = mapped_column(Integer)
    flow_run_id: Mapped[str] = mapped_column(String(36), index=True)


class QueueTaskId(Base):
    """The /queue contract's integer task id for a Prefect flow run; nothing else (the task's
    status, config and times are read from Prefect). Ids only grow, so they also give the
    FIFO position."""

    __tablename__ = "queue_task_ids"

    id: Mapped[int] = mapped_column(primary_key=True)
    flow_run_id: Mapped[str] = mapped_column(String(36), unique=True)


class QueueOutbox(Base):
    """An add the /queue API has answered (its task id is reserved) but not yet created in
    Prefect: it survives a restart of the API and is created then (queue_api/outbox.py). The
    row goes once its run exists; `error` says why Prefect refused it for good."""

    __tablename__ = "queue_outbox"

    task_id: Mapped[int] = mapped_column(ForeignKey("queue_task_ids.id"), primary_key=True)
    task_type: Mapped[str] = mapped_column(String(32))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    label: Mapped[str | None] = mapped_column(Text)
    held_as: Mapped[str] = mapped_column(String(32))
    tags: Mapped[list[str]] = mapped_column(JSON)
    depends_on: Mapped[list[int]] = mapped_column(JSON)  # the client's task ids, for the views
    submitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    # Removed by its user while its run was being created: the row stays until the run is gone.
    withdrawn: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class QueueAnnouncement(Base):
    """A task end the queue manager has announced (its message was emitted): a new manager
    announces the ends it missed, and none twice. Not a copy of the task's status."""

    __tablename__ = "queue_announcements"

    flow_run_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    ended_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class TaskRate(Base):
    """What one LLM task did in one interval (between two result flushes): the measured rate
    that task and queue ETAs are computed from (biasbench.rates). History, not status: rows
    are only appended, and a resumed run goes on adding its own."""

    __tablename__ = "task_rates"

    id: Mapped[int] = mapped_column(primary_key=True)
    flow_run_id: Mapped[str | None] = mapped_column(String(36), index=True)
    task_type: Mapped[str] = mapped_column(String(32))
    model_name: Mapped[str] = mapped_column(String(200))
    server: Mapped[str] = mapped_column(String(200))  # base URL (no credentials) or "fake"
    batch_size: Mapped[int] = mapped_column(Integer)
    ended_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    seconds: Mapped[float] = mapped_column(Float)  # wall time of the interval
    requests: Mapped[int] = mapped_column(Integer)  # items answered
    failures: Mapped[int] = mapped_column(Integer)  # items stored as failures
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer)  # items of the task answered after the interval
    total: Mapped[int] = mapped_column(Integer)  # items the task plans

    __table_args__ = (Index("ix_task_rates_kind", "model_name", "task_type", "batch_size"),)
