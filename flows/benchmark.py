"""benchmark: the LLM rates every persona × active trait 1–5; a quick analysis at the end."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from typing import Annotated, Any, Literal

from prefect.artifacts import acreate_markdown_artifact
from pydantic import Field

from biasbench import runs
from biasbench.analysis import QuickAnalysis, quick_analysis
from biasbench.asking import ask
from biasbench.datasets import persona_profiles
from biasbench.llm.base import ChatClient
from biasbench.parsing import parse_rating
from biasbench.plan import PlanItem, benchmark_plan
from biasbench.prompts import PersonaProfile, TraitView, benchmark_messages
from biasbench.results import TaskResult, benchmark_result
from flows.answering import answer_all
from flows.progress import Progress
from flows.queue_turn import Priority, Upstream
from flows.runtime import ready_chat_client
from flows.task_flow import TaskContext, given_dataset, task_context, task_flow

Outcome = runs.BenchmarkOutcome


@dataclass(frozen=True)
class Job:
    """A benchmark run opened for this pass: what is planned and what is still unanswered."""

    run_id: int
    plan: list[PlanItem]
    todo: list[PlanItem]
    profiles: dict[int, PersonaProfile]
    traits: dict[int, TraitView]


@task_flow("benchmark")
async def benchmark(
    model_name: Annotated[str, Field(min_length=1, description="Model name as served.")],
    dataset_id: Annotated[
        int | None, Field(description="Dataset to rate; injected from an upstream attrgen.")
    ] = None,
    llm: Annotated[
        Literal["vllm", "fake"], Field(description="vllm: any OpenAI-compatible server.")
    ] = "vllm",
    vllm_base_url: Annotated[str | None, Field(description="Default: VLLM_BASE_URL.")] = None,
    include_rationale: Annotated[
        bool, Field(description="Ask for a rationale before the rating.")
    ] = False,
    batch_size: Annotated[int, Field(ge=1, le=1024, description="Requests in flight.")] = 8,
    max_new_tokens: Annotated[int, Field(ge=16, le=32_768)] = 256,
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3,
    system_prompt: str | None = None,
    attrgen_run_id: Annotated[
        int | None,
        Field(description="Attributes (names) to use; injected from an upstream attrgen."),
    ] = None,
    scale_mode: Annotated[
        Literal["in", "rev", "random50"], Field(description="Order of the answer scale.")
    ] = "in",
    dual_fraction: Annotated[
        float, Field(ge=0, le=1, description="Share of pairs also asked in the other order.")
    ] = 0.0,
    resume_run_id: Annotated[int | None, Field(description="Continue this benchmark run.")] = None,
    upstream: Upstream = None,
    priority: Priority = 0,
) -> TaskResult:
    dataset_id = given_dataset(dataset_id, "the dataset to rate")
    ctx = task_context()
    fields = {
        "dataset_id": dataset_id,
        "attrgen_run_id": attrgen_run_id,
        "llm": llm,
        "vllm_base_url": vllm_base_url,
        "include_rationale": include_rationale,
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
        "max_attempts": max_attempts,
        "system_prompt": system_prompt,
        "scale_mode": scale_mode,
        "dual_fraction": dual_fraction,
    }

    # Nothing is created while an input or the LLM server is wrong.
    ctx.check("benchmark", {**fields, "model_name": model_name, "resume_run_id": resume_run_id})
    async with ready_chat_client(
        ctx.settings,
        llm=llm,
        model_name=model_name,
        vllm_base_url=vllm_base_url,
        in_flight=batch_size,
    ) as client:
        job = _open_job(ctx, fields, model_name=model_name, resume_run_id=resume_run_id)
        ctx.logger.info(
            "Benchmark run %s: %s questions planned, %s already answered, %s to ask.",
            job.run_id,
            len(job.plan),
            len(job.plan) - len(job.todo),
            len(job.todo),
        )
        interval = ctx.settings.progress_interval
        progress = Progress(len(job.plan), interval=interval, what="ratings")
        await progress.start(len(job.plan) - len(job.todo))
        await answer_all(
            job.todo,
            partial(
                _ask_one,
                client,
                job,
                include_rationale=include_rationale,
                system_prompt=system_prompt,
                max_attempts=max_attempts,
                max_tokens=max_new_tokens,
            ),
            in_flight=batch_size,
            save=ctx.saving(runs.save_benchmark_batch, job.run_id),
            progress=progress,
            already_done=len(job.plan) - len(job.todo),
            interval=interval,
            max_error_share=ctx.settings.llm_max_error_share,
            meter=ctx.rate_meter(
                "benchmark",
                client,
                llm=llm,
                base_url=vllm_base_url,
                total=len(job.plan),
                batch_size=batch_size,
            ),
        )

    analysis, result = _finish(ctx, job)
    ctx.logger.info("Benchmark run %s finished: %s", job.run_id, analysis.summary_line())
    await acreate_markdown_artifact(
        key=f"benchmark-run-{job.run_id}",
        markdown=f"# Benchmark run {job.run_id}\n\nModel `{model_name}` on dataset {dataset_id}, "
        f"scale `{scale_mode}`.\n\n{analysis.to_markdown()}",
        description=f"Benchmark run {job.run_id}: quick analysis",
    )
    return result


def _open_job(
    ctx: TaskContext, fields: dict[str, Any], *, model_name: str, resume_run_id: int | None
) -> Job:
    """Create or resume the run row, and derive its (deterministic) plan and what is missing."""
    with ctx.session() as session:
        run = runs.open_benchmark_run(
            session,
            fields=fields,
            model_name=model_name,
            flow_run_id=ctx.flow_run_id,
            resume_run_id=resume_run_id,
        )
        profiles = persona_profiles(session, run.dataset_id, attrgen_run_id=run.attrgen_run_id)
        if run.attrgen_run_id is not None:
            # Only named personas are rated, so that every prompt of a run has the same form.
            profiles = {pid: p for pid, p in profiles.items() if p.attributes}
        traits = {t.id: t for t in runs.active_traits(session)}
        plan = benchmark_plan(
            run_seed=run.run_seed,
            persona_ids=sorted(profiles),
            trait_ids=sorted(traits),
            scale_mode=run.scale_mode,  # type: ignore[arg-type]
            dual_fraction=run.dual_fraction,
        )
        run.planned = len(plan)
        stored = runs.stored_result_keys(session, run.id)
        todo = [i for i in plan if (i.persona_id, i.trait_id, i.scale_order) not in stored]
        return Job(run_id=run.id, plan=plan, todo=todo, profiles=profiles, traits=traits)


async def _ask_one(
    client: ChatClient,
    job: Job,
    item: PlanItem,
    *,
    include_rationale: bool,
    system_prompt: str | None,
    max_attempts: int,
    max_tokens: int,
) -> Outcome:
    def messages(attempt: int) -> Any:
        return benchmark_messages(
            job.profiles[item.persona_id],
            job.traits[item.trait_id],
            scale_order=item.scale_order,
            include_rationale=include_rationale,
            system_prompt=system_prompt,
            attempt=attempt,
        )

    return await ask(
        client,
        messages,
        partial(parse_rating, include_rationale=include_rationale),
        max_attempts=max_attempts,
        max_tokens=max_tokens,
    )


def _finish(ctx: TaskContext, job: Job) -> tuple[QuickAnalysis, TaskResult]:
    """The quick analysis over what is stored for this run's current plan (all passes)."""
    plan_keys = {(i.persona_id, i.trait_id, i.scale_order) for i in job.plan}
    with ctx.session() as session:
        analysis = quick_analysis(
            runs.rated_rows(session, job.run_id), planned=len(job.plan), plan_keys=plan_keys
        )
        runs.mark_finished(session, "benchmark", job.run_id, analysis=asdict(analysis))
        return analysis, benchmark_result(session, job.run_id)
