"""The reference runtime's pure parts: which errors retry, what the model reads, when to ask for
an approval, and its configuration."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from examples.runtime.config import Config
from examples.runtime.jobs import classify, seconds, turns_of, wants_approval
from examples.runtime.responder import ModelError, Turn
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as msg


class FakeRpcError(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=f"{code.name} details")


@pytest.mark.parametrize(("code", "retryable"), [
    (grpc.StatusCode.UNAVAILABLE, True),
    (grpc.StatusCode.DEADLINE_EXCEEDED, True),
    (grpc.StatusCode.INVALID_ARGUMENT, False),
    (grpc.StatusCode.FAILED_PRECONDITION, False),
    (grpc.StatusCode.PERMISSION_DENIED, False),
])
def test_backend_errors_retry_only_when_another_attempt_can_succeed(code: grpc.StatusCode, retryable: bool) -> None:
    failure = classify(FakeRpcError(code))
    assert failure.retryable is retryable
    assert failure.reason == f"backend_{code.name.lower()}" and len(failure.reason) <= 64


def test_model_errors_keep_their_own_verdict_and_others_fail_for_good() -> None:
    assert classify(ModelError("429", retryable=True)).retryable
    assert not classify(ModelError("401", retryable=False)).retryable
    assert classify(ValueError("bug")).reason == "unknown"
    assert not classify(ValueError("bug")).retryable


def test_the_model_reads_every_role_in_order_without_empty_placeholders() -> None:
    messages = [
        msg.Message(role=msg.MESSAGE_ROLE_SYSTEM, content="summary"),
        msg.Message(role=msg.MESSAGE_ROLE_USER, content="hi"),
        msg.Message(role=msg.MESSAGE_ROLE_ASSISTANT, content="", streaming=True),
        msg.Message(role=msg.MESSAGE_ROLE_ASSISTANT, content="hello"),
        msg.Message(role=msg.MESSAGE_ROLE_USER, content="/approve it"),
    ]
    assert turns_of(messages) == [Turn("system", "summary"), Turn("user", "hi"), Turn("assistant", "hello"),
                                  Turn("user", "/approve it")]


def test_only_the_last_user_message_asks_for_an_approval() -> None:
    assert wants_approval([Turn("user", "please /approve this")])
    assert not wants_approval([Turn("user", "/approve"), Turn("assistant", "done"), Turn("user", "thanks")])
    assert not wants_approval([])


def test_config_defaults_and_overrides() -> None:
    default = Config.from_env({})
    assert default.lease_s == 60 and default.heartbeat_s == 20 and default.whatsapp
    assert default.worker_id.startswith("runtime-") and default.model_url is None
    assert default.sink_path == Path(".data/whatsapp-sent.jsonl")
    custom = Config.from_env({"WORKER_ID": "w1", "ZENTHOR_RUNTIME_LEASE_S": "6", "ENABLE_WHATSAPP": "false",
                              "AGENT_SECRET": "k", "ZENTHOR_MODEL_URL": "http://m/v1"})
    assert (custom.worker_id, custom.heartbeat_s, custom.whatsapp, custom.service_key) == ("w1", 2, False, "k")
    assert custom.model_url == "http://m/v1"


def test_durations() -> None:
    assert seconds(1.5).ToNanoseconds() == 1_500_000_000
