"""Inbound dedupe use cases (the WhatsApp ingress and the daily sweep)."""

from __future__ import annotations

from datetime import timedelta

from services.messages.domain import dedupe as rules
from services.messages.domain.conversations import Channel
from services.messages.store import dedupe as store
from services.messages.usecases.deps import Deps


async def check_and_register_inbound(deps: Deps, channel: Channel, channel_message_id: str, account_id: str) -> bool:
    """True when the provider message was seen before (nothing written)."""
    channel_message_id = rules.check_channel_message_id(channel_message_id)
    account = rules.check_account_id(account_id)
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
    retention = rules.check_retention(older_than)
    batch = rules.check_cleanup_batch(batch_size)
    async with deps.uow() as uow:
        deleted, more = await store.delete_inbound_before(uow.conn, deps.clock() - retention, batch)
        await uow.commit()
    return deleted, more
