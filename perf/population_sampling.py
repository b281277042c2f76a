"""How long pool_gen's own work takes: drawing a pool and writing it to SQLite, per profile.

    .venv/bin/python perf/population_sampling.py        # --sizes 20000 200000 1000000

For each size, on a fresh SQLite file in a temporary directory (migrated first, not timed):
draw the pool with `biasbench.population.pool.draw_pool` (seed 1, temperature 0, the flow's
default), then write it as `flows/pool_gen.py` does (`ensure_reference_data` + `store_pool` in one
transaction, committed). Both profiles run in the same process one after the other, `world` as
the baseline measured in the same run; the issue's figures for today's world profile (before
this change: frozen-dataclass drafts and the ORM's bulk insert with RETURNING) are printed next
to them. The comparison with the population (the dataset report) is timed on its own line.
Targets for `de`: 20,000 in at most 1 s and 1,000,000 in at most 30 s, the write included.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from itertools import pairwise
from pathlib import Path

from biasbench.datasets import ensure_reference_data, store_pool
from biasbench.db.engine import ready_engine, session_scope
from biasbench.population.compare import compare_pool
from biasbench.population.pool import draw_pool
from biasbench.population.profiles import load_profile

TODAY = {20_000: (0.05, 0.54), 200_000: (0.62, 4.81)}
"""The world profile before this change, as issue 17 reports it: (sampling s, write s)."""


def measure(population: str, n: int, workdir: Path) -> list[tuple[float, float]]:
    """(wall s, CPU s) of the draw, the write and the report's comparison."""
    engine = ready_engine(f"sqlite:///{workdir / f'{population}-{n}.db'}")
    profile = load_profile(population)
    marks = [(time.perf_counter(), time.process_time())]
    drafts = draw_pool(population, n, temperature=0.0, age_from=None, age_to=None, seed=1)
    marks.append((time.perf_counter(), time.process_time()))
    with session_scope(engine) as session:
        ensure_reference_data(session)
        store_pool(session, drafts, seed=1, config={}, flow_run_id=None, population=profile)
    marks.append((time.perf_counter(), time.process_time()))
    compare_pool(profile, drafts, None, None)
    marks.append((time.perf_counter(), time.process_time()))
    engine.dispose()
    return [(b[0] - a[0], b[1] - a[1]) for a, b in pairwise(marks)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000, 1_000_000])
    args = parser.parse_args()
    print(f"1-min load before: {os.getloadavg()[0]:.2f}")
    print("wall seconds (CPU seconds of this process in brackets; the machine is shared)")
    print(f"{'profile':<8} {'n':>9} {'draw':>13} {'write':>13} {'draw+write':>13} {'report':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            if n in TODAY:
                draw, write = TODAY[n]
                print(f"{'today':<8} {n:>9,} {draw:>13.2f} {write:>13.2f} {draw + write:>13.2f}")
            totals = {}
            for population in ("world", "de"):
                (dw, dc), (ww, wc), (rw, rc) = measure(population, n, Path(tmp))
                totals[population] = dw + ww
                print(
                    f"{population:<8} {n:>9,} {dw:>6.2f} ({dc:>4.2f}) {ww:>6.2f} ({wc:>4.2f}) "
                    f"{dw + ww:>6.2f} ({dc + wc:>4.2f}) {rw:>5.2f} ({rc:>4.2f})"
                )
            ratio = totals["de"] / totals["world"]
            print(f"{'':<19}de / world (draw+write, wall): {ratio:.2f}")
    print(f"1-min load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
