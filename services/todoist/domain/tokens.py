"""Access tokens at rest (docs/hardening.md #36): Fernet (AES-128-CBC + HMAC-SHA256) under the
keys of `TODOIST_TOKEN_KEY`. The first key encrypts, every key decrypts (MultiFernet), so a new
key is rotated in by putting it first; each row records which key sealed it, so an operator
knows when an old key may go."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from zenthor.errors import FailedPrecondition

UNREADABLE = "The stored Todoist token cannot be decrypted with TODOIST_TOKEN_KEY; reconnect Todoist."


def key_id(key: str) -> str:
    """A short fingerprint of a key (not the key): what `connections.token_key_id` holds."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


class TokenCipher:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("TODOIST_TOKEN_KEY holds no key")
        try:
            fernets = [Fernet(key.encode()) for key in keys]
        except ValueError as e:  # wrong length or not urlsafe base64
            raise ValueError(
                "TODOIST_TOKEN_KEY must be Fernet keys (Fernet.generate_key()) separated by commas"
            ) from e
        self._multi = MultiFernet(fernets)
        self.primary_key_id = key_id(keys[0])

    @classmethod
    def from_setting(cls, value: str | None) -> TokenCipher | None:
        """The cipher of a `TODOIST_TOKEN_KEY` value; None when it is unset."""
        keys = [k.strip() for k in (value or "").split(",") if k.strip()]
        return cls(keys) if keys else None

    def encrypt(self, token: str) -> tuple[str, str]:
        """(ciphertext, id of the key that sealed it)."""
        return self._multi.encrypt(token.encode()).decode(), self.primary_key_id

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._multi.decrypt(ciphertext.encode()).decode()
        except InvalidToken:
            raise FailedPrecondition(UNREADABLE) from None

    def needs_rotation(self, token_key_id: str) -> bool:
        return token_key_id != self.primary_key_id

    def rotate(self, ciphertext: str) -> tuple[str, str]:
        """The same token sealed under the primary key."""
        try:
            return self._multi.rotate(ciphertext.encode()).decode(), self.primary_key_id
        except InvalidToken:
            raise FailedPrecondition(UNREADABLE) from None
