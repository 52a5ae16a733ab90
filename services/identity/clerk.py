"""Clerk Backend API client (list users), the only outbound HTTP of identity."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from zenthor.errors import FailedPrecondition, Unavailable

PAGE_SIZE = 100  # spec identity.md §5 clerk/sync: page size 100


@dataclass(frozen=True)
class ClerkPage:
    users: list[Mapping[str, Any]]
    total_count: int


class ClerkDirectory:
    """`GET /users?limit&offset` and `GET /users/count` of the Clerk Backend API."""

    def __init__(self, base_url: str, secret_key: str | None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._base_url = base_url.rstrip("/")
        self._secret_key = secret_key
        self._transport = transport

    async def pages(self) -> Any:
        if not self._secret_key:
            raise FailedPrecondition("CLERK_SECRET_KEY is not set")
        headers = {"Authorization": f"Bearer {self._secret_key}"}
        async with httpx.AsyncClient(base_url=self._base_url, headers=headers, timeout=10, transport=self._transport) as client:
            total = int((await self._get(client, "/users/count", {}))["total_count"])
            offset = 0
            while True:
                users = await self._get(client, "/users", {"limit": PAGE_SIZE, "offset": offset, "order_by": "+created_at"})
                if not users:
                    return
                yield ClerkPage(users=list(users), total_count=total)
                offset += PAGE_SIZE
                if offset >= total:
                    return

    async def _get(self, client: httpx.AsyncClient, path: str, params: Mapping[str, Any]) -> Any:
        try:
            response = await client.get(path, params=dict(params))
        except httpx.HTTPError as e:
            raise Unavailable(f"Clerk API unreachable: {e.__class__.__name__}") from e
        if response.status_code >= 400:
            raise Unavailable(f"Clerk API answered {response.status_code} for {path}")
        return response.json()
