"""The model host of a GPU slot, as a process, with real model server processes started from
their catalogue's serve commands: cold start, reuse, swap by sleep and by stop, a server in use
never evicted, healing, failures that say why, the idle TTL, and no orphans.

Timings are not asserted: what is checked is what a user sees (how a model got ready, which
server processes exist, what a failure says)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from prefect import get_client

from biasbench.errors import BiasBenchError, ModelServerFailed
from biasbench.llm.model_host import ModelHostClient
from biasbench.llm.openai_compat import OpenAICompatClient
from biasbench.queue import gateway
from deployments.model_host_channel import variable_name
from deployments.model_server import gpu_free_gb
from tests.support.model_host import (
    TEST_NVML,
    alive,
    model_entry,
    model_host,
    server_pid,
    write_catalogue,
)
from tests.support.slow_link import slow_link

HI = [{"role": "user", "content": "hi"}]


async def ask(base_url: str, model: str, times: int = 1) -> list[str]:
    async with OpenAICompatClient(
        base_url=base_url, model_name=model, in_flight=1, unreachable_after=60
    ) as client:
        return [await client.chat(HI, max_tokens=8) for _ in range(times)]


def wait_until(condition, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_cold_start_reuse_and_swaps_by_sleep_and_by_stop(tmp_path: Path) -> None:
    catalogue = write_catalogue(
        tmp_path / "models.toml",
        model_entry("alpha", sleep=True),
        model_entry("beta", sleep=False),
    )

    async def night(host: ModelHostClient, state: Path) -> list[str]:
        hows = []
        async with host.model("alpha") as first:
            hows.append(first.how)
            assert await ask(first.base_url, "alpha")
        alpha_pid = server_pid(state, "alpha")
        async with host.model("alpha") as again:
            hows.append(again.how)
            assert again.base_url == first.base_url
        async with host.model("beta") as beta:
            hows.append(beta.how)
            status = await host.status()
            assert status["servers"]["alpha"] == "asleep (level 1)"
            assert await ask(beta.base_url, "beta")
        beta_pid = server_pid(state, "beta")
        async with host.model("alpha") as woken:
            hows.append(woken.how)
            assert await ask(woken.base_url, "alpha")
            assert server_pid(state, "alpha") == alpha_pid  # the same process, woken
            assert not alive(beta_pid)  # beta cannot sleep: it was stopped
        return hows

    with model_host(tmp_path, catalogue) as (_, socket, state):
        hows = asyncio.run(night(ModelHostClient(socket), state))
        loads = asyncio.run(ModelHostClient(socket).status())["loads"]
    assert hows == ["cold start", "reused", "cold start", "woken"]
    assert [load.get("swapped") for load in loads] == [
        None,
        None,
        "alpha put to sleep (level 1)",
        "beta stopped",
    ]


def test_unknown_models_are_refused_naming_the_known_ones(tmp_path: Path) -> None:
    catalogue = write_catalogue(tmp_path / "models.toml", model_entry("alpha"))

    async def ask_for_gamma(host: ModelHostClient) -> None:
        async with host.model("gamma"):
            pass

    with (
        model_host(tmp_path, catalogue) as (_, socket, _state),
        pytest.raises(BiasBenchError, match="known models: alpha"),
    ):
        asyncio.run(ask_for_gamma(ModelHostClient(socket)))


def test_a_server_in_use_is_not_evicted_and_waits_for_its_task(tmp_path: Path) -> None:
    catalogue = write_catalogue(tmp_path / "models.toml", model_entry("alpha"), model_entry("beta"))

    async def two_tasks(host: ModelHostClient) -> list[str]:
        events: list[str] = []
        async with host.model("alpha") as alpha:

            async def other_task() -> None:
                async with host.model("beta"):
                    events.append("beta loaded")

            other = asyncio.create_task(other_task())
            await asyncio.sleep(1)  # the other task asks meanwhile
            assert await ask(alpha.base_url, "alpha", times=3)
            events.append("alpha answered while beta waited")
        await other
        return events

    with model_host(tmp_path, catalogue) as (_, socket, _state):
        events = asyncio.run(two_tasks(ModelHostClient(socket)))
    assert events == ["alpha answered while beta waited", "beta loaded"]


def test_a_server_that_dies_mid_task_is_restarted_and_the_task_goes_on(tmp_path: Path) -> None:
    marker = tmp_path / "crashed-once"
    crash = f"--crash-after 4 --crash-marker {marker}"
    catalogue = write_catalogue(tmp_path / "models.toml", model_entry("alpha", options=crash))

    async def task(host: ModelHostClient, state: Path) -> tuple[int, int, int]:
        async with host.model("alpha") as alpha:
            first_pid = server_pid(state, "alpha")
            answers = await ask(alpha.base_url, "alpha", times=10)
            return len(answers), first_pid, server_pid(state, "alpha")

    with model_host(tmp_path, catalogue) as (_, socket, state):
        answered, first, second = asyncio.run(task(ModelHostClient(socket), state))
        status = asyncio.run(ModelHostClient(socket).status())
    assert marker.exists()  # it did crash
    assert answered == 10
    assert first != second
    assert [load["how"] for load in status["loads"]] == ["cold start", "restart"]


def test_a_server_that_keeps_dying_fails_the_start_with_its_output(tmp_path: Path) -> None:
    broken = '{python} -c "print(\\"CUDA driver not found\\"); raise SystemExit(3)"'
    catalogue = write_catalogue(tmp_path / "models.toml", model_entry("alpha", serve=broken))

    async def start(host: ModelHostClient) -> None:
        async with host.model("alpha"):
            pass

    with (
        model_host(tmp_path, catalogue) as (_, socket, _state),
        pytest.raises(ModelServerFailed) as failed,
    ):
        asyncio.run(start(ModelHostClient(socket)))
    message = str(failed.value)
    assert message.startswith("Model server failed to start")
    assert "exit status 3" in message
    assert "CUDA driver not found" in message


def test_a_server_never_ready_within_its_start_timeout_fails_with_its_output(
    tmp_path: Path,
) -> None:
    catalogue = write_catalogue(
        tmp_path / "models.toml", model_entry("alpha", load=300, start_timeout=2)
    )

    async def start(host: ModelHostClient) -> None:
        async with host.model("alpha"):
            pass

    with model_host(tmp_path, catalogue) as (_, socket, state):
        with pytest.raises(ModelServerFailed) as failed:
            asyncio.run(start(ModelHostClient(socket)))
        assert not list(state.glob("*.pid"))  # the server was stopped
    assert "not ready within 2 s" in str(failed.value)
    assert "loading alpha for 300 s" in str(failed.value)


def test_idle_servers_are_stopped_after_the_ttl(tmp_path: Path) -> None:
    catalogue = write_catalogue(tmp_path / "models.toml", model_entry("alpha"))

    async def use(host: ModelHostClient) -> None:
        async with host.model("alpha") as alpha:
            await ask(alpha.base_url, "alpha")

    with model_host(tmp_path, catalogue, idle_ttl=1) as (_, socket, state):
        asyncio.run(use(ModelHostClient(socket)))
        pid = server_pid(state, "alpha")
        # The host says so once the server is stopped (its process may die a moment earlier).
        wait_until(lambda: asyncio.run(ModelHostClient(socket).status())["servers"] == {})
        status = asyncio.run(ModelHostClient(socket).status())
    assert not alive(pid)
    assert status["active"] is None


def test_a_killed_host_leaves_no_server_and_the_next_host_stops_a_leftover(
    tmp_path: Path,
) -> None:
    catalogue = write_catalogue(tmp_path / "models.toml", model_entry("alpha"))
    with model_host(tmp_path, catalogue) as (host, socket, state):
        asyncio.run(_use_once(socket, "alpha"))
        pid = server_pid(state, "alpha")
        os.kill(host.pid, signal.SIGKILL)
        wait_until(lambda: not alive(pid))  # PR_SET_PDEATHSIG

    # A server that escaped its host (here: a process the pid file names, started apart).
    # The next host finds it by its pid file and stops it before it serves anything.
    import subprocess
    import sys

    stray = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )
    from deployments.process_tree import start_time

    (state / "alpha.pid").write_text(f"{stray.pid} {start_time(stray.pid)}\n")
    with model_host(tmp_path, catalogue):
        wait_until(lambda: stray.poll() is not None)
    assert not (state / "alpha.pid").exists()


def test_a_killed_task_leaves_the_server_running_for_the_next_one(tmp_path: Path) -> None:
    """A cancelled task's process is killed: its lease lapses, its server stays."""
    import subprocess
    import sys

    from tests.support.stack import REPO

    catalogue = write_catalogue(tmp_path / "models.toml", model_entry("alpha"), model_entry("beta"))
    holder = (
        "import asyncio, sys\n"
        "from biasbench.llm.model_host import ModelHostClient\n"
        "async def main():\n"
        "    async with ModelHostClient(sys.argv[1]).model('alpha'):\n"
        "        print('LOADED', flush=True)\n"
        "        await asyncio.sleep(600)\n"
        "asyncio.run(main())\n"
    )
    with model_host(tmp_path, catalogue) as (_, socket, state):
        task = subprocess.Popen(
            [sys.executable, "-c", holder, socket], cwd=REPO, stdout=subprocess.PIPE
        )
        assert task.stdout is not None
        assert task.stdout.readline().strip() == b"LOADED"
        pid = server_pid(state, "alpha")
        task.kill()
        task.wait()

        async def next_tasks(host: ModelHostClient) -> list[str]:
            async with host.model("alpha") as again:
                assert await ask(again.base_url, "alpha")
                first = again.how
            async with host.model("beta") as beta:  # once the dead task's lease has lapsed
                return [first, beta.how]

        hows = asyncio.run(next_tasks(ModelHostClient(socket)))
        assert server_pid(state, "beta")
    assert hows == ["reused", "cold start"]
    assert not alive(pid)  # alpha could not sleep: stopped for beta, not by the kill


