"""What every task flow needs from its surroundings: settings, the database, the Prefect run id,
and the LLM API key (from a Secret block or the environment, never from parameters). A task
body gets the first three together from `flows.task_flow.task_context()`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from prefect import get_run_logger
from prefect.artifacts import acreate_markdown_artifact
from prefect.blocks.system import Secret
from prefect.runtime import flow_run
from sqlalchemy import Engine

from biasbench.db.engine import ready_engine
from biasbench.llm.base import ChatClient
from biasbench.llm.factory import Backend, make_chat_client
from biasbench.llm.key_scope import may_receive_key, shown
from biasbench.llm.model_host import LoadedModel, ModelHostClient, pick_host
from biasbench.results import TaskResult
from biasbench.settings import Settings


def current_flow_run_id() -> str | None:
    run_id = flow_run.get_id()
    return str(run_id) if run_id else None


def database(settings: Settings) -> Engine:
    return ready_engine(settings.db_url)


async def llm_api_key(settings: Settings) -> str | None:
    """The Secret block wins over the environment, so operators can rotate keys in the UI."""
    try:
        block = await Secret.aload(settings.llm_api_key_block)
    except ValueError:  # no such block
        block = None
    if block is not None:
        return str(block.get())
    return settings.vllm_api_key.get_secret_value() if settings.vllm_api_key else None


async def llm_api_key_for(settings: Settings, base_url: str) -> str | None:
    """The key, if this server may have it (VLLM_BASE_URL or LLM_ALLOWED_BASE_URLS); else None,
    said once in the run's log (naming the server, never the key)."""
    key = await llm_api_key(settings)
    if key is None or may_receive_key(base_url, settings.llm_key_servers):
        return key
    get_run_logger().warning(
        "Calling %s without the LLM API key: only VLLM_BASE_URL and LLM_ALLOWED_BASE_URLS "
        "receive it.",
        shown(base_url),
    )
    return None


def hosted(settings: Settings, llm: Backend, vllm_base_url: str | None) -> bool:
    """Whether the task's server is the model host's: a catalogue and hosts are configured,
    and the task names no server of its own."""
    return (
        llm == "vllm"
        and vllm_base_url is None
        and settings.model_catalogue is not None
        and bool(settings.model_hosts)
    )


@asynccontextmanager
async def model_from_host(settings: Settings, model_name: str) -> AsyncIterator[LoadedModel]:
    """Ensure the model on this GPU's host and hold it while the block runs; the wait is
    logged as "loading <model> (m:ss)", and the load is recorded as an artifact."""
    logger = get_run_logger()

    async def still_loading(seconds: float) -> None:
        logger.info("loading %s (%d:%02d)", model_name, seconds // 60, seconds % 60)

    host = ModelHostClient(await pick_host(settings.model_hosts, model_name))
    logger.info("loading %s", model_name)
    task = current_flow_run_id()
    async with host.model(model_name, task=task, on_wait=still_loading) as loaded:
        logger.info("%s ready: %s in %.1f s", model_name, loaded.how, loaded.seconds)
        if loaded.how != "reused":
            await acreate_markdown_artifact(
                key=f"model-load-{_artifact_key(model_name)}",
                markdown=f"# Model {model_name}\n\n{loaded.how} in {loaded.seconds:.1f} s, "
                f"served at {loaded.base_url}.",
                description=f"{model_name}: {loaded.how} in {loaded.seconds:.1f} s",
            )
        yield loaded


def _artifact_key(name: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes."""
    return "".join(c if c.isalnum() else "-" for c in name.lower())


@asynccontextmanager
async def ready_chat_client(
    settings: Settings, *, llm: Backend, model_name: str, vllm_base_url: str | None, in_flight: int
) -> AsyncIterator[ChatClient]:
    """A client that has already proven the server is up and serves the model (fail fast),
    closed however the block ends. With model hosts, "ensure the model, then run" is this
    one call: the GPU's host gets the model ready first and keeps it while the block runs."""
    async with AsyncExitStack() as stack:
        unhosted = llm == "vllm" and vllm_base_url is None and not settings.model_hosts
        if unhosted and settings.model_catalogue is not None:
            get_run_logger().warning(
                "MODEL_CATALOGUE is set but this worker has no model host "
                "(BIASBENCH_MODEL_HOSTS): calling VLLM_BASE_URL instead."
            )
        if hosted(settings, llm, vllm_base_url):
            loaded = await stack.enter_async_context(model_from_host(settings, model_name))
            base_url, api_key = loaded.base_url, None  # a server of ours: no key to send
        else:
            base_url = vllm_base_url or settings.vllm_base_url
            api_key = await llm_api_key_for(settings, base_url) if llm == "vllm" else None
        async with _probed(settings, llm, model_name, base_url, api_key, in_flight) as client:
            yield client


@asynccontextmanager
async def _probed(
    settings: Settings,
    llm: Backend,
    model_name: str,
    base_url: str,
    api_key: str | None,
    in_flight: int,
) -> AsyncIterator[ChatClient]:
    client = make_chat_client(
        llm,
        model_name=model_name,
        base_url=base_url,
        api_key=api_key,
        in_flight=in_flight,
        request_timeout=settings.llm_request_timeout,
        unreachable_after=settings.llm_unreachable_after,
        max_retries=settings.llm_max_retries,
    )
    try:
        await client.probe()
        yield client
    finally:
        await client.aclose()


async def publish_dataset_report(result: TaskResult, report: str | None, description: str) -> None:
    """The new dataset's report as a markdown artifact keyed by the dataset; None when a re-run
    found its dataset already made (the artifact exists)."""
    if report is not None:
        await acreate_markdown_artifact(
            key=f"dataset-{result.dataset_id}", markdown=report, description=description
        )
