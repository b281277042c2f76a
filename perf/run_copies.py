"""Copies of finished queue runs made in SQL inside Prefect's PostgreSQL database, for benchmarks
that need a long history fast (perf/queue_api_latency.py: 100,000 runs through Prefect's route
code would take about 28 minutes at 60 runs/s; these copies take seconds).

Each copy is one finished run (COMPLETED, FAILED or CANCELLED, tag `llm-queue`) made by the
route code, cycled through in creation order, written again with every column of its
`flow_run` row as the original has it except:
- `id`: a new `gen_random_uuid()`;
- the times (`created`, `updated`, `state_timestamp`, `expected_start_time`,
  `next_scheduled_start_time`, `start_time`, `end_time`): shifted back by k x (the originals'
  creation span + 1 minute) for the k-th copy of a run, so that copies never tie with each
  other or the originals and form an older history in front of them;
- `state_id`: its own copy of the original's current state;
- `idempotency_key`: kept NULL (the route leaves it NULL); a key would get the copy's id
  appended, as `(flow_id, idempotency_key)` is unique.
Every `flow_run_state` row of the original is copied too, with a new id, the copy's
`flow_run_id` (also inside `state_details`) and its times shifted the same way. So the
denormalised state columns (`state_type`, `state_name`, `state_timestamp`, the run's times) agree
with the copy's current state row, as the server keeps them; name, parameters, tags, labels,
flow, deployment, work queue and the rest are the original's. Nothing else refers to a finished
queue run (no task runs, logs, artifacts or events: the originals' events stayed in the
populating process), so nothing else is copied.

Both tables are then VACUUM ANALYZEd, as autovacuum would after such an insert, so that the
planner has their statistics and no autovacuum starts during a measurement."""

from __future__ import annotations

import time

from sqlalchemy import Connection, create_engine, text

CHUNK = 20_000
FINAL = "('COMPLETED', 'FAILED', 'CANCELLED')"
SHIFTED = {
    "created",
    "updated",
    "state_timestamp",
    "expected_start_time",
    "next_scheduled_start_time",
    "start_time",
    "end_time",
    "timestamp",
}


def _columns(connection: Connection, table: str) -> list[str]:
    rows = connection.execute(
        text(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = :table "
            "ORDER BY ordinal_position"
        ),
        {"table": table},
    )
    return [row[0] for row in rows]


def _select(columns: list[str], row: str, special: dict[str, str]) -> str:
    def value(column: str) -> str:
        if column in special:
            return special[column]
        if column in SHIFTED:
            return f"{row}.{column} - c.shift"
        return f"{row}.{column}"

    return ", ".join(value(c) for c in columns)


def multiply(url: str, copies: int, tag: str = "llm-queue") -> float:
    """Add `copies` copies of the finished runs tagged `tag` (see the module's docstring) to
    Prefect's database at `url` (a synchronous SQLAlchemy URL); returns the seconds taken."""
    began = time.monotonic()
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            runs, states = _columns(connection, "flow_run"), _columns(connection, "flow_run_state")
            tagged = f"r.tags @> CAST(:tag AS jsonb) AND r.state_type IN {FINAL}"
            connection.execute(
                text(
                    f"""
                    CREATE TEMP TABLE copy_of ON COMMIT DROP AS
                    WITH source AS (
                        SELECT r.id, row_number() OVER (ORDER BY r.created, r.id) - 1 AS rn
                        FROM flow_run r WHERE {tagged}
                    ), n AS (SELECT count(*) AS f FROM source),
                    span AS (
                        SELECT max(r.created) - min(r.created) + interval '1 minute' AS s
                        FROM flow_run r WHERE {tagged}
                    )
                    SELECT g AS seq, s.id AS old_id, gen_random_uuid() AS new_id,
                           (g / n.f + 1) * span.s AS shift
                    FROM generate_series(0, :copies - 1) AS g
                    CROSS JOIN n CROSS JOIN span
                    JOIN source s ON s.rn = g % n.f
                    """
                ),
                {"tag": f'["{tag}"]', "copies": copies},
            )
            made = connection.execute(text("SELECT count(*) FROM copy_of")).scalar_one()
            if made != copies:
                raise RuntimeError(f"{made} copies planned, {copies} asked (no finished runs?)")
            connection.execute(
                text(
                    """
                    CREATE TEMP TABLE state_copy ON COMMIT DROP AS
                    SELECT c.seq, st.id AS old_id, gen_random_uuid() AS new_id,
                           c.new_id AS run_id, c.shift
                    FROM copy_of c JOIN flow_run_state st ON st.flow_run_id = c.old_id
                    """
                )
            )
            run_values = _select(
                runs,
                "r",
                {
                    "id": "c.new_id",
                    "state_id": "sc.new_id",
                    "idempotency_key": "r.idempotency_key || '/copy-' || c.new_id",
                },
            )
            state_values = _select(
                states,
                "st",
                {
                    "id": "c.new_id",
                    "flow_run_id": "c.run_id",
                    "state_details": "jsonb_set(st.state_details, '{flow_run_id}', "
                    "to_jsonb(c.run_id::text))",
                },
            )
            # One statement for both tables: the two foreign keys between them (a run's
            # state_id, a state's flow_run_id) are checked at its end.
            insert = text(
                f"""
                WITH runs AS (
                    INSERT INTO flow_run ({", ".join(runs)})
                    SELECT {run_values}
                    FROM copy_of c JOIN flow_run r ON r.id = c.old_id
                    LEFT JOIN state_copy sc ON sc.run_id = c.new_id AND sc.old_id = r.state_id
                    WHERE c.seq >= :low AND c.seq < :high
                    RETURNING 1
                ), states AS (
                    INSERT INTO flow_run_state ({", ".join(states)})
                    SELECT {state_values}
                    FROM state_copy c JOIN flow_run_state st ON st.id = c.old_id
                    WHERE c.seq >= :low AND c.seq < :high
                    RETURNING 1
                )
                SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM states)
                """
            )
            for low in range(0, copies, CHUNK):
                high = min(low + CHUNK, copies)
                made_runs, made_states = connection.execute(
                    insert, {"low": low, "high": high}
                ).one()
                if made_runs != high - low:
                    raise RuntimeError(f"copies {low}-{high - 1}: {made_runs} runs written")
                print(f"  {high} copies written ({made_states} states in this chunk)", flush=True)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE flow_run, flow_run_state"))
    finally:
        engine.dispose()
    return time.monotonic() - began
