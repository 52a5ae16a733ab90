"""Each service's `store/tables.py` mirrors what its Alembic migrations create, and every
status column is guarded by a CHECK constraint (docs/architecture.md §6). Alembic's own
`compare_metadata` runs against a freshly migrated database, so a migration and its mirror
cannot drift apart unnoticed."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tests.support.database import TestDatabase
from zenthor.config import ServiceName
from zenthor.db import sqlalchemy_url
from zenthor.migrate import migrations_dir

MIGRATED = [s for s in ServiceName if migrations_dir(s) is not None]


def schema_drift(dsn: str, service: ServiceName) -> list[Any]:
    """Alembic's differences between the migrated schema of `service` and its tables.py."""
    metadata = importlib.import_module(f"services.{service.value}.store.tables").metadata

    def in_schema(name: str | None, type_: str, parent_names: Any) -> bool:
        if type_ == "schema":
            return name == service.value
        return not (type_ == "table" and name == "alembic_version")

    engine = sa.create_engine(sqlalchemy_url(dsn))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "include_schemas": True,
                    "include_name": in_schema,
                    "compare_type": True,
                    "compare_server_default": False,
                },
            )
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def test_every_migrated_service_is_checked() -> None:
    assert {s.value for s in MIGRATED} == {s.value for s in ServiceName}


@pytest.mark.parametrize("service", MIGRATED, ids=lambda s: s.value)
def test_tables_py_matches_the_migrated_schema(db: TestDatabase, service: ServiceName) -> None:
    assert schema_drift(db.admin_dsn(), service) == []


def test_a_drifted_table_is_reported(db: TestDatabase) -> None:
    db.sql("ALTER TABLE agent_queue.jobs ADD COLUMN priority integer")
    db.sql("ALTER TABLE agent_queue.jobs ALTER COLUMN error_message TYPE varchar(10)")
    drift = schema_drift(db.admin_dsn(), ServiceName.AGENT_QUEUE)
    described = repr(drift)
    assert "priority" in described and "error_message" in described


def unguarded_status_columns(db: TestDatabase, service: ServiceName) -> list[str]:
    """`schema.table.column` of every *status column of `service` no CHECK constraint covers."""
    rows = db.sql(
        """
        SELECT c.table_name, c.column_name
        FROM information_schema.columns c
        WHERE c.table_schema = %s AND c.column_name LIKE '%%status'
          AND NOT EXISTS (
            SELECT 1 FROM pg_constraint k
            JOIN pg_class t ON t.oid = k.conrelid
            JOIN pg_namespace n ON n.oid = t.relnamespace
            JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY (k.conkey)
            WHERE k.contype = 'c' AND n.nspname = c.table_schema AND t.relname = c.table_name
              AND a.attname = c.column_name
          )
        ORDER BY 1, 2
        """,
        (service.value,),
    )
    return [f"{service.value}.{table}.{column}" for table, column in rows]


@pytest.mark.parametrize("service", MIGRATED, ids=lambda s: s.value)
def test_every_status_column_has_a_check_constraint(db: TestDatabase, service: ServiceName) -> None:
    assert unguarded_status_columns(db, service) == []


def test_a_status_column_without_check_is_reported(db: TestDatabase) -> None:
    db.sql("ALTER TABLE agent_queue.jobs DROP CONSTRAINT jobs_status_check")
    assert unguarded_status_columns(db, ServiceName.AGENT_QUEUE) == ["agent_queue.jobs.status"]
