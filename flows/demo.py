"""The demo pipeline behind `make run`: pool → balanced → attrgen → benchmark on the fake LLM.

Until the queue manager exists this runs the four task flows as subflows of one parent flow."""

from __future__ import annotations

import asyncio
import sys

from prefect import flow
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

from biasbench.settings import Settings
from flows.attrgen import attrgen
from flows.balanced_gen import balanced_gen
from flows.benchmark import benchmark
from flows.pool_gen import pool_gen


@flow(name="demo-pipeline")
async def demo_pipeline(
    pool_size: int = 2_000, balanced_size: int = 60, model_name: str = "fake-model"
) -> dict[str, int]:
    pool = pool_gen(n=pool_size, seed=7)
    balanced = balanced_gen(dataset_id=pool.dataset_id, n=balanced_size, seed=42)
    attrs = await attrgen(
        dataset_id=balanced.dataset_id, model_name=model_name, llm="fake", batch_size=16
    )
    bench = await benchmark(
        dataset_id=balanced.dataset_id,
        attrgen_run_id=attrs.run_id,
        model_name=model_name,
        llm="fake",
        batch_size=32,
        scale_mode="random50",
        dual_fraction=0.2,
    )
    return {
        "pool_dataset_id": pool.dataset_id,
        "balanced_dataset_id": balanced.dataset_id,
        "attrgen_run_id": attrs.run_id,
        "benchmark_run_id": bench.run_id,
    }


def main() -> int:
    ids = asyncio.run(demo_pipeline())
    settings = Settings()
    print("\nDemo pipeline finished.")
    for name, value in ids.items():
        print(f"  {name:22} {value}")
    print(f"  {'domain database':22} {settings.db_url}")
    ui = PREFECT_UI_URL.value() or PREFECT_API_URL.value()
    print(
        f"  {'Prefect runs':22} {ui or 'run `prefect server start` and open http://127.0.0.1:4200/runs'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
