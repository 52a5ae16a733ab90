"""POST /clerk/webhook over HTTP, svix-signed, against
the real identity service; rows asserted in Postgres."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from svix.webhooks import Webhook

from tests.e2e.conftest import WEBHOOK_SECRET, gateway_settings, serve_gateway
from tests.service.conftest import Running
from tests.support.builders import bob, boss
from tests.support.database import TestDatabase

OTHER_SECRET = "whsec_" + base64.b64encode(b"n0t-the-k3y-n0t-the-k3y-n0t-th").decode()
USER_COLUMNS = "external_id, name, email, role, image, status"


def signed_request(
    body: str, *, secret: str = WEBHOOK_SECRET, at: datetime | None = None, msg_id: str = "msg_1"
) -> dict[str, Any]:
    """httpx arguments for a svix delivery of `body` signed with `secret` at `at` (default now)."""
    when = at or datetime.now(UTC)
    headers = {
        "svix-id": msg_id,
        "svix-timestamp": str(int(when.timestamp())),
        "svix-signature": Webhook(secret).sign(msg_id, when, body),
        "content-type": "application/json",
    }
    return {"content": body.encode(), "headers": headers}


async def deliver(gateway: httpx.AsyncClient, event: dict[str, Any], **signing: Any) -> httpx.Response:
    return await gateway.post("/clerk/webhook", **signed_request(json.dumps(event), **signing))


def user_event(
    event_type: str,
    user_id: str,
    *,
    first: str | None = None,
    last: str | None = None,
    emails: dict[str, str] | None = None,
    primary: str | None = None,
    image_url: str | None = None,
) -> dict[str, Any]:
    return {
        "type": event_type,
        "object": "event",
        "data": {
            "id": user_id,
            "first_name": first,
            "last_name": last,
            "primary_email_address_id": primary,
            "email_addresses": [{"id": k, "email_address": v} for k, v in (emails or {}).items()],
            "image_url": image_url,
        },
    }


# a user.created event as Clerk sends it
GINA_CREATED = {
    "type": "user.created",
    "data": {
        "id": "user_g",
        "first_name": "Gina",
        "last_name": None,
        "primary_email_address_id": "idn_1",
        "email_addresses": [
            {"id": "idn_0", "email_address": "old@x.com"},
            {"id": "idn_1", "email_address": "Gina@Example.COM"},
        ],
        "image_url": "https://img/g.png",
    },
}


def user_row(db: TestDatabase, external_id: str) -> tuple[Any, ...] | None:
    rows = db.sql(f"SELECT {USER_COLUMNS} FROM identity.users WHERE external_id = %s", (external_id,))
    return rows[0] if rows else None


def user_count(db: TestDatabase) -> int:
    return int(db.sql("SELECT count(*) FROM identity.users")[0][0])


def assert_text(response: httpx.Response, status: int, body: str) -> None:
    assert (response.status_code, response.text) == (status, body)
    assert response.headers["content-type"].startswith("text/plain")


# --- B.16 to B.19: rejection before any write ---


async def test_webhook_without_secret_configured_answers_server_configuration_error(identity: Running) -> None:
    settings = gateway_settings(f"127.0.0.1:{identity.server.port}", clerk_webhook_secret=None)
    async with serve_gateway(settings) as gateway:
        unsigned = await gateway.post("/clerk/webhook", content=b"anything")
        signed = await deliver(gateway, GINA_CREATED)
    assert_text(unsigned, 500, "Server configuration error")
    assert_text(signed, 500, "Server configuration error")
    assert user_count(identity.db) == 0


@pytest.mark.parametrize("header", ["svix-id", "svix-timestamp", "svix-signature"])
async def test_webhook_missing_a_svix_header_is_rejected(
    gateway: httpx.AsyncClient, identity: Running, header: str
) -> None:
    request = signed_request(json.dumps(GINA_CREATED))
    del request["headers"][header]
    assert_text(await gateway.post("/clerk/webhook", **request), 400, "Missing svix headers")
    assert user_count(identity.db) == 0


async def test_webhook_with_an_empty_svix_header_is_rejected(gateway: httpx.AsyncClient) -> None:
    request = signed_request(json.dumps(GINA_CREATED))
    request["headers"]["svix-signature"] = ""
    assert_text(await gateway.post("/clerk/webhook", **request), 400, "Missing svix headers")


async def test_webhook_signed_with_another_secret_is_rejected(gateway: httpx.AsyncClient, identity: Running) -> None:
    event = user_event("user.created", "user_f", first="Fay")
    assert_text(await deliver(gateway, event, secret=OTHER_SECRET), 400, "Invalid signature")
    assert user_row(identity.db, "user_f") is None


async def test_webhook_with_stale_timestamp_is_rejected(gateway: httpx.AsyncClient, identity: Running) -> None:
    stale = datetime.now(UTC) - timedelta(seconds=400)
    assert_text(await deliver(gateway, GINA_CREATED, at=stale), 400, "Invalid signature")
    assert user_count(identity.db) == 0


async def test_webhook_with_future_timestamp_is_rejected(gateway: httpx.AsyncClient, identity: Running) -> None:
    future = datetime.now(UTC) + timedelta(seconds=400)
    assert_text(await deliver(gateway, GINA_CREATED, at=future), 400, "Invalid signature")
    assert user_count(identity.db) == 0


async def test_webhook_with_a_tampered_body_is_rejected(gateway: httpx.AsyncClient, identity: Running) -> None:
    request = signed_request(json.dumps(GINA_CREATED))
    request["content"] = request["content"].replace(b"Gina", b"Evil")
    assert_text(await gateway.post("/clerk/webhook", **request), 400, "Invalid signature")
    assert user_count(identity.db) == 0


@pytest.mark.parametrize("signature", ["garbage", "v1,not-base64!", "v1"])
async def test_webhook_with_a_malformed_signature_header_is_rejected(
    gateway: httpx.AsyncClient, signature: str
) -> None:
    request = signed_request(json.dumps(GINA_CREATED))
    request["headers"]["svix-signature"] = signature
    assert_text(await gateway.post("/clerk/webhook", **request), 400, "Invalid signature")


async def test_webhook_with_a_signed_body_that_is_not_json_is_rejected(gateway: httpx.AsyncClient) -> None:
    assert_text(await gateway.post("/clerk/webhook", **signed_request("not json")), 400, "Invalid signature")


async def test_webhook_accepts_a_signature_list_when_one_entry_matches(
    gateway: httpx.AsyncClient, identity: Running
) -> None:
    request = signed_request(json.dumps(GINA_CREATED))
    wrong = signed_request(json.dumps(GINA_CREATED), secret=OTHER_SECRET)["headers"]["svix-signature"]
    request["headers"]["svix-signature"] = f"{wrong} {request['headers']['svix-signature']}"
    assert_text(await gateway.post("/clerk/webhook", **request), 200, "OK")
    assert user_row(identity.db, "user_g") is not None


# --- B.20 to B.25: handled events ---


async def test_valid_user_created_inserts_the_user(gateway: httpx.AsyncClient, identity: Running) -> None:
    assert_text(await deliver(gateway, GINA_CREATED), 200, "OK")
    assert user_row(identity.db, "user_g") == (
        "user_g", "Gina", "gina@example.com", "member", "https://img/g.png", "active",
    )


async def test_user_created_replayed_within_the_window_is_idempotent(
    gateway: httpx.AsyncClient, identity: Running
) -> None:
    request = signed_request(json.dumps(GINA_CREATED))
    assert_text(await gateway.post("/clerk/webhook", **request), 200, "OK")
    assert_text(await gateway.post("/clerk/webhook", **request), 200, "OK")
    assert user_count(identity.db) == 1


async def test_user_created_with_null_image_url_stores_no_image(gateway: httpx.AsyncClient, identity: Running) -> None:
    # docs/hardening.md #33: the original answered 500 here; a null image is simply no image.
    event = user_event("user.created", "user_n", first="Nia", image_url=None)
    assert_text(await deliver(gateway, event), 200, "OK")
    assert user_row(identity.db, "user_n") == ("user_n", "Nia", "", "member", None, "active")


async def test_user_created_without_names_or_primary_email_gets_defaults(
    gateway: httpx.AsyncClient, identity: Running
) -> None:
    event = user_event("user.created", "user_h", emails={"idn_9": "h@example.com"}, primary=None)
    assert_text(await deliver(gateway, event), 200, "OK")
    assert user_row(identity.db, "user_h") == ("user_h", "User", "", "member", None, "active")


async def test_user_created_for_an_allowlisted_email_is_admin(gateway: httpx.AsyncClient, identity: Running) -> None:
    event = user_event("user.created", "user_o", emails={"idn_1": "OPS@example.com"}, primary="idn_1")
    assert_text(await deliver(gateway, event), 200, "OK")
    assert user_row(identity.db, "user_o") == ("user_o", "User", "ops@example.com", "admin", None, "active")


async def test_user_updated_keeps_the_stored_role_and_removes_the_image(
    gateway: httpx.AsyncClient, identity: Running
) -> None:
    boss(identity.db)
    identity.db.sql("UPDATE identity.users SET image = 'https://img/boss.png' WHERE external_id = 'user_boss'")
    [(before,)] = identity.db.sql("SELECT updated_at FROM identity.users WHERE external_id = 'user_boss'")
    event = user_event(
        "user.updated", "user_boss", first="Big", last="Boss", emails={"idn_1": "chief@example.com"}, primary="idn_1"
    )
    del event["data"]["image_url"]
    assert_text(await deliver(gateway, event), 200, "OK")
    assert user_row(identity.db, "user_boss") == (
        "user_boss", "Big Boss", "chief@example.com", "admin", None, "active",
    )
    [(after,)] = identity.db.sql("SELECT updated_at FROM identity.users WHERE external_id = 'user_boss'")
    assert after > before


async def test_user_updated_for_an_unknown_user_inserts_it(gateway: httpx.AsyncClient, identity: Running) -> None:
    event = user_event("user.updated", "user_i", first="Ivy", emails={"idn_1": "ivy@example.com"}, primary="idn_1")
    assert_text(await deliver(gateway, event), 200, "OK")
    assert user_row(identity.db, "user_i") == ("user_i", "Ivy", "ivy@example.com", "member", None, "active")


async def test_user_deleted_marks_the_user_inactive_and_keeps_the_row(
    gateway: httpx.AsyncClient, identity: Running
) -> None:
    bob(identity.db)
    event = {"type": "user.deleted", "data": {"id": "user_bob", "deleted": True}}
    assert_text(await deliver(gateway, event), 200, "OK")
    assert user_row(identity.db, "user_bob") == ("user_bob", "Bob", "bob@example.com", "member", None, "inactive")


async def test_user_deleted_for_an_unknown_user_changes_nothing(gateway: httpx.AsyncClient, identity: Running) -> None:
    bob(identity.db)
    event = {"type": "user.deleted", "data": {"id": "user_nobody", "deleted": True}}
    assert_text(await deliver(gateway, event), 200, "OK")
    assert identity.db.sql(f"SELECT {USER_COLUMNS} FROM identity.users") == [
        ("user_bob", "Bob", "bob@example.com", "member", None, "active"),
    ]


async def test_user_deleted_without_data_id_does_nothing(gateway: httpx.AsyncClient, identity: Running) -> None:
    bob(identity.db)
    assert_text(await deliver(gateway, {"type": "user.deleted", "data": {"deleted": True}}), 200, "OK")
    assert user_row(identity.db, "user_bob") == ("user_bob", "Bob", "bob@example.com", "member", None, "active")


async def test_unhandled_event_type_answers_ok_without_writing(gateway: httpx.AsyncClient, identity: Running) -> None:
    event = {"type": "session.created", "data": {"id": "sess_1", "user_id": "user_g"}}
    assert_text(await deliver(gateway, event), 200, "OK")
    assert user_count(identity.db) == 0


async def test_user_created_replayed_after_deletion_keeps_the_user_inactive(
    gateway: httpx.AsyncClient, identity: Running
) -> None:
    bob(identity.db)
    identity.db.sql("UPDATE identity.users SET status = 'inactive' WHERE external_id = 'user_bob'")
    event = user_event(
        "user.created", "user_bob", first="Robert", emails={"idn_1": "Robert@Example.com"},
        primary="idn_1", image_url="https://img/b.png",
    )
    assert_text(await deliver(gateway, event), 200, "OK")
    assert user_row(identity.db, "user_bob") == (
        "user_bob", "Robert", "robert@example.com", "member", "https://img/b.png", "inactive",
    )


# --- http.md step 4: a failure while handling ---


async def test_failure_while_handling_answers_internal_error(gateway: httpx.AsyncClient, identity: Running) -> None:
    # A user event without data.id fails the upsert's argument validation, as in the original.
    event = {"type": "user.created", "data": {"first_name": "Nobody"}}
    assert_text(await deliver(gateway, event), 500, "Internal error")
    assert user_count(identity.db) == 0


async def test_webhook_when_identity_is_unreachable_answers_internal_error(
    gateway_without_identity: httpx.AsyncClient,
) -> None:
    # Non-2xx makes svix retry the delivery later.
    assert_text(await deliver(gateway_without_identity, GINA_CREATED), 500, "Internal error")


async def test_webhook_answers_carry_a_request_id(gateway: httpx.AsyncClient) -> None:
    response = await gateway.post("/clerk/webhook", **signed_request("{}"))
    assert response.status_code == 200
    assert response.headers["x-request-id"]
