"""Session-wide real infrastructure: one PostgreSQL (each test gets its own cloned database),
one fake Clerk issuer serving a JWKS. Temporal is started by the tests that need it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.database import TestDatabase, build_template, clone, drop
from tests.support.grpc_client import SERVICE_KEY
from tests.support.jwks import FakeClerkIssuer
from tests.support.ports import free_port
from zenthor.config import ServiceName, Settings
from zenthor.devstack.postgres import LocalPostgres

ALLOWLIST = " Boss@Example.com , ops@example.com,"  # the allowlist every scenario starts from


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    server = LocalPostgres(tmp_path_factory.mktemp("pg") / "data", free_port(), fast_unsafe=True)
    server.start()
    build_template(server)
    yield server
    server.stop()


@pytest.fixture
def db(pg: LocalPostgres) -> Iterator[TestDatabase]:
    database = clone(pg)
    yield database
    drop(database)


@pytest.fixture(scope="session")
def clerk_issuer() -> Iterator[FakeClerkIssuer]:
    issuer = FakeClerkIssuer()
    yield issuer
    issuer.close()


@pytest.fixture
def settings_for(db: TestDatabase, clerk_issuer: FakeClerkIssuer):  # type: ignore[no-untyped-def]
    """Settings of one service against this test's database, as every scenario starts from them."""

    def make(service: ServiceName, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": db.dsn_for(service),
            "service_key": SERVICE_KEY,
            "clerk_jwt_issuer_domain": clerk_issuer.issuer,
            "dev_issuer": True,  # the fake issuer is a local http:// one
            "admin_email_allowlist": ALLOWLIST,
            "principal_cache_ttl_s": 0.0,
            "grpc_host": "127.0.0.1",
            "shutdown_grace_s": 1.0,
            "log_format": "console",
        }
        values.update(overrides)
        return Settings.model_validate(values)

    return make


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
