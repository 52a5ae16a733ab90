"""Creates what each service needs in a database: a role and a schema it owns, reachable by
no other service role (docs/architecture.md §6)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import psycopg
from psycopg import sql

from zenthor.config import ServiceName


def password_env(service: ServiceName) -> str:
    """`ZENTHOR_<PKG>_DB_PASSWORD`: the login password of the service's role. The migration Job
    takes each from the Secret that also holds the service's database URL (deploy/k8s)."""
    return f"ZENTHOR_{service.value.upper()}_DB_PASSWORD"


def passwords_from_env(
    services: Iterable[ServiceName], environ: Mapping[str, str] | None = None
) -> dict[ServiceName, str]:
    env = os.environ if environ is None else environ
    return {s: env[password_env(s)] for s in services if env.get(password_env(s))}


def provision(
    admin_dsn: str,
    services: Iterable[ServiceName],
    passwords: dict[ServiceName, str] | None = None,
) -> None:
    """Idempotent: safe to run on every start and from the migration Job. Without `passwords`,
    each role whose ZENTHOR_<PKG>_DB_PASSWORD is set gets (or keeps, on rotation) that password;
    a role without one keeps what it has (local stacks trust loopback)."""
    services = list(services)
    passwords = passwords_from_env(services) if passwords is None else passwords
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        # pgvector's type lives in `public`; every role may use it, none may create there.
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA public")
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        for service in services:
            role = sql.Identifier(service.db_role)
            schema = sql.Identifier(service.value)
            exists = conn.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (service.db_role,)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
            if service in passwords:
                conn.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD {}").format(role, sql.Literal(passwords[service]))
                )
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(schema, role))
            conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(schema))
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(role))
            conn.execute(
                sql.SQL("ALTER ROLE {} SET search_path = {}, public").format(role, schema)
            )
