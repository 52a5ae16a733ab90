"""REST at the edge over HTTP against the real identity service: routes map 1:1 onto the
user-mode RPCs with the caller's bearer token; errors, request ids, probes, docs."""

from __future__ import annotations

import re

import httpx
import pytest
import structlog

from tests.service.conftest import Running
from tests.support.builders import add_contact, alice, boss
from zenthor.config import ServiceName

HEX_ID = re.compile(r"[0-9a-f]{32}")


def bearer(identity: Running, subject: str) -> dict[str, str]:
    return {"authorization": f"Bearer {identity.issuer.token(subject)}"}


# --- users ---


async def test_me_returns_the_callers_user(gateway: httpx.AsyncClient, identity: Running) -> None:
    user_id = alice(identity.db)
    response = await gateway.get("/v1/users/me", headers=bearer(identity, "user_alice"))
    assert response.status_code == 200
    user = response.json()["user"]
    assert user["id"] == f"usr_{user_id.hex}"
    assert (user["external_id"], user["name"], user["email"]) == ("user_alice", "Alice A", "alice@example.com")
    assert (user["role"], user["status"]) == ("ROLE_MEMBER", "USER_STATUS_ACTIVE")


async def test_me_without_token_is_401(gateway: httpx.AsyncClient, identity: Running) -> None:
    alice(identity.db)
    response = await gateway.get("/v1/users/me")
    assert response.status_code == 401
    assert response.json() == {
        "error": {
            "code": "UNAUTHENTICATED",
            "message": "Not authenticated",
            "request_id": response.headers["x-request-id"],
        }
    }


