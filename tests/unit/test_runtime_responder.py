"""The reference runtime's responders (examples/runtime/responder.py): the echo is deterministic
and streamed in pieces; the OpenAI-compatible one speaks the streaming protocol to a local
server; the stand-in embedding fits StoreMemory."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from examples.runtime.responder import (
    EMBEDDING_DIMENSIONS,
    EchoResponder,
    ModelError,
    OpenAIResponder,
    Turn,
    build_responder,
    chunks,
    echo_text,
    embed,
    parse_stream_line,
)
from tests.support.fake_openai import FakeOpenAI

CONVERSATION = [Turn("user", "Invite Bob"), Turn("assistant", "Sure"), Turn("user", "to dinner on Friday")]


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(["Bob is ", "invited", "."])
    yield fake
    fake.close()


async def test_the_echo_streams_a_summary_of_the_last_user_message_in_pieces() -> None:
    pieces = [p async for p in EchoResponder(chunk_delay_s=0).reply(CONVERSATION)]
    assert len(pieces) > 3
    assert "".join(pieces) == echo_text(CONVERSATION)
    assert echo_text(CONVERSATION) == 'You said: "to dinner on Friday" (4 words; message 2 of this conversation).'


@pytest.mark.parametrize("text", ["", "one", "a b  c ", "  lead"])
def test_chunks_join_back_exactly(text: str) -> None:
    assert "".join(chunks(text)) == text


async def test_the_openai_responder_streams_the_deltas_of_a_chat_completion(fake_openai: FakeOpenAI) -> None:
    responder = OpenAIResponder(fake_openai.base_url, "gpt-test", "sk-test")
    try:
        pieces = [p async for p in responder.reply(CONVERSATION)]
    finally:
        await responder.aclose()
    assert pieces == ["Bob is ", "invited", "."]
    [request] = fake_openai.requests
    assert request["path"] == "/v1/chat/completions" and request["stream"] is True
    assert request["model"] == "gpt-test" and request["authorization"] == "Bearer sk-test"
    assert request["messages"] == [{"role": t.role, "content": t.content} for t in CONVERSATION]


async def test_a_model_server_error_is_retryable(fake_openai: FakeOpenAI) -> None:
    fake_openai.status = 503
    responder = OpenAIResponder(fake_openai.base_url, "gpt-test", None)
    try:
        with pytest.raises(ModelError) as failed:
            [p async for p in responder.reply(CONVERSATION)]
    finally:
        await responder.aclose()
    assert failed.value.retryable and "503" in str(failed.value)


async def test_an_unreachable_model_is_retryable() -> None:
    responder = OpenAIResponder("http://127.0.0.1:1/v1", "gpt-test", None)
    try:
        with pytest.raises(ModelError) as failed:
            [p async for p in responder.reply(CONVERSATION)]
    finally:
        await responder.aclose()
    assert failed.value.retryable


def test_stream_lines() -> None:
    assert parse_stream_line('data: {"choices": [{"delta": {"content": "hi"}}]}') == "hi"
    assert parse_stream_line('data: {"choices": [{"delta": {"role": "assistant"}}]}') == ""
    assert parse_stream_line(": keep-alive") == ""
    assert parse_stream_line("") == ""
    assert parse_stream_line("data: [DONE]") is None


def test_the_model_url_picks_the_responder() -> None:
    assert build_responder(None, "m", None, 0).model == "echo"
    assert isinstance(build_responder("http://127.0.0.1:1/v1", "m", None, 0), OpenAIResponder)


@pytest.mark.parametrize("text", ["Invite Bob to dinner", "", "x x"])
def test_the_embedding_fits_store_memory(text: str) -> None:
    vector = embed(text)
    assert len(vector) == EMBEDDING_DIMENSIONS
    assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0)
    assert embed(text) == vector
