"""Inbound dedupe use cases (the WhatsApp ingress and the daily sweep)."""

from __future__ import annotations

from datetime import timedelta

from services.messages import domain
from services.messages.domain import Channel
from services.messages.store import dedupe as store
from services.messages.usecases.deps import Deps
from zenthor.errors import InvalidArgument

# spec inboundDedupe.cleanup: olderThanMs defaults to 86 400 000 (24 h).
DEFAULT_DEDUPE_RETENTION = timedelta(hours=24)
DEFAULT_CLEANUP_BATCH = 1_000
MAX_CLEANUP_BATCH = 10_000


async def check_and_register_inbound(deps: Deps, channel: Channel, channel_message_id: str, account_id: str) -> bool:
    """True when the provider message was seen before (nothing written)."""
    channel_message_id = domain.check_channel_message_id(channel_message_id)
    account = domain.check_account_id(account_id)
    async with deps.uow() as uow:
        registered = await store.register_inbound(
            uow.conn,
            channel=channel,
            account_id=account,
            channel_message_id=channel_message_id,
            now=deps.clock(),
        )
        await uow.commit()
    return not registered


async def cleanup_inbound_dedupe(deps: Deps, older_than: timedelta | None, batch_size: int) -> tuple[int, bool]:
    """One batch of the daily sweep: (deleted, more due)."""
    retention = DEFAULT_DEDUPE_RETENTION if older_than is None else older_than
    if retention < timedelta(0):
        raise InvalidArgument("older_than", "must not be negative")
    batch = domain.check_page_size(batch_size, "batch_size", default=DEFAULT_CLEANUP_BATCH, maximum=MAX_CLEANUP_BATCH)
    async with deps.uow() as uow:
        deleted, more = await store.delete_inbound_before(uow.conn, deps.clock() - retention, batch)
        await uow.commit()
    return deleted, more
