"""`python -m bench.event_batch`: the CPU a batch of webhook events costs in Python, per event, with
its data as a Struct and as JSON text (`PublishWebhookEventRequest.data` / `data_json`), stage by
stage: the relay building the request, the protobuf bytes both ways, delivery's request check,
reading the events and checking them into stored bodies. In-process, no servers: it isolates the
part of `PublishWebhookEvents` that the drains of `python -m bench` cannot tell apart from the
rest (README, Performance, "Event data as JSON text").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from services.delivery import wire
from services.delivery.domain import webhooks as rules
from zenthor import ids
from zenthor.convert import timestamp
from zenthor.errors import InvalidArgument
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2 as pb
from zenthor.request_checks import check_request
from zenthor.webhooks import EVENT_TYPE_PB, WebhookEventType, add_publish_request, webhook_event


def job_completed_payloads(count: int) -> list[dict[str, Any]]:
    """Outbox payloads shaped as services/agent_queue/store/job_events.py writes them."""
    now = datetime.now(UTC)
    payloads = []
    for _ in range(count):
        job = ids.JOB.format(ids.JOB.new())
        data = {
            "job_id": job,
            "conversation_id": ids.CONVERSATION.format(ids.CONVERSATION.new()),
            "message_id": ids.MESSAGE.format(ids.MESSAGE.new()),
            "status": "completed",
            "attempt_count": 1,
            "model_used": "model-x",
            "error_reason": None,
            "error_message": None,
            "create_time": now.isoformat(),
            "finish_time": now.isoformat(),
        }
        payloads.append(
            webhook_event(
                WebhookEventType.JOB_COMPLETED,
                job,
                occurred_at=now,
                owner_user_id=uuid.uuid4(),
                owner_contact_id=None,
                data=data,
            )[2]
        )
    return payloads


def add_struct_request(request: pb.PublishWebhookEventsRequest, payload: Mapping[str, Any]) -> None:
    """The relay as it was before `data_json` (zenthor.webhooks.add_publish_request): the same
    event, its data as a Struct."""
    event = request.events.add(
        event_id=payload["event_id"],
        type=EVENT_TYPE_PB[WebhookEventType(payload["type"])],
        owner_user_id=payload.get("owner_user_id"),
        owner_contact_id=payload.get("owner_contact_id"),
    )
    event.occur_time.CopyFrom(timestamp(datetime.fromisoformat(payload["occurred_at"])))
    event.data.update(payload["data"])


def build(payloads: Sequence[Mapping[str, Any]], struct: bool) -> pb.PublishWebhookEventsRequest:
    request = pb.PublishWebhookEventsRequest()
    add = add_struct_request if struct else add_publish_request
    for payload in payloads:
        add(request, payload)
    return request


def checked(request: pb.PublishWebhookEventsRequest) -> list[rules.Event]:
    events = []
    for item in wire.new_events(request):
        if isinstance(item, InvalidArgument):
            raise item
        events.append(rules.checked_event(item))
    return events


def per_event_us(work: Callable[[], object], events: int, rounds: int) -> float:
    """Median over rounds of one call's time, per event (µs); each round repeats the call until
    it has run for at least 0.2 s."""
    samples = []
    for _ in range(rounds):
        calls, started = 0, time.perf_counter()
        while True:
            work()
            calls += 1
            elapsed = time.perf_counter() - started
            if elapsed >= 0.2:
                break
        samples.append(elapsed / calls / events * 1e6)
    return statistics.median(samples)


def measure(events: int, rounds: int) -> list[tuple[str, float, float]]:
    """(stage, Struct µs per event, JSON text µs per event)."""
    payloads = job_completed_payloads(events)
    rows = []
    requests = {struct: build(payloads, struct) for struct in (True, False)}
    wire_bytes = {struct: requests[struct].SerializeToString() for struct in (True, False)}
    stages: list[tuple[str, Callable[[bool], Callable[[], object]]]] = [
        ("relay: build the request", lambda s: lambda: build(payloads, s)),
        ("protobuf: serialize", lambda s: requests[s].SerializeToString),
        (
            "protobuf: parse",
            lambda s: lambda: pb.PublishWebhookEventsRequest.FromString(wire_bytes[s]),
        ),
        ("delivery: request check", lambda s: lambda: check_request(requests[s])),
        ("delivery: read and check the events", lambda s: lambda: checked(requests[s])),
    ]
    for name, work in stages:
        rows.append(
            (
                name,
                per_event_us(work(True), events, rounds),
                per_event_us(work(False), events, rounds),
            )
        )
    rows.append(
        ("bytes per event", len(wire_bytes[True]) / events, len(wire_bytes[False]) / events)
    )
    return rows


def render(rows: Sequence[tuple[str, float, float]], events: int, rounds: int) -> str:
    lines = [
        f"A batch of {events} job.completed events, median of {rounds} rounds; µs per event (bytes for the last row)",
        "",
        "| stage | data as Struct | data as JSON text | ratio |",
        "|---|---|---|---|",
    ]
    for name, struct, text in rows:
        lines.append(f"| {name} | {struct:.1f} | {text:.1f} | {struct / text:.1f}× |")
    timed = [r for r in rows if r[0] != "bytes per event"]
    struct_sum, text_sum = sum(r[1] for r in timed), sum(r[2] for r in timed)
    lines.append(
        f"| all of the above | {struct_sum:.1f} | {text_sum:.1f} | {struct_sum / text_sum:.1f}× |"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.event_batch", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--events", type=int, default=100, help="events per batch (default 100, the relay's chunk)"
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds per stage and path (default 5)"
    )
    args = parser.parse_args(argv)
    if args.events < 1 or args.rounds < 1:
        parser.error("--events and --rounds must be at least 1")
    print(render(measure(args.events, args.rounds), args.events, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
