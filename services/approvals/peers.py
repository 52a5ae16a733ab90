"""What the approvals service sends to its peers, through the outbox only: `approval.requested`
webhook events to delivery's idempotent PublishWebhookEvents, a batch per call (docs/webhooks.md)."""

from __future__ import annotations

from collections.abc import Mapping

from zenthor.clients import Peers
from zenthor.outbox import TopicHandler
from zenthor.webhooks import WEBHOOK_EVENT_TOPIC, webhook_event_handler


def outbox_handlers(peers: Peers) -> Mapping[str, TopicHandler]:
    return {WEBHOOK_EVENT_TOPIC: webhook_event_handler(peers)}
