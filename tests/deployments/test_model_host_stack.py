"""The whole stack with a model catalogue: `serve` starts a model host beside its GPU worker, a
benchmark submitted without a server gets its model from the host, and SIGKILLing `serve`
leaves no model server behind."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

from biasbench.models_catalogue import load_catalogue
from tests.deployments.test_supervision import SERVE, dataset_id, serve_env, submit_one
from tests.support.model_host import alive, model_entry, server_pid, write_catalogue
from tests.support.stack import REPO

__all__ = ["dataset_id"]  # the fixture, used by the test below

MODEL = "served-model"


def test_serve_hosts_the_model_and_a_sigkilled_stack_leaves_no_model_server(
    prefect_server: str, db_url: str, tmp_path: Path, dataset_id: int
) -> None:
    catalogue = write_catalogue(
        tmp_path / "models.toml", model_entry(MODEL, options="--latency 0.3")
    )
    assert load_catalogue(catalogue) is not None
    logs = tmp_path / "logs"
    env = {**serve_env(prefect_server, db_url), "MODEL_CATALOGUE": str(catalogue)}
    with (tmp_path / "serve.log").open("wb") as out:
        serve = subprocess.Popen(
            [*SERVE, "--api-port", "0", "--logs", str(logs)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file = logs / "model-host-0" / f"{MODEL}.pid"
    try:
        deadline = time.monotonic() + 180
        while (
            not (logs / "model-host-0.log").exists()
            or "READY" not in (logs / "model-host-0.log").read_text()
        ):
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "the model host did not start"
            time.sleep(0.5)
        config = {"dataset_id": dataset_id, "model_name": MODEL, "llm": "vllm", "batch_size": 1}
        asyncio.run(submit_one("benchmark", config, "hosted benchmark"))
        while not pid_file.exists():
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, (logs / "model-host-0.log").read_text()
            time.sleep(0.5)
        server = server_pid(logs / "model-host-0", MODEL)
        assert alive(server)
    finally:
        os.kill(serve.pid, signal.SIGKILL)  # serve alone: its children must follow it
        serve.wait(30)
    deadline = time.monotonic() + 60
    while alive(server):
        assert time.monotonic() < deadline, f"the model server (pid {server}) outlived serve"
        time.sleep(0.2)
    host_log = (logs / "model-host-0.log").read_text()
    assert f"{MODEL}: starting on port" in host_log
