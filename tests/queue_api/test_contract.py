"""The /queue contract field by field, its error answers, and tasks made outside the shim."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import get_client
from prefect.client.orchestration import PrefectClient
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from biasbench.db.engine import ready_engine
from biasbench.errors import NotFound
from biasbench.queue import gateway
from biasbench.queue.submit import SubmitRequest, check_submission
from queue_api.ids import TaskIds, add_key_tag
from queue_api.outbox import CreateTicket, Outbox
from queue_api.tasks import TaskViews
from tests.support.outbox import in_outbox
from tests.support.stack import REPO

ISO = str  # timestamps travel as ISO strings
# original-system.md §1: every field of a task and its JSON types (None: may be null).
TASK_FIELDS: dict[str, tuple[type, ...]] = {
    "id": (int,),
    "task_type": (str,),
    "status": (str,),
    "position": (int,),
    "label": (str, type(None)),
    "created_at": (ISO, type(None)),
    "started_at": (ISO, type(None)),
    "finished_at": (ISO, type(None)),
    "error": (str, type(None)),
    "depends_on": (int, list, type(None)),
    "result_run_id": (int, type(None)),
    "result_run_type": (str, type(None)),
    "config": (dict,),
}
EXTENSIONS = {
    "priority",
    "progress",
    "blocked_by",
    "model",
    "phase",
    "eta",
    "eta_p90",
    "expected_start",
}
STATS_FIELDS = {
    "total": int,
    "queued": int,
    "waiting": int,
    "running": int,
    "done": int,
    "failed": int,
    "cancelled": int,
    "skipped": int,
    "executor_running": bool,
    "executor_paused": bool,
    "gpu_workers_alive": int,  # an extension
    "scheduled": int,  # an extension
    "gpu_models": dict,  # an extension: each GPU's model host and its loaded model
    "drain_eta": (str, type(None)),  # an extension
}


def check_task(task: dict[str, Any]) -> None:
    assert set(TASK_FIELDS) <= set(task) <= set(TASK_FIELDS) | EXTENSIONS, task.keys()
    for field, types in TASK_FIELDS.items():
        assert isinstance(task[field], types), (field, task[field])
    assert task["task_type"] in {"benchmark", "attrgen", "pool_gen", "balanced_gen"}
    assert task["status"] in {
        "queued", "waiting", "running", "done", "failed", "cancelled", "skipped"
    }  # fmt: skip
    if "progress" in task:
        assert task["status"] == "running"
        assert set(task["progress"]) == {"done", "total", "percent"}


def task_count() -> int:
    """Every task run Prefect has (counted by the server: no page limit)."""

    async def count() -> int:
        async with get_client() as client:
            return sum((await gateway.count_by_status(client)).values())

    return asyncio.run(count())


def test_every_response_field_has_the_contracts_name_and_type(api: httpx.Client) -> None:
    api.post("/queue/pause")
    try:
        added = api.post(
            "/queue/add", json={"task_type": "pool_gen", "config": {"n": 20000}}
        ).json()
        waiting = api.post(
            "/queue/add",
            json={"task_type": "balanced_gen", "config": {}, "depends_on": added["task_id"]},
        ).json()
        assert set(added) == {"task_id"} and isinstance(added["task_id"], int)

        task = api.get(f"/queue/{added['task_id']}").json()
        check_task(task)
        assert (task["status"], task["label"]) == ("queued", "Pool Generation: 20000 personas")
        assert task["blocked_by"] == "the queue is paused"  # an extension: why it waits
        assert api.get(f"/queue/{waiting['task_id']}").json()["status"] == "waiting"
        listed = api.get("/queue", params={"include_done": False, "limit": 50}).json()
        for task in listed:
            check_task(task)
        positions = [t["position"] for t in listed]
        assert positions == sorted(positions)  # active tasks by position
        stats = api.get("/queue/stats").json()
        assert set(stats) == set(STATS_FIELDS)
        assert all(isinstance(stats[k], t) for k, t in STATS_FIELDS.items())
        assert stats["executor_paused"] is True and stats["waiting"] >= 1
        # Removing: a task with a waiting dependent is refused; its dependent can go.
        refused = api.delete(f"/queue/{added['task_id']}")
        assert refused.status_code == 409 and "dependent" in refused.json()["detail"]
        assert api.delete(f"/queue/{waiting['task_id']}").json()["ok"] is True
        assert api.get(f"/queue/{waiting['task_id']}").status_code == 404
        assert api.post(f"/queue/{added['task_id']}/cancel").json()["ok"] is True
        deadline = time.monotonic() + 30  # a released run is stopped by its worker first
        while (cancelled := api.get(f"/queue/{added['task_id']}").json())["status"] != "cancelled":
            assert time.monotonic() < deadline, cancelled
            time.sleep(0.5)
        assert cancelled["error"]
        # Last, as they let the queue run again: the control endpoints' answers.
        for action in ("stop", "start", "resume", "pause"):
            answer = api.post(f"/queue/{action}").json()
            assert set(answer) == {"ok", "message"} and answer["ok"] is True
    finally:
        api.post("/queue/resume")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"config": {}}, "task_type"),
        ({"task_type": "training", "config": {}}, "task_type"),
        ({"task_type": "pool_gen", "config": [], "label": "x"}, "config"),
        ({"task_type": "pool_gen", "depends_on": "seven"}, "depends_on"),
        ({"task_type": "pool_gen", "colour": "red"}, "colour"),
    ],
)
def test_a_malformed_body_is_422_naming_the_field_and_creates_nothing(
    api: httpx.Client, body: dict[str, Any], field: str
) -> None:
    before = task_count()
    response = api.post("/queue/add", json=body)
    assert response.status_code == 422
    assert any(field in error["loc"] for error in response.json()["detail"])
    assert task_count() == before


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"task_type": "pool_gen", "config": {"n": 0}}, "config.n"),
        ({"task_type": "pool_gen", "config": {"vllm_api_key": "s3cret"}}, "config.vllm_api_key"),
        ({"task_type": "benchmark", "config": {"model_name": "m"}, "depends_on": 999999}, "999999"),
    ],
)
def test_a_refused_submission_is_400_with_a_message_and_creates_nothing(
    api: httpx.Client, body: dict[str, Any], says: str
) -> None:
    before = task_count()
    response = api.post("/queue/add", json=body)
    assert response.status_code == 400 and says in response.json()["detail"]
    assert "s3cret" not in response.text  # a secret is never echoed back
    assert task_count() == before


def test_a_config_value_a_completed_upstream_contradicts_is_refused_and_one_it_confirms_is_not(
    api: httpx.Client,
) -> None:
    pool = api.post("/queue/add", json={"task_type": "pool_gen", "config": {"n": 30}}).json()
    deadline = time.monotonic() + 120
    while (task := api.get(f"/queue/{pool['task_id']}").json())["status"] != "done":
        assert time.monotonic() < deadline and task["status"] in {"queued", "running"}, task
        time.sleep(0.5)
    dataset = task["result_run_id"]

    def balanced(dataset_id: int) -> httpx.Response:
        config = {"n": 4, "dataset_id": dataset_id}
        body = {"task_type": "balanced_gen", "config": config, "depends_on": pool["task_id"]}
        return api.post("/queue/add", json=body)

    before = task_count()
    refused = balanced(dataset + 1000)
    assert refused.status_code == 400 and task_count() == before
    assert refused.json()["detail"] == (
        f"config.dataset_id: dataset_id={dataset + 1000} was given, but upstream "
        f"task {pool['task_id']} (pool_gen) gives dataset_id={dataset}"
    )
    confirmed = balanced(dataset)
    assert confirmed.status_code == 200, confirmed.text
    api.delete(f"/queue/{confirmed.json()['task_id']}")


def test_unknown_ids_are_404(api: httpx.Client) -> None:
    for method, path in [
        ("GET", "/queue/999999"),
        ("DELETE", "/queue/999999"),
        ("POST", "/queue/999999/cancel"),
        ("POST", "/queue/999999/retry"),
    ]:
        assert api.request(method, path).status_code == 404, path


def test_a_task_made_with_the_cli_appears_with_an_id_and_keeps_it(
    api: httpx.Client, prefect_server: str
) -> None:
    seed = random.randrange(10**9)  # tells this run apart from other tests' runs
    command = [
        *(sys.executable, "-m", "prefect", "deployment", "run", "pool_gen/gpu"),
        *("--param", "n=30", "--param", f"seed={seed}"),
    ]
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True)
    deadline = time.monotonic() + 60
    while True:
        tasks = api.get("/queue", params={"limit": 1000}).json()
        cli = [t for t in tasks if t["config"].get("seed") == seed]
        if cli or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(cli) == 1 and cli[0]["task_type"] == "pool_gen"
    again = api.get(f"/queue/{cli[0]['id']}").json()
    api.delete(f"/queue/{cli[0]['id']}")  # out of the next tests' line
    assert again["id"] == cli[0]["id"] and again["config"]["n"] == 30


def test_stats_show_the_model_each_gpu_has_loaded(api: httpx.Client) -> None:
    """What the model hosts publish (deployments/model_host_channel.py) is what /queue/stats
    shows; a host with nothing loaded shows null."""
    from prefect.variables import Variable

    published = {
        "model-host-testbox-0": {"model": "mistral-24b", "loading": None, "servers": {}},
        "model-host-testbox-1": {"model": None, "loading": None, "servers": {}},
    }
    for name, state in published.items():
        Variable.set(name, state, overwrite=True)
    try:
        stats = api.get("/queue/stats").json()
    finally:
        for name in published:
            Variable.unset(name)
    # Only this test's hosts: a host of an earlier test may have published on this server too.
    mine = {k: v for k, v in stats["gpu_models"].items() if k.startswith("model-host-testbox-")}
    assert mine == {"model-host-testbox-0": "mistral-24b", "model-host-testbox-1": None}
    after = api.get("/queue/stats").json()["gpu_models"]
    assert not [k for k in after if k.startswith("model-host-testbox-")]


def test_a_run_a_schedule_made_for_later_is_not_queue_work_until_its_time(
    api: httpx.Client, prefect_server: str
) -> None:
    seed = random.randrange(10**9)
    before = api.get("/queue/stats").json()
    command = [
        *(sys.executable, "-m", "prefect", "deployment", "run", "pool_gen/gpu"),
        *("--param", "n=30", "--param", f"seed={seed}", "--start-in", "1 hour"),
    ]
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    out = subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True, text=True)
    run_id = out.stdout.split("UUID: ")[1].split()[0]
    try:
        stats = api.get("/queue/stats").json()
        assert stats["scheduled"] == before["scheduled"] + 1
        # Not counted as queue work (an earlier test's task may have started meanwhile).
        assert stats["total"] == before["total"] and stats["queued"] <= before["queued"]
        listed = api.get("/queue", params={"limit": 1000}).json()
        assert not [t for t in listed if t["config"].get("seed") == seed]
    finally:
        asyncio.run(_delete(run_id))


async def _delete(run_id: str) -> None:
    async with get_client() as client:
        await client.delete_flow_run(run_id)  # type: ignore[arg-type]


def test_position_is_the_place_in_line_whatever_route_made_the_task(
    api: httpx.Client, prefect_server: str
) -> None:
    """A task made with the CLI gets its id when the API first lists it, after a task the API
    made later; its position is still before that task's, and priority goes first."""
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    api.post("/queue/pause")
    made: list[int] = []
    try:
        command = [
            *(sys.executable, "-m", "prefect", "deployment", "run", "pool_gen/gpu"),
            *("--param", "n=30", "--flow-run-name", "line-cli-first"),
        ]
        cli = subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True, text=True)
        assert "UUID: " in cli.stdout
        api_second = api.post(
            "/queue/add", json={"task_type": "pool_gen", "config": {"n": 30}, "label": "line-2"}
        ).json()["task_id"]
        urgent = api.post(
            "/queue/add",
            json={"task_type": "pool_gen", "config": {"n": 30}, "label": "line-3", "priority": 9},
        ).json()["task_id"]
        listed = {t["label"]: t for t in api.get("/queue", params={"include_done": False}).json()}
        made = [listed[label]["id"] for label in ("line-cli-first", "line-2", "line-3")]
        assert listed["line-cli-first"]["id"] > api_second  # ids: the order the API saw them
        place = {label: listed[label]["position"] for label in listed}
        assert place["line-3"] < place["line-cli-first"] < place["line-2"]
        # Listed by position (an earlier test's task may still be in line: only ours count).
        ours = [label for label in listed if label.startswith("line-")]
        assert ours == ["line-3", "line-cli-first", "line-2"]
        assert api.get(f"/queue/{urgent}").json()["position"] == place["line-3"]
    finally:
        for task_id in made:
            api.delete(f"/queue/{task_id}")
        api.post("/queue/resume")


