"""The user's connection: status (once and live), disconnect with the token revoked through
the outbox (docs/hardening.md #36), and the decrypted token the task operations use."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncConnection

from services.todoist.domain.connections import Connection, ConnectionStatus, status_of
from services.todoist.domain.oauth import NO_TOKEN_KEY
from services.todoist.domain.tokens import TokenCipher
from services.todoist.store import connections as store
from services.todoist.store.connections import SealedToken
from services.todoist.store.tables import CHANGES, outbox
from services.todoist.usecases.deps import Deps
from zenthor import ids
from zenthor.auth.principal import ResolvedUser
from zenthor.errors import FailedPrecondition
from zenthor.outbox import add_event

# Outbox topic: revoke a sealed token at Todoist (payload: the ciphertext, never the token).
REVOKE_TOPIC = "todoist.revoke_token"


def cipher_of(deps: Deps) -> TokenCipher:
    if deps.cipher is None:
        raise FailedPrecondition(NO_TOKEN_KEY)
    return deps.cipher


async def get_status(deps: Deps, user: ResolvedUser) -> ConnectionStatus:
    return await get_status_of(deps, user.user_id)


async def get_status_of(deps: Deps, user_id: uuid.UUID) -> ConnectionStatus:
    async with deps.uow() as uow:
        return status_of(await store.get_for_user(uow.conn, user_id))


async def watch_status(deps: Deps, user: ResolvedUser) -> AsyncIterator[ConnectionStatus]:
    """The status at once, then whenever it changes (connect, reconnect, disconnect)."""
    assert deps.feed is not None, "the composition root gives the watch a change feed"
    async with deps.feed.subscribe(CHANGES, ids.USER.format(user.user_id)) as changes:
        last: ConnectionStatus | None = None
        while True:
            status = await get_status(deps, user)
            if status != last:
                yield status
                last = status
            await changes.wait(deps.feed.resync_s)


async def disconnect(deps: Deps, user: ResolvedUser) -> bool:
    """Deletes the connection and, in the same transaction, the outbox event that revokes its
    token at Todoist after the commit; False when there was none."""
    async with deps.uow() as uow:
        removed = await store.delete_for_user(uow.conn, user.user_id)
        if removed is None:
            return False
        await add_revocation(uow.conn, deps, removed.token_ciphertext)
        await store.notify_changed(uow.conn, ids.USER.format(user.user_id))
        await uow.commit()
    deps.kick_outbox()
    return True


async def add_revocation(conn: AsyncConnection, deps: Deps, ciphertext: str) -> None:
    """Queues the revocation of a sealed token, inside the caller's transaction."""
    key = str(deps.new_uuid())
    await add_event(conn, outbox, REVOKE_TOPIC, key, {"token_ciphertext": ciphertext}, deps.clock())


async def access_token_of(deps: Deps, user_id: uuid.UUID) -> str | None:
    """The user's decrypted access token, None when not connected. A token sealed under an
    older key is resealed under the primary one on the way (key rotation, domain.tokens)."""
    async with deps.uow() as uow:
        connection = await store.get_for_user(uow.conn, user_id)
    if connection is None:
        return None
    cipher = cipher_of(deps)
    token = cipher.decrypt(connection.token_ciphertext)
    if cipher.needs_rotation(connection.token_key_id):
        await _reseal(deps, cipher, connection)
    return token


async def _reseal(deps: Deps, cipher: TokenCipher, connection: Connection) -> None:
    ciphertext, key_id = cipher.rotate(connection.token_ciphertext)
    async with deps.uow() as uow:
        if await store.reseal(uow.conn, connection, SealedToken(ciphertext, key_id)):
            await uow.commit()
