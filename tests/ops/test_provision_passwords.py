"""The migration Job gives each service role the password from its Secret
(ZENTHOR_<PKG>_DB_PASSWORD), and a changed Secret rotates it on the next run."""

from __future__ import annotations

import pytest

from tests.support.database import TestDatabase
from zenthor.config import ServiceName
from zenthor.migrate import main as migrate_main
from zenthor.provision import password_env, passwords_from_env


def stored_password(db: TestDatabase, role: str) -> str | None:
    rows = db.sql("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,))
    value: str | None = rows[0][0]
    return value


def test_passwords_come_from_the_environment() -> None:
    env = {"ZENTHOR_AGENT_QUEUE_DB_PASSWORD": "q", "ZENTHOR_IDENTITY_DB_PASSWORD": ""}
    assert password_env(ServiceName.AGENT_QUEUE) == "ZENTHOR_AGENT_QUEUE_DB_PASSWORD"
    assert passwords_from_env(list(ServiceName), env) == {ServiceName.AGENT_QUEUE: "q"}


def test_the_migration_sets_and_rotates_role_passwords(
    db: TestDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Roles are cluster-wide: use one no other test logs in with a password, and reset it.
    role = ServiceName.TODOIST.db_role
    before = stored_password(db, role)
    try:
        monkeypatch.setenv(password_env(ServiceName.TODOIST), "first-secret")
        assert migrate_main(["--dsn", db.admin_dsn(), "todoist"]) == 0
        first = stored_password(db, role)
        assert first and first.startswith("SCRAM-SHA-256$")

        monkeypatch.setenv(password_env(ServiceName.TODOIST), "second-secret")
        assert migrate_main(["--dsn", db.admin_dsn(), "todoist"]) == 0
        second = stored_password(db, role)
        assert second and second != first
    finally:
        assert before is None  # local stacks trust loopback: roles start without one
        db.sql(f"ALTER ROLE {role} PASSWORD NULL")
