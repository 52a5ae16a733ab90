"""Service-key auth, failing closed (docs/hardening.md #3)."""

from __future__ import annotations

import hmac
from typing import Any

import grpc
import pytest

from services.identity.app import build_server
from tests.service.conftest import Running, start, stop
from tests.support.grpc_client import rpc_error, service
from zenthor.auth.service_key import ServiceKeyCheck
from zenthor.config import ServiceName, Settings
from zenthor.gen.zenthor.identity.v1 import identity_pb2 as pb
from zenthor.gen.zenthor.identity.v1 import identity_pb2_grpc

LOOKUP = pb.GetContactByPhoneRequest(phone="123")


async def test_wrong_service_key_is_permission_denied(identity: Running) -> None:
    error = await rpc_error(identity.stub.GetContactByPhone(LOOKUP, metadata=service("nope")))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_missing_service_key_is_unauthenticated(identity: Running) -> None:
    error = await rpc_error(identity.stub.GetContactByPhone(LOOKUP))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_user_token_does_not_open_service_functions(identity: Running) -> None:
    token = identity.issuer.token("user_alice")
    error = await rpc_error(identity.stub.GetContactByPhone(LOOKUP, metadata=(("authorization", f"Bearer {token}"),)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def _server_with(settings_for: Any, db: Any, issuer: Any, **overrides: Any) -> Running:
    settings = settings_for(ServiceName.IDENTITY, **overrides)
    return await start(await build_server(settings), identity_pb2_grpc.IdentityServiceStub, settings, db, issuer)


async def test_no_configured_key_refuses_every_service_call(settings_for: Any, db: Any, clerk_issuer: Any) -> None:
    # docs/hardening.md #3: production and "forgot to set it" behave the same.
    running = await _server_with(settings_for, db, clerk_issuer, service_key=None, dev_insecure=False)
    try:
        for metadata in [service("anything"), ()]:
            error = await rpc_error(running.stub.GetContactByPhone(LOOKUP, metadata=metadata))
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "SERVICE_KEY is not set" in error.details()
    finally:
        await stop(running)


async def test_explicit_dev_flag_without_key_is_open(settings_for: Any, db: Any, clerk_issuer: Any) -> None:
    # Scenario A.8, now only with ZENTHOR_DEV_INSECURE=1.
    running = await _server_with(settings_for, db, clerk_issuer, service_key=None, dev_insecure=True)
    try:
        for metadata in [service("whatever"), ()]:
            reply = await running.stub.GetContactByPhone(LOOKUP, metadata=metadata)
            assert not reply.HasField("contact")
    finally:
        await stop(running)


def test_empty_secret_counts_as_unset() -> None:
    assert Settings.model_validate({"service_key": ""}).service_key is None
    assert Settings.model_validate({"AGENT_SECRET": "s3cret"}).service_key is not None


def test_placeholder_secret_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="placeholder"):
        Settings.model_validate({"service_key": "changeme"})


def test_key_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    check = ServiceKeyCheck("s3cret", dev_insecure=False)
    check.check("s3cret")
    with pytest.raises(Exception, match="Forbidden"):
        check.check("s3creX")
    assert compared == [(b"s3cret", b"s3cret"), (b"s3creX", b"s3cret")]