def test_a_server_lost_for_good_mid_task_fails_the_task_with_its_output(tmp_path: Path) -> None:
    """It dies mid-task and every restart fails: the task's requests stop waiting and it fails
    as "Model server failed to start", with what the last start printed."""
    marker = tmp_path / "crashed"
    server = (
        f"{{python}} -m tests.support.openai_server --port {{port}} --workers 1 --answers fake "
        f"--model alpha --load-seconds 0.3 --crash-after 3 --crash-marker {marker}"
    )
    serve = f'sh -c "test -e {marker} && echo GPU fell off the bus && exit 4; exec {server}"'
    catalogue = write_catalogue(tmp_path / "models.toml", model_entry("alpha", serve=serve))

    async def task(host: ModelHostClient) -> None:
        async with host.model("alpha") as alpha:
            await ask(alpha.base_url, "alpha", times=10)

    with (
        model_host(tmp_path, catalogue) as (_, socket, _state),
        pytest.raises(ModelServerFailed) as failed,
    ):
        asyncio.run(task(ModelHostClient(socket)))
    assert marker.exists()
    assert "exit status 4" in str(failed.value)
    assert "GPU fell off the bus" in str(failed.value)


def test_a_host_that_stops_cleanly_takes_back_the_model_it_published(
    prefect_server: str, tmp_path: Path
) -> None:
    """/queue/stats' gpu_models and the manager read the hosts' variables: a host that is gone
    must not show a model there."""
    catalogue = write_catalogue(tmp_path / "models.toml", model_entry("alpha"))
    slot = 7  # a slot of its own: no other test's host publishes under this name
    variable = variable_name(slot)

    with model_host(tmp_path, catalogue, publish_to=prefect_server, slot=slot) as (
        host,
        socket,
        _state,
    ):
        asyncio.run(_use_once(socket, "alpha"))
        wait_until(lambda: published().get(variable, {}).get("model") == "alpha")
        host.send_signal(signal.SIGTERM)
        assert host.wait(30) == 0
    assert variable not in published()


