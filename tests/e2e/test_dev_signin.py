"""`make dev`'s sign-in, piece by piece: the dev issuer's tokens verify exactly as Clerk's do
(RS256 from a JWKS over HTTP, `email_verified`), and nothing of it runs outside dev mode — the
services refuse an http:// issuer without ZENTHOR_DEV_ISSUER=1, and so does the issuer.
The whole flow on a running stack is in tests/e2e/test_devstack.py."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import jwt
import pydantic
import pytest

from tests.support.ports import free_port
from zenthor.auth.jwt import JwtVerifier
from zenthor.config import Settings
from zenthor.devstack.issuer import (
    JWKS_PATH,
    DevIssuer,
    create_key_if_missing,
    jwks_server,
    subject_for,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def issuer(tmp_path: Path) -> Iterator[DevIssuer]:
    port = free_port()
    create_key_if_missing(tmp_path)
    dev = DevIssuer(tmp_path, f"http://127.0.0.1:{port}")
    server = jwks_server(dev, "127.0.0.1", port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield dev
    server.shutdown()
    server.server_close()


async def test_a_dev_token_verifies_as_a_clerk_token_with_a_verified_email(issuer: DevIssuer) -> None:
    token = issuer.token("Ana@Example.com")
    verifier = JwtVerifier(issuer.url, "convex", issuer.url + JWKS_PATH)
    identity = await verifier.verify(token)
    assert (identity.subject, identity.email, identity.email_verified) == (
        subject_for("ana@example.com"), "ana@example.com", True
    )
    claims = jwt.decode(token, options={"verify_signature": False})
    assert {"sub", "iss", "aud", "azp", "sid", "iat", "nbf", "exp", "email", "email_verified", "name"} <= set(claims)
    assert (claims["aud"], claims["name"], jwt.get_unverified_header(token)["alg"]) == ("convex", "Ana", "RS256")
    # The same email is the same user on every token.
    assert jwt.decode(issuer.token("ana@example.com"), options={"verify_signature": False})["sub"] == claims["sub"]


async def test_a_token_signed_by_another_key_is_refused(issuer: DevIssuer, tmp_path: Path) -> None:
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    create_key_if_missing(other_dir)
    forged = DevIssuer(other_dir, issuer.url).token("ana@example.com")
    verifier = JwtVerifier(issuer.url, "convex", issuer.url + JWKS_PATH)
    with pytest.raises(Exception, match="Not authenticated"):
        await verifier.verify(forged)


def test_the_services_refuse_a_local_issuer_without_the_dev_flag() -> None:
    local = "http://127.0.0.1:8090"
    with pytest.raises(pydantic.ValidationError, match="ZENTHOR_DEV_ISSUER=1"):
        Settings.model_validate({"clerk_jwt_issuer_domain": local})
    with pytest.raises(pydantic.ValidationError, match="only a loopback issuer"):
        Settings.model_validate({"clerk_jwt_issuer_domain": "http://issuer.example.com", "dev_issuer": True})
    assert Settings.model_validate({"clerk_jwt_issuer_domain": local, "dev_issuer": True}).jwks_url == local + JWKS_PATH
    assert Settings.model_validate({"clerk_jwt_issuer_domain": "https://clerk.example.com"}).dev_issuer is False


def test_a_service_process_pointed_at_the_dev_issuer_without_the_flag_does_not_start() -> None:
    env = {k: v for k, v in os.environ.items() if k != "ZENTHOR_DEV_ISSUER"}
    env["CLERK_JWT_ISSUER_DOMAIN"] = "http://127.0.0.1:8090"
    result = subprocess.run([sys.executable, "-m", "services.identity"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0
    assert "ZENTHOR_DEV_ISSUER=1" in result.stderr


def test_the_issuer_does_not_run_outside_dev_mode(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ZENTHOR_DEV_ISSUER"}
    create_key_if_missing(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "zenthor.devstack.issuer", "--port", str(free_port()), "--data-dir", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "ZENTHOR_DEV_ISSUER=1" in result.stderr


def test_the_token_command_without_a_stack_says_how_to_start_one(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "zenthor.devstack", "token", "--email", "ana@example.com", "--data-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "make dev" in result.stderr and result.stdout == ""