async def test_malformed_token_is_401(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get("/v1/users/me", headers={"authorization": "Bearer not-a-jwt"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHENTICATED"


async def test_member_listing_users_is_403(gateway: httpx.AsyncClient, identity: Running) -> None:
    alice(identity.db)
    response = await gateway.get("/v1/users", headers=bearer(identity, "user_alice"))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "PERMISSION_DENIED"
    assert response.json()["error"]["message"] == "Forbidden"


async def test_admin_lists_users_a_page_at_a_time(gateway: httpx.AsyncClient, identity: Running) -> None:
    boss(identity.db)
    alice(identity.db)
    headers = bearer(identity, "user_boss")
    first = (await gateway.get("/v1/users", params={"page_size": 1}, headers=headers)).json()
    assert [u["external_id"] for u in first["users"]] == ["user_boss"]
    rest = await gateway.get("/v1/users", params={"page_token": first["next_page_token"]}, headers=headers)
    assert [u["external_id"] for u in rest.json()["users"]] == ["user_alice"]
    assert rest.json()["next_page_token"] == ""


async def test_page_size_that_is_not_a_number_is_400_naming_it(gateway: httpx.AsyncClient, identity: Running) -> None:
    boss(identity.db)
    response = await gateway.get("/v1/users", params={"page_size": "many"}, headers=bearer(identity, "user_boss"))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "INVALID_ARGUMENT"
    assert response.json()["error"]["field"] == "page_size"


async def test_user_by_external_id_reveals_only_the_caller(gateway: httpx.AsyncClient, identity: Running) -> None:
    alice(identity.db)
    headers = bearer(identity, "user_alice")
    other = await gateway.get("/v1/users:lookup", params={"external_id": "user_bob"}, headers=headers)
    assert (other.status_code, other.json()) == (200, {"user": None})
    own = await gateway.get("/v1/users:lookup", params={"external_id": "user_alice"}, headers=headers)
    assert own.json()["user"]["external_id"] == "user_alice"


async def test_bootstrap_creates_the_callers_user_once(gateway: httpx.AsyncClient, identity: Running) -> None:
    headers = bearer(identity, "user_d")
    first = await gateway.post("/v1/users:bootstrap", json={"name": "Dee", "email": "dee@example.com"}, headers=headers)
    assert first.status_code == 200
    assert first.json()["created"] is True
    again = await gateway.post("/v1/users:bootstrap", json={"name": "Other"}, headers=headers)
    assert again.json() == {"user_id": first.json()["user_id"], "created": False}
    assert identity.db.sql("SELECT name, status FROM identity.users WHERE external_id = 'user_d'") == [
        ("Dee", "active")
    ]


async def test_bootstrap_without_name_is_400_naming_it(gateway: httpx.AsyncClient, identity: Running) -> None:
    response = await gateway.post("/v1/users:bootstrap", json={}, headers=bearer(identity, "user_d"))
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "name"
    assert identity.db.sql("SELECT count(*) FROM identity.users") == [(0,)]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/users:bootstrap", b'{"name":"D\\ud800e"}', "name"),
        ("/v1/users:bootstrap", b'{"name":"Dee","\\udfff":1}', None),
        ("/v1/pluginInstalls:upsert", b'{"plugin_name":"p","config":{"a":{"\\ud800":1}}}', "config"),
    ],
    ids=["value", "field-name", "struct-key"],
)
async def test_a_body_escaping_half_a_surrogate_pair_is_400_naming_the_field(
    gateway: httpx.AsyncClient, identity: Running, path: str, body: bytes, field: str | None
) -> None:
    """JSON may escape text no UTF-8 holds (`\\ud800` alone); it is refused at the edge, not
    answered 500 by a lookup or an encoder that cannot take it."""
    headers = {**bearer(identity, "user_d"), "content-type": "application/json"}
    response = await gateway.post(path, content=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"].get("field") == field
    assert "unpaired surrogate" in response.json()["error"]["message"].lower()
    assert identity.db.sql("SELECT count(*) FROM identity.users") == [(0,)]


# --- contacts ---


async def test_admin_lists_and_patches_a_contact(gateway: httpx.AsyncClient, identity: Running) -> None:
    boss(identity.db)
    contact_id = add_contact(identity.db, "5511999990000")
    headers = bearer(identity, "user_boss")
    listed = await gateway.get("/v1/contacts", headers=headers)
    assert [c["phone"] for c in listed.json()["contacts"]] == ["5511999990000"]
    patched = await gateway.patch(
        f"/v1/contacts/ctc_{contact_id.hex}", json={"name": "Kay", "is_allowed": False}, headers=headers
    )
    assert patched.status_code == 200
    assert (patched.json()["contact"]["name"], patched.json()["contact"]["is_allowed"]) == ("Kay", False)
    assert identity.db.sql("SELECT name, is_allowed FROM identity.contacts") == [("Kay", False)]


async def test_bad_contact_id_is_400_naming_the_field(gateway: httpx.AsyncClient, identity: Running) -> None:
    boss(identity.db)
    response = await gateway.patch("/v1/contacts/not-an-id", json={"name": "x"}, headers=bearer(identity, "user_boss"))
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("INVALID_ARGUMENT", "id")


async def test_unknown_contact_is_404(gateway: httpx.AsyncClient, identity: Running) -> None:
    boss(identity.db)
    response = await gateway.patch(
        "/v1/contacts/ctc_0190b1e0a0b07000800000000000dead", json={"name": "x"}, headers=bearer(identity, "user_boss")
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"


async def test_member_listing_contacts_is_403(gateway: httpx.AsyncClient, identity: Running) -> None:
    alice(identity.db)
    response = await gateway.get("/v1/contacts", headers=bearer(identity, "user_alice"))
    assert response.status_code == 403


# --- misc ---


async def test_private_data_for_a_signed_in_user(gateway: httpx.AsyncClient, identity: Running) -> None:
    alice(identity.db)
    response = await gateway.get("/v1/privateData", headers=bearer(identity, "user_alice"))
    assert response.json() == {"message": "This is private"}


async def test_public_health_check_needs_no_token(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get("/v1/healthCheck")
    assert (response.status_code, response.json()) == (200, {"status": "OK"})


# --- request ids ---


async def test_request_id_is_echoed_and_forwarded_to_identity(gateway: httpx.AsyncClient, identity: Running) -> None:
    alice(identity.db)
    headers = {**bearer(identity, "user_alice"), "x-request-id": "req-e2e-0001"}
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        response = await gateway.get("/v1/users/me", headers=headers)
    assert response.headers["x-request-id"] == "req-e2e-0001"
    served = [e for e in logs if e["event"] == "rpc" and e["method"].endswith("/GetCurrentUser")]
    assert [e["request_id"] for e in served] == ["req-e2e-0001"]


async def test_request_id_is_minted_when_absent_or_unacceptable(gateway: httpx.AsyncClient) -> None:
    minted = await gateway.get("/healthz")
    assert HEX_ID.fullmatch(minted.headers["x-request-id"])
    replaced = await gateway.get("/healthz", headers={"x-request-id": "has spaces\tand tabs"})
    assert HEX_ID.fullmatch(replaced.headers["x-request-id"])


# --- errors that are not the caller's ---


async def test_unexpected_failure_is_500_with_request_id_and_no_internals(
    gateway: httpx.AsyncClient, identity: Running
) -> None:
    boss(identity.db)
    # Breaks identity's query under it: an unexpected error, not a domain one.
    identity.db.sql("ALTER TABLE identity.contacts RENAME COLUMN name TO name_gone")
    response = await gateway.get("/v1/contacts", headers=bearer(identity, "user_boss"))
    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": "INTERNAL", "message": "Internal error", "request_id": response.headers["x-request-id"]}
    }


async def test_identity_unreachable_is_503(gateway_without_identity: httpx.AsyncClient) -> None:
    response = await gateway_without_identity.get("/v1/healthCheck")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] in {"UNAVAILABLE", "DEADLINE_EXCEEDED"}
    assert "127.0.0.1" not in error["message"]


async def test_unknown_path_is_a_json_404(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"


# --- probes and docs ---


async def test_healthz_is_ok(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readyz_names_every_peer_and_is_503_until_all_seven_serve(gateway: httpx.AsyncClient) -> None:
    # Only identity runs here; the stack test sees all seven SERVING and 200 (tests/e2e/test_devstack.py).
    response = await gateway.get("/readyz")
    assert response.status_code == 503
    others = {s.value: "UNAVAILABLE" for s in ServiceName if s is not ServiceName.IDENTITY}
    assert response.json() == {"status": "unavailable", "peers": {"identity": "SERVING", **others}}


async def test_readyz_is_503_when_identity_is_unreachable(gateway_without_identity: httpx.AsyncClient) -> None:
    response = await gateway_without_identity.get("/readyz")
    assert response.status_code == 503
    assert response.json()["peers"]["identity"] == "UNAVAILABLE"


async def test_readyz_is_503_while_identity_stops(gateway: httpx.AsyncClient, identity: Running) -> None:
    await identity.server.health.enter_graceful_shutdown()
    response = await gateway.get("/readyz")
    assert response.status_code == 503
    assert response.json()["peers"]["identity"] == "NOT_SERVING"


async def test_docs_and_openapi_are_served(gateway: httpx.AsyncClient) -> None:
    docs = await gateway.get("/docs")
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text
    paths = (await gateway.get("/openapi.json")).json()["paths"]
    assert {
        "/healthz", "/readyz", "/clerk/webhook", "/v1/users/me", "/v1/users:lookup",
        "/v1/users:bootstrap", "/v1/users", "/v1/contacts", "/v1/contacts/{id}", "/v1/privateData",
        "/v1/healthCheck",
    } <= set(paths)


# --- phone verification ---


async def test_phone_verification_round_trip_over_rest(gateway: httpx.AsyncClient, identity: Running) -> None:
    alice(identity.db)
    headers = bearer(identity, "user_alice")
    requested = await gateway.post("/v1/phoneVerification:request", json={"phone": "5511977776666"}, headers=headers)
    assert requested.status_code == 200 and requested.json() == {"success": True}
    status = await gateway.get("/v1/phoneVerification", headers=headers)
    assert status.json()["pending"]["phone"] == "5511977776666"
    [(content,)] = identity.db.sql("SELECT payload->>'content' FROM identity.outbox")
    code = re.search(r"code is: (\d{6})", content).group(1)  # type: ignore[union-attr]
    confirmed = await gateway.post("/v1/phoneVerification:confirm", json={"code": code}, headers=headers)
    assert confirmed.json() == {"success": True, "phone": "5511977776666"}
    unlinked = await gateway.delete("/v1/users/me/phone", headers=headers)
    assert unlinked.status_code == 200
    assert identity.db.sql("SELECT phone FROM identity.users") == [(None,)]


async def test_malformed_phone_is_400_naming_the_field(gateway: httpx.AsyncClient, identity: Running) -> None:
    alice(identity.db)
    response = await gateway.post("/v1/phoneVerification:request", json={"phone": "+55 11"}, headers=bearer(identity, "user_alice"))
    assert response.status_code == 400
    assert (response.json()["error"]["field"], response.json()["error"]["code"]) == ("phone", "INVALID_ARGUMENT")
