"""Alembic migrations per service, run inside a running event loop.

Each service keeps an Alembic script folder (``migrations/`` beside its store). The stock
async env.py calls ``asyncio.run()``, which cannot run inside a running loop (service
start-up, pytest-asyncio); instead the connection is opened here and handed to Alembic
through ``config.attributes``, and the service's env.py only calls
:func:`run_migrations_online`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine


def alembic_config(script_location: Path, connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.set_main_option("version_table", "alembic_version")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


async def upgrade(engine: AsyncEngine, script_location: Path, revision: str = "head") -> None:
    """Bring the service's database to ``revision``."""

    def run(connection: Connection) -> None:
        command.upgrade(alembic_config(script_location, connection), revision)

    async with engine.begin() as conn:
        # Replicas starting together migrate one at a time.
        await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('continuum-migrations'))"))
        await conn.run_sync(run)


async def downgrade(engine: AsyncEngine, script_location: Path, revision: str) -> None:
    def run(connection: Connection) -> None:
        command.downgrade(alembic_config(script_location, connection), revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)


def run_migrations_online(context: Any, target_metadata: Any = None) -> None:
    """The body of every service's env.py: migrate on the connection handed in."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "run migrations through continuum_runtime.migrations.upgrade "
            "(or the service's `migrate` command), not the alembic CLI"
        )
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