def test_a_new_model_is_published_before_its_task_gets_the_server(
    prefect_server: str, tmp_path: Path
) -> None:
    """The manager picks the next task by the model each GPU holds (grouping): a task must not
    be able to end before its model is published, even when the Prefect server answers slowly
    (CI: a publish that lagged behind a 5 s task had it group by the old model)."""
    catalogue = write_catalogue(tmp_path / "models.toml", model_entry("alpha"))
    slot = 8  # a slot of its own: no other test's host publishes under this name
    variable = variable_name(slot)

    with (
        slow_link(prefect_server, delay=1.0) as slow_api,
        model_host(tmp_path, catalogue, publish_to=slow_api, slot=slot) as (_, socket, _state),
    ):
        asyncio.run(_use_once(socket, "alpha"))
        assert published().get(variable, {}).get("model") == "alpha"
    asyncio.run(_unset(variable))  # a host stopping behind a slow link may not get to it


async def _use_once(socket: str, model: str) -> None:
    """As a task does: get the model's server from the host, then give it back."""
    async with ModelHostClient(socket).model(model):
        pass


async def _unset(name: str) -> None:
    from prefect.variables import Variable

    await Variable.aunset(name)


def published() -> dict[str, dict[str, Any]]:
    """The hosts' states as /queue/stats and the manager read them."""

    async def read() -> dict[str, dict[str, Any]]:
        async with get_client() as client:
            return await gateway.model_hosts(client)

    return asyncio.run(read())