def test_an_add_whose_id_binding_fails_once_keeps_its_id_and_is_created_once(
    api: httpx.Client, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outbox creates the run, then its write of the binding fails (the domain database
    refused it): the run is found again by its id's tag, not created a second time."""
    original = Outbox._bind
    failed: list[dict[int, str]] = []

    def lost_once(self: Outbox, runs: dict[int, str], **how: bool) -> dict[int, str]:
        if runs and not failed:
            failed.append(runs)
            raise OperationalError("UPDATE queue_task_ids", {}, Exception("disk I/O error"))
        return original(self, runs, **how)

    before = task_count()
    api.post("/queue/pause")
    try:
        with monkeypatch.context() as patch:
            patch.setattr(Outbox, "_bind", lost_once)
            answer = api.post(
                "/queue/add", json={"task_type": "pool_gen", "config": {"n": 30}, "label": "lost"}
            )
            assert answer.status_code == 200, answer.text
            task_id = answer.json()["task_id"]
            deadline = time.monotonic() + 60
            while not (failed and task_id not in in_outbox(f"sqlite:///{home / 'queue.db'}")):
                assert time.monotonic() < deadline, "the add was never created"
                time.sleep(0.2)
        assert task_count() == before + 1  # one task: created once, though its binding failed
        assert api.get(f"/queue/{task_id}").json()["label"] == "lost"
        listed = [t for t in api.get("/queue").json() if t["label"] == "lost"]
        assert [t["id"] for t in listed] == [task_id]
        assert api.delete(f"/queue/{task_id}").json()["ok"] is True
    finally:
        api.post("/queue/resume")


def test_two_api_processes_sending_the_same_adds_make_each_one_run(
    api: httpx.Client, home: Path
) -> None:
    """Two API processes on one domain database each send what they find in the outbox: both
    read these adds before either has bound one, and both send them. Prefect's idempotency key
    (the add's key) keeps every add one run, listed once under its id."""
    db_url = f"sqlite:///{home / 'queue.db'}"
    engine = create_engine(db_url)
    first, second = Outbox(engine, TaskIds(engine)), Outbox(engine, TaskIds(engine))
    ids: list[int] = []

    async def drained(task_ids: list[int]) -> None:
        deadline = time.monotonic() + 60
        while in_outbox(db_url) & set(task_ids):
            assert time.monotonic() < deadline, "the adds were never created"
            await asyncio.sleep(0.2)

    async def add_then_send_from_both() -> None:
        async with get_client() as client:
            submission = await check_submission(
                client, SubmitRequest("pool_gen", {"n": 10}, label="sent-twice")
            )
            ids.extend(
                first.put(submission, depends_on=[], ticket=CreateTicket()) for _ in range(5)
            )
            # Each reads the rows on its first step, before its first call to Prefect.
            senders = [asyncio.create_task(o.send_forever(client)) for o in (first, second)]
            await drained(ids)
            # One add more, given to the second: a sender works round after round, so once this
            # one exists, the second's send of the first five has ended too.
            ids.append(second.put(submission, depends_on=[], ticket=CreateTicket()))
            await drained(ids)
            for sender in senders:
                sender.cancel()
            await asyncio.gather(*senders, return_exceptions=True)

    before = task_count()
    api.post("/queue/pause")
    try:
        asyncio.run(add_then_send_from_both())
        assert task_count() == before + len(ids)  # not twice as many
        listed = [t["id"] for t in api.get("/queue").json() if t["label"] == "sent-twice"]
        assert sorted(listed) == ids
    finally:
        for task_id in ids:
            api.delete(f"/queue/{task_id}")
        api.post("/queue/resume")
        engine.dispose()


def test_a_task_deleted_while_its_run_is_being_created_is_answered_at_once_and_never_stays(
    api: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete of an add whose run Prefect is creating is answered without waiting for it; the
    run is deleted once it exists and never listed. If the sender stops in between (the API
    killed), the next sender deletes it: the withdrawal is kept in the domain database.

    A domain database of its own: the module's API would otherwise send these adds too."""
    db_url = f"sqlite:///{tmp_path / 'queue.db'}"
    engine = ready_engine(db_url)
    views = TaskViews(engine, TaskIds(engine), swap_seconds=60)
    create = gateway.create_held_runs
    entered, release = asyncio.Event(), asyncio.Event()
    then: list[Any] = [create]  # what the held-back create does once released

    async def held_back(*args: Any, **kwargs: Any) -> Any:
        entered.set()  # the add is on its way to Prefect now
        await release.wait()
        return await then[0](*args, **kwargs)

    async def dies_after_create(*args: Any, **kwargs: Any) -> Any:
        await create(*args, **kwargs)
        raise asyncio.CancelledError  # the API process ends right after Prefect made the run

    async def runs_of(client: PrefectClient, task_id: int) -> list[str]:
        marker = views.ids.flow_run_for(task_id)
        assert marker is not None
        return await gateway.run_ids_tagged(client, add_key_tag(marker))

    async def listed(client: PrefectClient) -> set[int]:
        return {t.id for t in await views.listing(client, include_done=True, limit=1000)}

    async def delete_while_created(
        client: PrefectClient, released_as: Any
    ) -> tuple[int, asyncio.Task[None]]:
        submission = await check_submission(client, SubmitRequest("pool_gen", {"n": 10}))
        task_id = views.outbox.put(submission, depends_on=[], ticket=CreateTicket())
        entered.clear()
        release.clear()
        then[0] = released_as
        monkeypatch.setattr(gateway, "create_held_runs", held_back)
        sender = asyncio.create_task(views.outbox.send_forever(client))
        await asyncio.wait_for(entered.wait(), 30)
        assert views.outbox.withdraw(task_id) is True  # answered, the create still under way
        assert task_id not in await listed(client)
        monkeypatch.setattr(gateway, "create_held_runs", create)
        release.set()
        return task_id, sender

    async def scenario() -> None:
        async with get_client() as client:
            first, sender = await delete_while_created(client, create)
            await _until_sent(db_url, first, sender)
            assert await runs_of(client, first) == []  # made, then deleted

            crashed, sender = await delete_while_created(client, dies_after_create)
            await asyncio.gather(sender, return_exceptions=True)
            assert crashed in in_outbox(db_url)  # the withdrawal outlives the process
            assert len(await runs_of(client, crashed)) == 1  # and the run exists
            assert crashed not in await listed(client)  # but is not shown
            views.outbox = Outbox(engine, views.ids)  # the API started again
            await _until_sent(
                db_url, crashed, asyncio.create_task(views.outbox.send_forever(client))
            )
            assert await runs_of(client, crashed) == []
            for task_id in (first, crashed):
                with pytest.raises(NotFound):
                    await views.run_of(client, task_id)

    api.post("/queue/pause")  # the manager's releases would not start them
    try:
        asyncio.run(scenario())
    finally:
        api.post("/queue/resume")
        engine.dispose()


async def _until_sent(db_url: str, task_id: int, sender: asyncio.Task[None]) -> None:
    """Until the sender has carried out the add (its row is gone), then stop the sender."""
    deadline = time.monotonic() + 60
    try:
        while task_id in in_outbox(db_url):
            assert time.monotonic() < deadline, f"task {task_id} stayed in the outbox"
            assert not sender.done(), sender
            await asyncio.sleep(0.1)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
