"""Alembic, one version history per service schema; applied by ``make run``, the test fixtures and the k8s Job.

Each service keeps ``services/<name>/migrations/`` (``env.py`` calls :func:`run_env`, revisions under
``versions/``). Migrations run on a synchronous psycopg connection under an advisory lock, so several migrators
started at once apply each revision exactly once.
"""

from __future__ import annotations

import importlib
import zlib
from collections.abc import Iterable

import sqlalchemy as sa
from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, Table, create_engine, text
from sqlalchemy.pool import NullPool

from shared.db import asyncpg_url

SERVICES_WITH_SCHEMAS = ("auth", "renders", "credits", "webhooks", "telemetry")


def sync_url(url: str) -> str:
    return asyncpg_url(url).replace("postgresql+asyncpg://", "postgresql+psycopg://", 1)


def alembic_config(service: str, database_url: str) -> Config:
    module = importlib.import_module(f"services.{service}.models")
    cfg = Config()
    cfg.set_main_option("script_location", f"services.{service}:migrations")
    cfg.attributes["database_url"] = database_url
    cfg.attributes["schema"] = module.SCHEMA
    return cfg


def upgrade(database_url: str, services: Iterable[str] = SERVICES_WITH_SCHEMAS) -> None:
    for service in services:
        command.upgrade(alembic_config(service, database_url), "head")


def run_env(metadata: MetaData) -> None:
    """Body of every service's ``env.py``: its schema, its version table, its metadata (online mode only)."""
    cfg = context.config
    schema: str = cfg.attributes["schema"]
    engine = create_engine(sync_url(cfg.attributes["database_url"]), poolclass=NullPool)
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": zlib.crc32(f"migrate.{schema}".encode())})
        conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        conn.execute(text(f'SET search_path TO "{schema}", public'))
        conn.commit()
        context.configure(
            connection=conn,
            target_metadata=metadata,
            version_table_schema=schema,
            include_schemas=False,
        )
        with context.begin_transaction():
            context.run_migrations()
        conn.commit()
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": zlib.crc32(f"migrate.{schema}".encode())})
        conn.commit()
    engine.dispose()


def timestamp(name: str, nullable: bool = True, default_now: bool = False) -> sa.Column:
    """A ``timestamptz`` column for ``op.create_table``, optionally defaulting to ``now()``."""
    return sa.Column(
        name, sa.DateTime(timezone=True), nullable=nullable, server_default=sa.func.now() if default_now else None
    )


def create_tables(bind: object, *tables: Table) -> None:
    """Create tables declared in code (used by initial revisions, so a table is declared once)."""
    for table in tables:
        table.create(bind, checkfirst=True)  # type: ignore[arg-type]