def test_without_a_gpu_the_memory_check_is_skipped_and_the_log_says_so_once(
    tmp_path: Path,
) -> None:
    if gpu_free_gb() is not None:
        pytest.skip("a GPU is visible through NVML here: the check runs")
    catalogue = write_catalogue(tmp_path / "models.toml", model_entry("alpha"), model_entry("beta"))

    async def two_cold_starts(host: ModelHostClient) -> list[str]:
        hows = []
        for model in ("alpha", "beta"):  # beta cannot sleep: alpha is stopped, beta started
            async with host.model(model) as loaded:
                hows.append(loaded.how)
        return hows

    with model_host(tmp_path, catalogue) as (_, socket, _state):
        hows = asyncio.run(two_cold_starts(ModelHostClient(socket)))
    assert hows == ["cold start", "cold start"]
    log = (tmp_path / "model-host.log").read_text()
    assert log.count("the free GPU memory check is skipped") == 1, log


def test_a_model_that_does_not_fit_the_gpus_free_memory_is_refused_with_both_numbers(
    tmp_path: Path,
) -> None:
    """Before a start the host reads the free memory of its GPU (the first of
    CUDA_VISIBLE_DEVICES) through NVML, here the test stand-in for a GPU 0 with 40 GB free and a
    GPU 1 with 12 GB: on GPU 1 a 30 GB model is refused at once, naming 30 and 12; an 8 GB one
    starts."""
    catalogue = write_catalogue(
        tmp_path / "models.toml",
        model_entry("big", gpu_memory_gb=30),
        model_entry("small", gpu_memory_gb=8),
    )
    gpu_1 = {
        "PYTHONPATH": os.pathsep.join([str(TEST_NVML), os.environ.get("PYTHONPATH", "")]),
        "TEST_GPU_FREE_GB": "40,12",
        "CUDA_VISIBLE_DEVICES": "1",
    }

    async def ask_for_both(host: ModelHostClient) -> tuple[str, str]:
        with pytest.raises(BiasBenchError) as refused:
            async with host.model("big"):
                pass
        async with host.model("small") as loaded:
            return str(refused.value), loaded.how

    with model_host(tmp_path, catalogue, env=gpu_1) as (_, socket, state):
        refusal, small = asyncio.run(ask_for_both(ModelHostClient(socket)))
        assert not (state / "big.pid").exists(), (
            "a server was started for the model that does not fit"
        )
    assert "big needs 30 GB of GPU memory; 12.0 GB are free" in refusal, refusal
    assert small == "cold start"
    assert "the free GPU memory check is skipped" not in (tmp_path / "model-host.log").read_text()
