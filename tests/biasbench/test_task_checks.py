"""Each task type's refusals, as submissions and flows both run them, against a real database."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine

from biasbench.datasets import ensure_reference_data, store_pool
from biasbench.db.engine import session_scope
from biasbench.errors import BiasBenchError
from biasbench.personas.sampling import sample_pool
from biasbench.population.profiles import load_profile
from biasbench.task_checks import check_task

WORLD = load_profile("world")


@pytest.fixture
def pool_id(engine: Engine) -> int:
    with session_scope(engine) as session:
        ensure_reference_data(session)
        pool = store_pool(
            session, sample_pool(5, seed=1), seed=1, config={}, flow_run_id=None, population=WORLD
        )
        return pool.id


M = {"model_name": "m"}
T0 = {"n": 5, "temperature": 0.0}


@pytest.mark.parametrize(
    ("task_type", "parameters", "field"),
    [
        ("pool_gen", {"n": 5, "temperature": 0.1, "age_from": 60, "age_to": 30}, "age_from"),
        ("pool_gen", {"n": 5, "temperature": float("nan")}, "temperature"),
        ("pool_gen", {"n": 5, "temperature": 0.1, "seed": 2**64}, "seed"),
        ("pool_gen", {"n": 5, "temperature": 0.1, "age_to": 10}, "age_to"),
        ("pool_gen", {"n": 5, "population": "mars"}, "population"),
        ("pool_gen", {"n": 5, "population": None}, "population"),
        ("pool_gen", {**T0, "temperatures": {"shoe_size": 1.0}}, "temperatures"),
        ("pool_gen", {**T0, "temperatures": {"origin": 11}}, "temperatures"),
        ("pool_gen", {**T0, "exclude": {"religion": ["Pastafarians"]}}, "exclude"),
        ("pool_gen", {**T0, "exclude": {"gender": ["male", "female", "diverse"]}}, "exclude"),
        ("pool_gen", {**T0, "population": "world", "exclude": {"gender": ["male"]}}, "exclude"),
        ("pool_gen", {**T0, "age_from": 101}, "age_from"),
        ("balanced_gen", {"n": 2, "seed": 1}, "dataset_id"),
        ("balanced_gen", {"dataset_id": "POOL", "n": 2, "axes": ["shoe_size"]}, "axes"),
        ("balanced_gen", {"dataset_id": "POOL", "n": 2, "axes": []}, "axes"),
        ("balanced_gen", {"dataset_id": "POOL", "n": 6}, "n"),
        ("balanced_gen", {"dataset_id": 2**64, "n": 1}, "dataset_id"),
        ("balanced_gen", {"dataset_id": 999, "n": 1}, "dataset_id"),
        ("attrgen", {**M}, "dataset_id"),
        ("attrgen", {**M, "dataset_id": "POOL", "vllm_base_url": "not a url"}, "vllm_base_url"),
        ("attrgen", {**M, "dataset_id": "POOL", "vllm_base_url": "ftp://x/v1"}, "vllm_base_url"),
        ("attrgen", {**M, "dataset_id": "POOL", "resume_run_id": 5}, "resume_run_id"),
        ("benchmark", {**M, "dataset_id": "POOL", "attrgen_run_id": 7}, "attrgen_run_id"),
        ("benchmark", {**M, "dataset_id": "POOL", "model_name": "x" * 201}, "model_name"),
    ],
)
def test_refusals_name_the_parameter(
    engine: Engine, pool_id: int, task_type: str, parameters: dict[str, Any], field: str
) -> None:
    given = {k: pool_id if v == "POOL" else v for k, v in parameters.items()}
    with session_scope(engine) as session, pytest.raises(BiasBenchError) as refused:
        check_task(task_type, given, session=session)
    assert refused.value.field == field


def test_what_an_upstream_fills_in_is_neither_required_nor_looked_up(engine: Engine) -> None:
    with session_scope(engine) as session:
        check_task("benchmark", M, session=session, filled_by_upstream={"dataset_id"})
        check_task(
            "balanced_gen", {"n": 10, "seed": 1}, session=session, filled_by_upstream={"dataset_id"}
        )


def test_good_parameters_pass(engine: Engine, pool_id: int) -> None:
    with session_scope(engine) as session:
        check_task(
            "balanced_gen", {"dataset_id": pool_id, "n": 5, "axes": ["gender"]}, session=session
        )
        check_task(
            "benchmark",
            {**M, "dataset_id": pool_id, "vllm_base_url": "http://127.0.0.1:8000/v1"},
            session=session,
        )


def _catalogue(tmp_path: Any) -> Any:
    from biasbench.models_catalogue import load_catalogue

    path = tmp_path / "models.toml"
    path.write_text(
        '[models.alpha]\nserve = "{python} -m tests.support.openai_server --port {port}"\n'
        '[models.beta]\nserve = "{python} -m tests.support.openai_server --port {port}"\n'
        "supports_sleep = true\n"
    )
    return load_catalogue(path)


def test_with_a_catalogue_an_unknown_model_is_refused_naming_the_known_ones(
    tmp_path: Any,
) -> None:
    catalogue = _catalogue(tmp_path)
    given = {"model_name": "gamma", "dataset_id": 1}
    with pytest.raises(BiasBenchError) as refused:
        check_task("benchmark", given, session=None, catalogue=catalogue)
    assert refused.value.field == "model_name"
    assert "alpha, beta" in refused.value.message
    # A known model passes; so does any model on a server the task names itself.
    check_task("benchmark", {**given, "model_name": "beta"}, session=None, catalogue=catalogue)
    own = {**given, "vllm_base_url": "http://127.0.0.1:9/v1"}
    check_task("benchmark", own, session=None, catalogue=catalogue)
    # Without a catalogue, today's behaviour: any model name.
    check_task("benchmark", given, session=None)


def test_a_broken_catalogue_is_refused_naming_the_file_and_field(tmp_path: Any) -> None:
    from biasbench.models_catalogue import load_catalogue

    path = tmp_path / "models.toml"
    path.write_text('[models.alpha]\nserve = "x"\nstart_timeout = -1\n')
    with pytest.raises(BiasBenchError) as refused:
        load_catalogue(path)
    assert "models.alpha.start_timeout" in str(refused.value)
    assert str(path) in str(refused.value)
