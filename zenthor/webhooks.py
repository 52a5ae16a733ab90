"""Completion webhook events as the services that own them emit them (docs/webhooks.md).

A service stores the event in its outbox in the transaction of the change itself
(`webhook_event` + `zenthor.outbox.add_events`); after commit its relay hands it, with up to
MAX_PUBLISH_BATCH others, to delivery's PublishWebhookEvents (`webhook_event_handler`), which is
idempotent on the event id and fans each event out to its owner's subscribed endpoints, one
delivery (one WebhookDeliveryWorkflow) each, in one transaction for the whole batch.

    emitter tx: state change + outbox(delivery.publish_webhook_event, key = event id)
        ──relay, a chunk per call──► delivery.PublishWebhookEvents ──► one delivery row per endpoint
                                                                    ──outbox──► WebhookDeliveryWorkflow

The event id is `<type>:<entity id>` (`job.completed:job_…`): each event happens once per entity,
so the id is its natural idempotency key, and receivers get it as `svix-id`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from zenthor import ids
from zenthor.clients import Peers
from zenthor.convert import timestamp
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2 as pb
from zenthor.logs import get_logger
from zenthor.outbox import Batched, Handler, PermanentDeliveryError
from zenthor.retries import TemporalClientProvider

log = get_logger("zenthor.webhooks")

WEBHOOK_EVENT_TOPIC = "delivery.publish_webhook_event"
# Events per PublishWebhookEvents call: the relay's chunk, and what delivery accepts.
MAX_PUBLISH_BATCH = 100


class WebhookEventType(StrEnum):
    JOB_COMPLETED = "job.completed"
    JOB_FAILED = "job.failed"
    APPROVAL_REQUESTED = "approval.requested"
    MESSAGE_CREATED = "message.created"


EVENT_TYPE_PB = {
    WebhookEventType.JOB_COMPLETED: pb.WEBHOOK_EVENT_TYPE_JOB_COMPLETED,
    WebhookEventType.JOB_FAILED: pb.WEBHOOK_EVENT_TYPE_JOB_FAILED,
    WebhookEventType.APPROVAL_REQUESTED: pb.WEBHOOK_EVENT_TYPE_APPROVAL_REQUESTED,
    WebhookEventType.MESSAGE_CREATED: pb.WEBHOOK_EVENT_TYPE_MESSAGE_CREATED,
}

OutboxEvent = tuple[str, str, dict[str, Any]]


def webhook_event_id(event_type: WebhookEventType, entity_ref: str) -> str:
    return f"{event_type.value}:{entity_ref}"


def iso(value: datetime) -> str:
    return value.isoformat()


def webhook_event(
    event_type: WebhookEventType,
    entity_ref: str,
    *,
    occurred_at: datetime,
    owner_user_id: Any,
    owner_contact_id: Any,
    data: Mapping[str, Any],
) -> OutboxEvent:
    """The (topic, key, payload) of one event for `zenthor.outbox.add_events`. The owner ids are
    UUIDs (or None); `data` is the event's JSON object as receivers get it."""
    event_id = webhook_event_id(event_type, entity_ref)
    payload = {
        "event_id": event_id,
        "type": event_type.value,
        "occurred_at": iso(occurred_at),
        "owner_user_id": ids.USER.format(owner_user_id) if owner_user_id else None,
        "owner_contact_id": ids.CONTACT.format(owner_contact_id) if owner_contact_id else None,
        "data": dict(data),
    }
    return WEBHOOK_EVENT_TOPIC, event_id, payload


_EVENT_TYPE_PB_BY_NAME = {t.value: v for t, v in EVENT_TYPE_PB.items()}
# Event JSON as it travels to delivery (`data_json`) and as delivery stores the body receivers
# get: compact, characters as they are, finite numbers only. One encoder for all (json.dumps
# with an option builds a new one per call).
EVENT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def add_publish_request(request: pb.PublishWebhookEventsRequest, payload: Mapping[str, Any]) -> None:
    """Appends the event of an outbox payload `webhook_event` stored (or a statement built the
    same way, services/agent_queue/store/job_events.py) to `request`, built in place: a message
    built apart and then handed to the batch is copied. The data goes as JSON text: a Struct
    costs a walk of its tree to build here and again to check and read in delivery, which for a
    busy queue's job.completed events was most of the relay's and delivery's CPU."""
    event = request.events.add(
        event_id=payload["event_id"],
        type=_EVENT_TYPE_PB_BY_NAME[payload["type"]],
        owner_user_id=payload.get("owner_user_id"),
        owner_contact_id=payload.get("owner_contact_id"),
        data_json=EVENT_JSON.encode(payload["data"]),
    )
    event.occur_time.CopyFrom(timestamp(datetime.fromisoformat(payload["occurred_at"])))


def webhook_event_handler(peers: Peers) -> Batched:
    """The outbox handler for WEBHOOK_EVENT_TOPIC, for every emitting service's relay: a chunk of
    events per PublishWebhookEvents call (a busy job queue finishes thousands of jobs a second;
    one call each would make the round trips the limit). A refused event is dead-lettered (no
    retry can make it valid); a failed call fails, and retries, the whole chunk."""

    async def publish(payloads: Sequence[Mapping[str, Any]]) -> list[Exception | None]:
        request = pb.PublishWebhookEventsRequest()
        for payload in payloads:
            add_publish_request(request, payload)
        reply = await peers.delivery().PublishWebhookEvents(request)
        return [
            PermanentDeliveryError(f"{r.refusal.field}: {r.refusal.description}") if r.HasField("refusal") else None
            for r in reply.results
        ]

    return Batched(publish, max_size=MAX_PUBLISH_BATCH)


# --- the delivery workflow, started by name from delivery's outbox (as zenthor.retries) ---

WEBHOOK_DELIVERY_WORKFLOW = "WebhookDeliveryWorkflow"
WEBHOOK_DELIVERY_TOPIC = "temporal.webhook_delivery"


@dataclass
class WebhookDeliveryInput:
    """WebhookDeliveryWorkflow's one input: which delivery and attempt series, and the delivery
    service's webhook settings (the retry schedule, the POST's bound, the dev address flag)."""

    delivery_id: str  # whd_…
    series: int = 1
    initial_interval_s: float = 10.0
    maximum_interval_s: float = 14_400.0
    max_attempts: int = 13
    timeout_s: float = 15.0
    allow_private: bool = False


def webhook_workflow_id(delivery_ref: str, series: int) -> str:
    """The first series runs under the delivery id itself, each redelivery under `<id>-<series>`:
    a repeated start of one series is a no-op, a redelivery is a new run."""
    return delivery_ref if series == 1 else f"{delivery_ref}-{series}"


def webhook_delivery_starter(temporal: TemporalClientProvider, task_queue: str) -> Handler:
    """The outbox handler for WEBHOOK_DELIVERY_TOPIC: starts the run; an id already used means an
    earlier delivery of this event started it, which is success."""

    async def start(payload: Mapping[str, Any]) -> None:
        client = await temporal.get()
        workflow_id = payload["workflow_id"]
        try:
            await client.start_workflow(
                WEBHOOK_DELIVERY_WORKFLOW,
                WebhookDeliveryInput(**payload["input"]),
                id=workflow_id,
                task_queue=task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            )
        except WorkflowAlreadyStartedError:
            log.info("webhook.duplicate_start", workflow_id=workflow_id)
            return
        log.info("webhook.started", workflow_id=workflow_id)

    return start
