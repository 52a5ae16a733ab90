"""A user's Todoist connection as the service keeps it and as the user may see it (never the
token), and the profile read from Todoist's `/user`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Profile:
    email: str | None
    name: str | None


@dataclass(frozen=True)
class ConnectionStatus:
    connected: bool
    account_email: str | None = None
    account_name: str | None = None
    scope: str | None = None
    updated_at: datetime | None = None


NOT_CONNECTED = ConnectionStatus(connected=False)


@dataclass(frozen=True)
class Connection:
    """A stored connection; `token_ciphertext` is the Fernet token of the access token."""

    id: uuid.UUID
    user_id: uuid.UUID
    token_ciphertext: str
    token_key_id: str
    token_type: str | None
    scope: str | None
    account_email: str | None
    account_name: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def status(self) -> ConnectionStatus:
        return ConnectionStatus(
            connected=True,
            account_email=self.account_email,
            account_name=self.account_name,
            scope=self.scope,
            updated_at=self.updated_at,
        )


def status_of(connection: Connection | None) -> ConnectionStatus:
    return connection.status if connection is not None else NOT_CONNECTED


def profile_of(data: Any) -> Profile | None:
    """`email`, and `full_name` else `name`, from Todoist's user object."""
    if not isinstance(data, dict):
        return None
    email = data.get("email")
    name = data.get("full_name") or data.get("name")
    return Profile(
        email=email if isinstance(email, str) and email else None,
        name=name if isinstance(name, str) and name else None,
    )
