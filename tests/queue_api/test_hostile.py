"""Hostile submissions against the served API: each is a 4xx whose body names the field,
none creates a task (a flow run or a task id), and other clients are answered meanwhile."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from sqlalchemy import func, select

from biasbench import runs
from biasbench.datasets import ensure_reference_data, store_pool
from biasbench.db.engine import ready_engine, session_scope
from biasbench.db.models import QueueTaskId
from biasbench.personas.sampling import sample_pool
from biasbench.population.profiles import load_profile
from biasbench.queue.model import QUEUE_TAG
from tests.support.outbox import wait_drained

pytestmark = pytest.mark.alone  # it times the answers to another client meanwhile

UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

WORLD = load_profile("world")


@dataclass(frozen=True)
class World:
    """What the hostile requests refer to: small pools, an attrgen run of pool B, a held task,
    a held balanced_gen task, and the id of a task that was deleted."""

    pool_a: int
    pool_b: int
    attrgen_of_b: int
    held: int
    held_balanced: int
    deleted: int


@pytest.fixture(scope="module")
def world(api: httpx.Client, home: Path) -> Iterator[World]:
    engine = ready_engine(f"sqlite:///{home / 'queue.db'}")
    with session_scope(engine) as session:
        ensure_reference_data(session)
        pools = [
            store_pool(
                session,
                sample_pool(6, seed=s),
                seed=s,
                config={},
                flow_run_id=None,
                population=WORLD,
            ).id
            for s in (1, 2)
        ]
        attrgen = runs.open_attrgen_run(
            session,
            dataset_id=pools[1],
            model_name="m",
            llm="fake",
            config={},
            flow_run_id=None,
            resume_run_id=None,
        ).id
    api.post("/queue/pause")  # the tasks made here stay held
    try:
        add = "/queue/add"
        held = api.post(add, json={"task_type": "pool_gen", "config": {"n": 5}}).json()
        balanced = {"task_type": "balanced_gen", "config": {"dataset_id": pools[0], "n": 2}}
        held_balanced = api.post(add, json=balanced).json()
        deleted = api.post(add, json={"task_type": "pool_gen", "config": {"n": 5}}).json()
        assert api.delete(f"/queue/{deleted['task_id']}").status_code == 200
        wait_drained(f"sqlite:///{home / 'queue.db'}")  # what it made exists before counting
        yield World(
            pools[0],
            pools[1],
            attrgen,
            held["task_id"],
            held_balanced["task_id"],
            deleted["task_id"],
        )
    finally:
        api.post("/queue/resume")


NAN, INF = float("nan"), float("inf")
BIG = 2**64


def add(task_type: Any = "pool_gen", config: Any = None, **more: Any) -> dict[str, Any]:
    return {"task_type": task_type, "config": {} if config is None else config, **more}


def bench(**config: Any) -> dict[str, Any]:
    return add("benchmark", {"model_name": "m", "dataset_id": "A", **config})


def attr(**config: Any) -> dict[str, Any]:
    return add("attrgen", {"model_name": "m", "dataset_id": "A", **config})


def draw(**config: Any) -> dict[str, Any]:
    return add("balanced_gen", {"dataset_id": "A", "n": 2, **config})


# (body, the field the answer must name). Strings "A", "B", "ATTR_B", "HELD", "HELD_BAL" and
# "DELETED" stand for the world's ids.
SUBMISSIONS: list[tuple[Any, str]] = [
    # pool_gen: ranges, types, 64-bit, NaN
    (add(config={"n": 0}), "config.n"),
    (add(config={"n": -5}), "config.n"),
    (add(config={"n": "many"}), "config.n"),
    (add(config={"n": BIG}), "config.n"),
    (add(config={"n": 3_000_000}), "config.n"),
    (add(config={"temperature": NAN}), "config.temperature"),
    (add(config={"temperature": INF}), "config.temperature"),
    (add(config={"temperature": -INF}), "config.temperature"),
    (add(config={"temperature": 11}), "config.temperature"),
    (add(config={"age_from": 60, "age_to": 30}), "config.age_from"),
    (add(config={"age_to": 10}), "config.age_to"),
    (add(config={"age_from": 200}), "config.age_from"),
    (add(config={"seed": BIG}), "config.seed"),
    (add(config={"seed": 2**40}), "config.seed"),
    (add(config={"seed": "abc"}), "config.seed"),
    (add(config={"seed": True}), "config.seed"),
    (add(config={"colour": "red"}), "config.colour"),
    (add(config={"upstream": []}), "config.upstream"),
    (add(config={"priority": 5}), "config.priority"),
    # balanced_gen: references, axes, sizes
    (add("balanced_gen", {"n": 2}), "config.dataset_id"),
    (draw(dataset_id=999_999), "config.dataset_id"),
    (draw(dataset_id=BIG), "config.dataset_id"),
    (draw(dataset_id=-1), "config.dataset_id"),
    (draw(axes=["shoe_size"]), "config.axes"),
    (draw(axes=[]), "config.axes"),
    (draw(axes="gender"), "config.axes"),
    (draw(axes=["gender", "gender"]), "config.axes"),
    (draw(axes=[NAN]), "config.axes"),
    (draw(n=1_000), "config.n"),
    (draw(seed=NAN), "config.seed"),
    (add("balanced_gen", {"n": 2}, depends_on="HELD_BAL"), "config.dataset_id"),
    # attrgen: model, URL, resume, sizes
    (add("attrgen", {"dataset_id": "A"}), "config.model_name"),
    (attr(model_name=""), "config.model_name"),
    (add("attrgen", {"model_name": "m"}), "config.dataset_id"),
    (attr(vllm_base_url="not a url"), "config.vllm_base_url"),
    (attr(vllm_base_url="ftp://127.0.0.1/v1"), "config.vllm_base_url"),
    (attr(vllm_base_url="http://"), "config.vllm_base_url"),
    (attr(vllm_base_url="http://127.0.0.1:port/v1"), "config.vllm_base_url"),
    (attr(vllm_base_url="http://127.0.0.1/" + "v" * 400), "config.vllm_base_url"),
    (attr(resume_run_id=999_999), "config.resume_run_id"),
    (attr(batch_size=0), "config.batch_size"),
    (attr(llm="gpt"), "config.llm"),
    (attr(system_prompt="x" * 5_000_000), "config.system_prompt"),
    (attr(max_attempts=INF), "config.max_attempts"),
    # benchmark: references between runs and datasets
    (bench(attrgen_run_id="ATTR_B"), "config.attrgen_run_id"),
    (bench(attrgen_run_id=999_999), "config.attrgen_run_id"),
    (bench(dual_fraction=NAN), "config.dual_fraction"),
    (bench(dual_fraction=2), "config.dual_fraction"),
    (bench(scale_mode="sideways"), "config.scale_mode"),
    (bench(dataset_id=999_999), "config.dataset_id"),
    (add("benchmark", {"model_name": "m"}), "config.dataset_id"),
    (bench(model_name="m" * 300), "config.model_name"),
    (bench(resume_run_id=BIG), "config.resume_run_id"),
    (bench(vllm_api_key="s3cret-key"), "config.vllm_api_key"),
    (add(config={"\ud800": 1}), "config"),
    (add(config={"nested": {"deep": [1, NAN]}}), "config.nested.deep[1]"),
    # the envelope
    ({"config": {}}, "task_type"),
    (add("training"), "task_type"),
    (add(5), "task_type"),
    (add(priority=NAN), "priority"),
    (add(priority=INF), "priority"),
    (add(priority=True), "priority"),
    (add(priority=10**7), "priority"),
    (add(label="\ud800"), "label"),
    (add(label="x" * 201), "label"),
    (add(label=5), "label"),
    (add(config=[]), "config"),
    (add(config="x"), "config"),
    (add(colour="red"), "colour"),
    (add(depends_on=True), "depends_on"),
    (add(depends_on=[True]), "depends_on"),
    (add(depends_on="seven"), "depends_on"),
    (add(depends_on=list(range(1, 100_001))), "depends_on"),
    (add(depends_on=list(range(1, 102))), "depends_on"),
    (add(depends_on=BIG), "depends_on"),
    (add(depends_on=0), "depends_on"),
    (add(depends_on=["HELD", 999_999]), "999999"),
    (add("balanced_gen", {"n": 2}, depends_on="DELETED"), "task DELETED does not exist"),
]

# Not JSON submissions at all: (method, path, content, headers, field named).
RAW: list[tuple[str, str, bytes, dict[str, str], str]] = [
    ("POST", "/queue/add", b"{", {"Content-Type": "application/json"}, "body"),
    ("POST", "/queue/add", b"", {"Content-Type": "application/json"}, "body"),
    (
        "POST",
        "/queue/add",
        b"[" * 100_000 + b"]" * 100_000,
        {"Content-Type": "application/json"},
        "body",
    ),
    ("POST", "/queue/add", b"x" * 10_000_000, {"Content-Type": "application/json"}, "body"),
    (
        "POST",
        "/queue/add",
        b"task_type=pool_gen",
        {"Content-Type": "application/x-www-form-urlencoded"},
        "content-type",
    ),
    (
        "POST",
        "/queue/add",
        b'{"task_type": "pool_gen"}',
        {"Content-Type": "text/plain"},
        "content-type",
    ),
    (
        "POST",
        "/queue/add",
        b"{}",
        {"Content-Type": "application/json", "Origin": "http://evil.example"},
        "origin",
    ),
    (
        "POST",
        "/queue/add",
        b"{}",
        {"Content-Type": "application/json", "Host": "evil.example"},
        "Host",
    ),
]


def resolve(value: Any, world: World) -> Any:
    names = {
        "A": world.pool_a,
        "B": world.pool_b,
        "ATTR_B": world.attrgen_of_b,
        "HELD": world.held,
        "HELD_BAL": world.held_balanced,
        "DELETED": world.deleted,
    }
    if isinstance(value, dict):
        return {k: resolve(v, world) for k, v in value.items()}
    if isinstance(value, list) and len(value) < 10:
        return [resolve(v, world) for v in value]
    return names.get(value, value) if isinstance(value, str) else value


@dataclass
class StatsPoller:
    """Another client asking GET /queue/stats over and over, timing each answer."""

    base_url: str
    latencies: list[float] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            while not self.stop.is_set():
                started = time.monotonic()
                status = client.get("/queue/stats").status_code
                self.latencies.append(time.monotonic() - started)
                if status != 200:
                    self.failures.append(status)
                time.sleep(0.02)


def flow_run_ids() -> set[str]:
    """Every task run Prefect has, read page by page (a single read stops at 200)."""

    async def read() -> set[str]:
        ids: set[str] = set()
        async with get_client() as client:
            offset = 0
            while True:
                page = await client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[QUEUE_TAG])),
                    limit=200,
                    offset=offset,
                )
                ids.update(str(r.id) for r in page)
                offset += len(page)
                if len(page) < 200:
                    return ids

    return asyncio.run(read())


def task_ids(home: Path) -> tuple[int, int | None]:
    with session_scope(ready_engine(f"sqlite:///{home / 'queue.db'}")) as session:
        row = session.execute(select(func.count(), func.max(QueueTaskId.id))).one()
        return row[0], row[1]


def test_hostile_requests_are_refused_naming_the_field_and_create_nothing(
    api: httpx.Client, world: World, home: Path
) -> None:
    assert len(SUBMISSIONS) + len(RAW) >= 60
    requests = [
        (
            "POST",
            "/queue/add",
            json.dumps(resolve(body, world)).encode(),  # NaN and lone surrogates as JSON allows
            {"Content-Type": "application/json"},
            named.replace("DELETED", str(world.deleted)),
        )
        for body, named in SUBMISSIONS
    ] + RAW
    runs_before, ids_before = flow_run_ids(), task_ids(home)
    poller = StatsPoller(str(api.base_url))
    polling = threading.Thread(target=poller.run)
    polling.start()
    refused: list[tuple[int, float, str, str]] = []
    try:
        for method, path, content, headers, named in requests:
            started = time.monotonic()
            answer = api.request(method, path, content=content, headers=headers)
            refused.append((answer.status_code, time.monotonic() - started, answer.text, named))
    finally:
        # At least a few answers to the other client, however fast the refusals were.
        deadline = time.monotonic() + 30
        while len(poller.latencies) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        poller.stop.set()
        polling.join(30)

    for (status, took, text, named), (_, _, content, _, _) in zip(refused, requests, strict=True):
        shown = content[:80]
        assert 400 <= status < 500, (status, shown, text[:300])
        assert named in text, (named, shown, text[:300])
        assert took < 5, (took, shown)  # refused at once, e.g. 100,000 upstream ids
        assert len(text) < 10_000 and "s3cret" not in text  # nothing large or secret echoed
        assert not UUID_TEXT.search(text), text  # upstreams are named by task id
    assert flow_run_ids() == runs_before
    assert task_ids(home) == ids_before
    assert len(poller.latencies) >= 5 and not poller.failures
    assert max(poller.latencies) < 1.0, sorted(poller.latencies)[-5:]
