"""The todoist service's rules without I/O: the authorize URL, state expiry, error texts, task
bodies and summaries, the one-segment task path, page bodies, token sealing, Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

import httpx
import pytest
from cryptography.fernet import Fernet

from services.todoist.domain import http, oauth, tasks
from services.todoist.domain.oauth import OAuthSettings, OAuthState, StateStatus
from services.todoist.domain.tokens import TokenCipher, key_id
from services.todoist.peers import retry_after_s
from zenthor.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)

T0 = datetime.fromtimestamp(1_700_000_000, UTC)


def settings(authorize_url: str = "https://todoist.com/oauth/authorize", **overrides: object) -> OAuthSettings:
    values: dict[str, object] = {
        "client_id": "tdcid",
        "has_client_secret": True,
        "redirect_uri": "https://app.example.com/settings",
        "scope": "data:read_write",
        "authorize_url": authorize_url,
        "has_token_key": True,
    }
    values.update(overrides)
    return OAuthSettings(**values)  # type: ignore[arg-type]


def test_the_authorize_url_sets_its_parameters_in_the_originals_order() -> None:
    assert oauth.authorization_url(settings(), "todoist_s") == (
        "https://todoist.com/oauth/authorize?client_id=tdcid&scope=data%3Aread_write&state=todoist_s"
        "&redirect_uri=https%3A%2F%2Fapp.example.com%2Fsettings"
    )


def test_a_configured_authorize_urls_own_parameters_are_kept_and_same_named_ones_overwritten() -> None:
    url = oauth.authorization_url(settings("https://t.example/auth?prompt=consent&state=old&state=older"), "todoist_s")
    assert url == (
        "https://t.example/auth?prompt=consent&state=todoist_s&client_id=tdcid&scope=data%3Aread_write"
        "&redirect_uri=https%3A%2F%2Fapp.example.com%2Fsettings"
    )


@pytest.mark.parametrize("missing", ["client_id", "has_client_secret", "redirect_uri"])
def test_missing_oauth_configuration_is_the_originals_error(missing: str) -> None:
    empty = {"client_id": "", "has_client_secret": False, "redirect_uri": None}[missing]
    with pytest.raises(FailedPrecondition, match="Todoist OAuth is not configured"):
        settings(**{missing: empty}).check()


def test_without_a_token_key_nothing_can_be_connected() -> None:
    with pytest.raises(FailedPrecondition, match="TODOIST_TOKEN_KEY"):
        settings(has_token_key=False).check()


def test_a_state_expires_strictly_after_its_ttl() -> None:
    state = OAuthState("todoist_s", user_id=None, status=StateStatus.OPEN, created_at=T0, expires_at=oauth.expiry_for(T0))  # type: ignore[arg-type]
    assert state.expires_at == T0 + timedelta(minutes=10)
    assert not oauth.has_expired(state, T0 + timedelta(minutes=10))
    assert oauth.has_expired(state, T0 + timedelta(minutes=10, microseconds=1))


def test_states_are_todoist_and_a_uuid4() -> None:
    import uuid

    value = oauth.state_for(uuid.uuid4())
    assert value.startswith("todoist_") and uuid.UUID(value.removeprefix("todoist_")).version == 4


def test_error_bodies_are_cut_at_300_characters() -> None:
    assert http.request_failed_message(404, "Task not found") == "Todoist request failed (404): Task not found"
    assert http.request_failed_message(500, "") == "Todoist request failed (500): No response body"
    assert oauth.exchange_failed_message("x" * 350) == "Failed to exchange Todoist OAuth code: " + "x" * 300 + "..."
    assert oauth.exchange_failed_message("x" * 300).endswith("x" * 300)


def test_todoists_answers_map_to_our_statuses() -> None:
    assert isinstance(http.error_for_status(404, "m"), NotFound)
    assert isinstance(http.error_for_status(429, "m"), ResourceExhausted)
    assert isinstance(http.error_for_status(503, "m"), Unavailable)
    assert isinstance(http.error_for_status(401, "m"), FailedPrecondition)
    assert isinstance(oauth.exchange_error(400, '{"error": "invalid_grant"}'), FailedPrecondition)
    assert isinstance(oauth.exchange_error(502, ""), Unavailable)


def test_a_token_response_needs_an_access_token() -> None:
    grant = oauth.token_grant({"access_token": "tok1", "token_type": "Bearer", "scope": "data:read_write"})
    assert (grant.token_type, grant.scope) == ("Bearer", "data:read_write")
    assert "tok1" not in repr(grant)
    for body in ({}, {"access_token": ""}, None, []):
        with pytest.raises(FailedPrecondition, match="did not return an access token"):
            oauth.token_grant(body)


def test_create_body_sends_only_what_is_given_and_labels_whenever_present() -> None:
    body = tasks.new_task_body(tasks.NewTask(content="Pay rent", labels=(), priority=4, due_string="tomorrow 9am"))
    assert body == {"content": "Pay rent", "labels": [], "priority": 4, "due_string": "tomorrow 9am", "due_lang": "en"}
    assert tasks.new_task_body(tasks.NewTask(content="x", description="", priority=0)) == {"content": "x"}


def test_reschedule_needs_a_due_field() -> None:
    for due_string, due_date_time in ((None, None), ("", "")):
        with pytest.raises(InvalidArgument, match=r"Either dueString or dueDateTime is required\."):
            tasks.check_reschedule(due_string, due_date_time)
    assert tasks.check_reschedule("friday", "2030-01-01T09:00:00Z") == {
        "due_string": "friday", "due_lang": "en", "due_datetime": "2030-01-01T09:00:00Z",
    }


@pytest.mark.parametrize("task_id", ["../projects", "..", ".", "a/b", "x?y=1", "7#f", "%2E%2E", "a b", "ü/ß"])
def test_task_ids_become_one_path_segment(task_id: str) -> None:
    segment = tasks.task_segment(task_id)
    assert "/" not in segment and "?" not in segment and "#" not in segment and "." not in segment
    assert unquote(segment) == task_id
    path = httpx.URL("http://h/api/v1" + tasks.close_path(task_id)).raw_path.decode()
    assert path == f"/api/v1/tasks/{segment}/close"


def test_task_ids_with_control_characters_are_refused() -> None:
    with pytest.raises(InvalidArgument) as error:
        tasks.check_task_id("t1\r\nHost: evil")
    assert error.value.field == "task_id"


def test_a_todoist_task_maps_to_the_summary_leaving_absent_fields_out() -> None:
    task = tasks.task_of(
        {"id": "t1", "content": "Pay rent", "priority": 4, "labels": ["home"],
         "due": {"date": "2024-01-02", "datetime": "2024-01-02T09:00:00", "string": "tomorrow 9am"}}
    )
    assert task == tasks.TodoistTask(
        id="t1", content="Pay rent", priority=4, labels=("home",), due_date="2024-01-02",
        due_date_time="2024-01-02T09:00:00", due_string="tomorrow 9am",
    )
    assert tasks.task_of(None) is None and tasks.task_of({"content": "no id"}) is None


def test_a_v1_page_is_results_and_next_cursor() -> None:
    page = tasks.task_page_of({"results": [{"id": "a"}, {"id": "b"}], "next_cursor": "c2"})
    assert page is not None and [t.id for t in page.tasks] == ["a", "b"] and page.next_cursor == "c2"
    assert tasks.task_page_of({"results": [], "next_cursor": None}) == tasks.TaskPage([], None)
    assert tasks.task_page_of([{"id": "a"}]) is None  # the original's bare array is not a v1 page


def test_tokens_are_sealed_and_a_rotated_key_still_opens_old_ones() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    sealed, sealed_by = TokenCipher([old]).encrypt("tok1")
    assert "tok1" not in sealed and sealed_by == key_id(old)
    rotated = TokenCipher([new, old])
    assert rotated.decrypt(sealed) == "tok1" and rotated.needs_rotation(sealed_by)
    resealed, resealed_by = rotated.rotate(sealed)
    assert TokenCipher([new]).decrypt(resealed) == "tok1" and resealed_by == key_id(new)
    with pytest.raises(FailedPrecondition, match="reconnect Todoist"):
        TokenCipher([new]).decrypt(sealed)
    with pytest.raises(ValueError, match="Fernet keys"):
        TokenCipher(["not-a-key"])
    assert TokenCipher.from_setting(" ") is None


def test_retry_after_reads_seconds_or_an_http_date() -> None:
    def answer(value: str) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": value})

    assert retry_after_s(answer("2")) == 2.0
    assert retry_after_s(answer("Tue, 14 Nov 2023 22:13:30 GMT"), now=datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)) == 10.0
    assert retry_after_s(answer("soon")) is None
    assert retry_after_s(httpx.Response(429)) is None
