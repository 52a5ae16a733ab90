"""Per-test databases cloned from one migrated template (pgqueuer's pattern)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import psycopg

from zenthor.config import ServiceName
from zenthor.devstack.postgres import LocalPostgres
from zenthor.migrate import migrate
from zenthor.provision import provision

TEMPLATE = "zenthor_template"


def build_template(pg: LocalPostgres) -> None:
    pg.ensure_database(TEMPLATE)
    dsn = pg.admin_dsn(TEMPLATE)
    provision(dsn, list(ServiceName))
    for service in ServiceName:
        migrate(service, dsn)


@dataclass(frozen=True)
class TestDatabase:
    __test__ = False  # a fixture value, not a test class

    pg: LocalPostgres
    name: str

    def admin_dsn(self) -> str:
        return self.pg.admin_dsn(self.name)

    def dsn_for(self, service: ServiceName) -> str:
        return self.pg.dsn_as(service.db_role, self.name)

    def sql(self, query: str, params: tuple | dict | None = None) -> list[tuple]:
        """Runs SQL as the superuser (arrange/assert rows); returns rows if any."""
        with psycopg.connect(self.admin_dsn(), autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []


def clone(pg: LocalPostgres) -> TestDatabase:
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg.admin_dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    return TestDatabase(pg, name)


def drop(db: TestDatabase) -> None:
    with psycopg.connect(db.pg.admin_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')
