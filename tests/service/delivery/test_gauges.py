"""Delivery's domain gauges (services/delivery/store/gauges.py through zenthor.metrics.
DomainGauges), read after rows were queued over gRPC: outbound messages by status and channel,
the oldest pending one's age on the service's clock, and the WhatsApp lease holders per account
(0 for an enabled account nobody holds, and again 0 once a lease expired)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine

from services.delivery.store.gauges import read_delivery_gauges
from services.delivery.store.tables import outbox
from tests.service.conftest import Running
from tests.support.delivery_builders import WEB, enqueue, hold_lease
from tests.support.fake_clock import FakeClock
from tests.support.grpc_client import service
from zenthor.config import ServiceName
from zenthor.db import create_engine
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2 as pb
from zenthor.metrics import DomainGauges, outbox_reading


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


@pytest.fixture
async def gauges(delivery: Running, clock: FakeClock) -> AsyncIterator[DomainGauges]:
    engine: AsyncEngine = create_engine(delivery.db.dsn_for(ServiceName.DELIVERY), 2)
    yield DomainGauges(
        "delivery", engine, [read_delivery_gauges, outbox_reading(outbox, "delivery")], interval_s=60, clock=clock
    )
    await engine.dispose()


async def test_the_gauges_show_queued_outbound_messages_and_lease_holders(
    delivery: Running, clock: FakeClock, gauges: DomainGauges
) -> None:
    await enqueue(delivery, to="5511999990001")
    clock.advance(seconds=30)
    await enqueue(delivery, to="5511999990002")
    await enqueue(delivery, to=None, account_id=None, channel=WEB)
    await hold_lease(delivery, "egress-1", account_id="default", ttl_s=60)
    await delivery.stub.UpsertWhatsAppAccount(
        pb.UpsertWhatsAppAccountRequest(account_id="spare", phone="5511000000000", enabled=True), metadata=service()
    )
    clock.advance(seconds=45)

    await gauges.refresh()

    assert gauge("zenthor_delivery_outbound_messages", status="pending", channel="whatsapp") == 2
    assert gauge("zenthor_delivery_outbound_messages", status="pending", channel="web") == 1
    assert gauge("zenthor_delivery_outbound_messages", status="processing", channel="whatsapp") == 0
    assert gauge("zenthor_delivery_oldest_pending_outbound_age_seconds") == 75
    assert gauge("zenthor_delivery_whatsapp_lease_holders", account_id="default") == 1
    assert gauge("zenthor_delivery_whatsapp_lease_holders", account_id="spare") == 0

    clock.advance(seconds=60)  # the lease's 60 s ran out and nobody renewed it
    await gauges.refresh()
    assert gauge("zenthor_delivery_whatsapp_lease_holders", account_id="default") == 0
