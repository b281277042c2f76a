"""A task flow with a model host: "ensure the model, then run" against a host process and its
real model server. The server dies mid-task and is restarted: the run goes on and stores
exactly one answer per key; a server that cannot start fails the run as critical, with its
output in the message."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import Engine

from biasbench.errors import ModelServerFailed, is_critical
from biasbench.llm.model_host import ModelHostClient
from flows.benchmark import benchmark
from tests.flows.conftest import MODEL
from tests.support.model_host import model_entry, model_host, write_catalogue
from tests.support.rows import result_keys


def use_host(monkeypatch: pytest.MonkeyPatch, catalogue: Path, socket: str) -> None:
    monkeypatch.setenv("MODEL_CATALOGUE", str(catalogue))
    monkeypatch.setenv("BIASBENCH_MODEL_HOSTS", socket)


def test_a_server_dying_mid_task_is_restarted_and_every_key_is_answered_once(
    engine: Engine, small_dataset: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "crashed-once"
    options = f"--crash-after 30 --crash-marker {marker}"
    catalogue = write_catalogue(tmp_path / "models.toml", model_entry(MODEL, options=options))
    with model_host(tmp_path, catalogue) as (_, socket, _state):
        use_host(monkeypatch, catalogue, socket)
        result = asyncio.run(
            benchmark(dataset_id=small_dataset, model_name=MODEL, llm="vllm", batch_size=4)
        )
        loads = asyncio.run(ModelHostClient(socket).status())["loads"]

    assert marker.exists()  # the server did die mid-task
    assert [load["how"] for load in loads] == ["cold start", "restart"]
    keys = result_keys(engine, result.run_id)
    assert len(keys) == len(set(keys)) == result.summary["planned"]
    assert result.summary["error_share"] == 0


def test_a_model_server_that_cannot_start_fails_the_run_as_critical_with_its_output(
    engine: Engine, small_dataset: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = '{python} -c "print(\\"weights not found\\"); raise SystemExit(1)"'
    catalogue = write_catalogue(tmp_path / "models.toml", model_entry(MODEL, serve=broken))
    with model_host(tmp_path, catalogue) as (_, socket, _state):
        use_host(monkeypatch, catalogue, socket)
        state = asyncio.run(
            benchmark(dataset_id=small_dataset, model_name=MODEL, llm="vllm", return_state=True)
        )
    assert state.is_failed() and state.name == "Model server failed to start"
    error = state.result(raise_on_failure=False)
    assert isinstance(error, ModelServerFailed) and is_critical(error)
    assert "weights not found" in str(error)
