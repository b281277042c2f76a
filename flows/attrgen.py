"""attrgen: the LLM writes a name, appearance and biography for every persona of a dataset."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from prefect.artifacts import acreate_markdown_artifact
from pydantic import Field

from biasbench import runs
from biasbench.asking import ask
from biasbench.datasets import persona_profiles
from biasbench.parsing import parse_attributes
from biasbench.prompts import attrgen_messages
from biasbench.results import TaskResult, attrgen_result
from flows.answering import answer_all
from flows.progress import Progress
from flows.queue_turn import Priority, Upstream
from flows.runtime import ready_chat_client
from flows.task_flow import given_dataset, task_context, task_flow

Outcome = runs.AttrgenOutcome


@task_flow("attrgen")
async def attrgen(
    model_name: Annotated[str, Field(min_length=1, description="Model name as served.")],
    dataset_id: Annotated[
        int | None,
        Field(description="Dataset whose personas get attributes; injected from an upstream."),
    ] = None,
    llm: Annotated[
        Literal["vllm", "fake"], Field(description="vllm: any OpenAI-compatible server.")
    ] = "vllm",
    vllm_base_url: Annotated[str | None, Field(description="Default: VLLM_BASE_URL.")] = None,
    batch_size: Annotated[int, Field(ge=1, le=1024, description="Requests in flight.")] = 2,
    max_new_tokens: Annotated[int, Field(ge=16, le=32_768)] = 192,
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3,
    system_prompt: str | None = None,
    resume_run_id: Annotated[int | None, Field(description="Continue this attrgen run.")] = None,
    upstream: Upstream = None,
    priority: Priority = 0,
) -> TaskResult:
    dataset_id = given_dataset(dataset_id, "the dataset whose personas get attributes")
    ctx = task_context()
    config = {
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
        "max_attempts": max_attempts,
        "system_prompt": system_prompt,
        "vllm_base_url": vllm_base_url,
    }

    # Nothing is created while an input or the LLM server is wrong.
    given = {"model_name": model_name, "dataset_id": dataset_id, "resume_run_id": resume_run_id}
    ctx.check("attrgen", {**config, **given, "llm": llm})
    async with ready_chat_client(
        ctx.settings,
        llm=llm,
        model_name=model_name,
        vllm_base_url=vllm_base_url,
        in_flight=batch_size,
    ) as client:
        with ctx.session() as session:
            run_id = runs.open_attrgen_run(
                session,
                dataset_id=dataset_id,
                model_name=model_name,
                llm=llm,
                config=config,
                flow_run_id=ctx.flow_run_id,
                resume_run_id=resume_run_id,
            ).id
            profiles = persona_profiles(session, dataset_id)
            done = runs.personas_with_attributes(session, run_id)
        todo = [pid for pid in profiles if pid not in done]
        ctx.logger.info(
            "Attrgen run %s: %s personas, %s already stored, %s to ask.",
            run_id,
            len(profiles),
            len(done),
            len(todo),
        )

        async def ask_one(persona_id: int) -> Outcome:
            def messages(attempt: int) -> Any:
                return attrgen_messages(
                    profiles[persona_id], system_prompt=system_prompt, attempt=attempt
                )

            return await ask(
                client,
                messages,
                parse_attributes,
                max_attempts=max_attempts,
                max_tokens=max_new_tokens,
            )

        interval = ctx.settings.progress_interval
        progress = Progress(len(profiles), interval=interval, what="personas")
        await progress.start(len(done))
        answered, unanswered = await answer_all(
            todo,
            ask_one,
            in_flight=batch_size,
            save=ctx.saving(runs.save_attrgen_batch, run_id),
            progress=progress,
            already_done=len(done),
            interval=interval,
            max_error_share=ctx.settings.llm_max_error_share,
            meter=ctx.rate_meter(
                "attrgen",
                client,
                llm=llm,
                base_url=vllm_base_url,
                total=len(profiles),
                batch_size=batch_size,
            ),
        )

    with ctx.session() as session:
        runs.mark_finished(session, "attrgen", run_id)
        result = attrgen_result(session, run_id)
    ctx.logger.info(
        "Attrgen run %s finished: %s of %s personas have attributes (%s asked now, %s failed).",
        run_id,
        result.summary["with_attributes"],
        result.summary["personas"],
        answered,
        unanswered,
    )
    await acreate_markdown_artifact(
        key=f"attrgen-run-{run_id}",
        markdown=_summary_markdown(run_id, dataset_id, model_name, result.summary),
        description=f"Attrgen run {run_id}",
    )
    return result


def _summary_markdown(run_id: int, dataset_id: int, model: str, summary: Mapping[str, int]) -> str:
    return (
        f"# Attrgen run {run_id}\n\nModel `{model}` on dataset {dataset_id}.\n\n"
        "| personas | with attributes | missing |\n|---:|---:|---:|\n"
        f"| {summary['personas']} | {summary['with_attributes']} | {summary['missing']} |\n"
    )
