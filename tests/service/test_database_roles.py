"""Each service's database role reaches only its own schema (docs/architecture.md §6)."""

from __future__ import annotations

import psycopg
import pytest

from tests.support.database import TestDatabase
from zenthor.config import ServiceName


def test_a_service_role_cannot_read_a_peer_schema(db: TestDatabase) -> None:
    with psycopg.connect(db.dsn_for(ServiceName.MESSAGES)) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM identity.users").fetchall()


def test_a_service_role_cannot_create_tables_outside_its_schema(db: TestDatabase) -> None:
    with psycopg.connect(db.dsn_for(ServiceName.MESSAGES)) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE public.sneaky (id int)")


def test_a_service_role_owns_its_own_tables(db: TestDatabase) -> None:
    with psycopg.connect(db.dsn_for(ServiceName.IDENTITY)) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (0,)
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE schemaname = 'identity' AND tablename = 'users'").fetchone()
        assert owner == ("zenthor_identity",)
