"""Where a reply's text comes from: a deterministic echo by default, an OpenAI-compatible chat
endpoint (streaming) when ZENTHOR_MODEL_URL is set. Both yield the reply in chunks."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import httpx

Role = Literal["user", "assistant", "system"]
# StoreMemory takes text-embedding-3-small vectors.
EMBEDDING_DIMENSIONS = 1536


@dataclass(frozen=True)
class Turn:
    role: Role
    content: str


class ModelError(Exception):
    """A failed model call; `retryable` says whether another attempt may succeed."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Responder(Protocol):
    model: str

    def reply(self, turns: Sequence[Turn]) -> AsyncIterator[str]: ...


def last_user_message(turns: Sequence[Turn]) -> str:
    return next((t.content for t in reversed(turns) if t.role == "user"), "")


def echo_text(turns: Sequence[Turn]) -> str:
    """The echo responder's whole reply: the last user message and a one-line summary."""
    said = last_user_message(turns).strip()
    asked = sum(1 for t in turns if t.role == "user")
    return f'You said: "{said}" ({len(said.split())} words; message {asked} of this conversation).'


def chunks(text: str) -> list[str]:
    """Word-sized pieces that join back into `text` exactly."""
    pieces = text.split(" ")
    return [p + " " for p in pieces[:-1]] + [pieces[-1]]


class EchoResponder:
    """Model-free and deterministic; `chunk_delay_s` paces it like a model's stream (and lets a
    test catch it mid-reply)."""

    model = "echo"

    def __init__(self, chunk_delay_s: float) -> None:
        self._delay_s = chunk_delay_s

    async def reply(self, turns: Sequence[Turn]) -> AsyncIterator[str]:
        for piece in chunks(echo_text(turns)):
            await asyncio.sleep(self._delay_s)
            yield piece


class OpenAIResponder:
    """`POST {base_url}/chat/completions` with `stream: true`; reads the server-sent `data:`
    lines until `[DONE]`, yielding each `choices[0].delta.content`."""

    def __init__(self, base_url: str, model: str, api_key: str | None, timeout_s: float = 60.0) -> None:
        self.model = model
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)

    async def reply(self, turns: Sequence[Turn]) -> AsyncIterator[str]:
        body = {
            "model": self.model,
            "stream": True,
            "messages": [{"role": t.role, "content": t.content} for t in turns],
        }
        try:
            async with self._client.stream("POST", "/chat/completions", json=body) as response:
                if response.status_code != 200:
                    await response.aread()
                    retryable = response.status_code == 429 or response.status_code >= 500
                    raise ModelError(f"model answered {response.status_code}: {response.text[:200]}",
                                     retryable=retryable)
                async for line in response.aiter_lines():
                    delta = parse_stream_line(line)
                    if delta is None:
                        return
                    if delta:
                        yield delta
        except httpx.TransportError as e:
            raise ModelError(f"model unreachable: {e!r}", retryable=True) from e

    async def aclose(self) -> None:
        await self._client.aclose()


def parse_stream_line(line: str) -> str | None:
    """The text of one line of an OpenAI chat stream: "" for lines without text (blank lines,
    comments, role-only deltas), None at `data: [DONE]`."""
    if not line.startswith("data:"):
        return ""
    data = line[5:].strip()
    if data == "[DONE]":
        return None
    choices = json.loads(data).get("choices") or [{}]
    content = (choices[0].get("delta") or {}).get("content")
    return content if isinstance(content, str) else ""


def embed(text: str) -> list[float]:
    """A deterministic stand-in for an embedding model: words hashed into 1536 buckets,
    normalised, so equal texts get equal vectors and shared words raise the cosine."""
    vector = [0.0] * EMBEDDING_DIMENSIONS
    for word in text.lower().split() or [""]:
        digest = hashlib.sha256(word.encode()).digest()
        vector[int.from_bytes(digest[:4], "big") % EMBEDDING_DIMENSIONS] += 1.0 if digest[4] % 2 else -1.0
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:  # every word cancelled out: any fixed unit vector will do
        vector[0], norm = 1.0, 1.0
    return [v / norm for v in vector]


def build_responder(model_url: str | None, model_name: str, api_key: str | None, chunk_delay_s: float) -> Responder:
    if model_url:
        return OpenAIResponder(model_url, model_name, api_key)
    return EchoResponder(chunk_delay_s)
