"""The stack's "cluster" profile: the Prefect server as several processes on PostgreSQL + Redis.

`serve --profile cluster` (or STACK_PROFILE=cluster) runs, instead of the embedded server:
- Prefect's schema migrated and its block types registered once (`python -m
  deployments.cluster`), the domain schema once (under its advisory lock, biasbench/db/engine.py).
  API processes that each register block types on a fresh database collide on a unique key
  (seen: one of two failed its start with `uq_block_type__slug`), so none of them does;
- `prefect server start --workers N`: N API processes that share one listening socket (uvicorn's
  supervisor, which Prefect offers for exactly this set-up and checks for PostgreSQL and Redis);
  the kernel hands each new connection to a live process, and a process that dies is started
  again by its parent. No proxy of ours sits in the way, so none can lose a request;
- `prefect server services start`: the one process of the background services (scheduler,
  automations' triggers and actions, cancellation clean-up, ...).
None of the server processes migrates on start (PREFECT_API_DATABASE_MIGRATE_ON_START=false).
The stack's supervisor restarts the API parent or the services process when one dies.
Names of the settings: Prefect 3.9.1 and prefect-redis 0.3."""

from __future__ import annotations

import asyncio
import sys

from sqlalchemy.engine import make_url

from deployments.settings import DeploymentSettings

PROFILES = ("embedded", "cluster")


class ClusterMisconfigured(ValueError):
    """A setting the cluster profile needs is missing or points at the wrong kind of server."""


def server_env(settings: DeploymentSettings) -> dict[str, str]:
    """The settings of every Prefect server process of the cluster (API and services)."""
    database = settings.prefect_database_url
    if not database or make_url(database).get_backend_name() != "postgresql":
        raise ClusterMisconfigured(
            "PREFECT_API_DATABASE_CONNECTION_URL must name a PostgreSQL database "
            "(postgresql+asyncpg://user@host:5432/prefect) for the cluster profile"
        )
    redis = settings.redis_url
    return {
        "PREFECT_API_DATABASE_CONNECTION_URL": database,
        "PREFECT_API_DATABASE_MIGRATE_ON_START": "false",
        "PREFECT_API_BLOCKS_REGISTER_ON_START": "false",
        "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_REDIS_MESSAGING_URL": redis,
        "PREFECT_SERVER_DOCKET_URL": redis,
    }


def check_domain_db(db_url: str) -> None:
    """Several hosts share the domain database: a SQLite file cannot be it."""
    if make_url(db_url).get_backend_name() != "postgresql":
        raise ClusterMisconfigured(
            "DB_URL must name a PostgreSQL database "
            "(postgresql+psycopg://user@host:5432/biasbench) for the cluster profile"
        )


def prepare_command() -> list[str]:
    """Run with server_env: what every API process would otherwise do when it starts."""
    return ["deployments.cluster"]


async def prepare_prefect_database() -> None:
    from prefect.server.database import provide_database_interface
    from prefect.server.models.block_registration import run_block_auto_registration

    db = provide_database_interface()
    await db.create_db()  # Alembic upgrade to head
    async with await db.session() as session:
        await run_block_auto_registration(session=session)
    print("Prefect database migrated, block types registered", file=sys.stderr)


def api_command(host: str, port: int, processes: int) -> list[str]:
    address = ["--host", host, "--port", str(port)]
    # --workers > 1 implies --no-services; given anyway for a single process.
    return ["prefect", "server", "start", *address, "--workers", str(processes), "--no-services"]


def services_command() -> list[str]:
    return ["prefect", "server", "services", "start"]


if __name__ == "__main__":
    asyncio.run(prepare_prefect_database())
