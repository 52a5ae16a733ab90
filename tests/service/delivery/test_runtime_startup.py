"""The reference runtime started before delivery (`make dev` starts every process at once, a
rollout restarts delivery): its WhatsApp loop waits for delivery, with backoff, instead of
exiting, and registers its account once delivery answers. Real delivery server, real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from examples.runtime.config import Config
from examples.runtime.stubs import Stubs
from examples.runtime.whatsapp import Egress, Sink
from services.delivery.app import build_server
from tests.service.delivery.conftest import NOBODY
from tests.support.database import TestDatabase
from tests.support.fake_clock import FakeClock
from tests.support.grpc_client import SERVICE_KEY
from tests.support.ports import free_port
from tests.support.waiting import eventually
from zenthor.config import ServiceName

ACCOUNT = "acct-started-late"


def _egress(tmp_path: Path, port: int) -> tuple[Egress, Stubs]:
    config = replace(Config.from_env({}), delivery_addr=f"127.0.0.1:{port}", service_key=SERVICE_KEY,
                     account_id=ACCOUNT, phone=ACCOUNT)
    stubs = Stubs.connect(config)
    return Egress(config, stubs, Sink(tmp_path / "sent.jsonl", config.worker_id)), stubs


def _retries(caplog: pytest.LogCaptureFixture) -> int:
    return sum("delivery not reachable yet" in r.getMessage() for r in caplog.records)


async def test_the_account_is_registered_once_delivery_answers(
    tmp_path: Path, settings_for: Any, db: TestDatabase, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="runtime.whatsapp")
    port = free_port()
    egress, stubs = _egress(tmp_path, port)
    stopping = asyncio.Event()
    registering = asyncio.create_task(egress.register(stopping))
    try:
        # Nothing listens yet: the loop keeps trying rather than ending with UNAVAILABLE.
        await eventually(lambda: _retries(caplog) >= 1, timeout_s=60)
        assert not registering.done()
        settings = settings_for(ServiceName.DELIVERY, temporal_address=NOBODY, messages_addr=NOBODY)
        server = await build_server(settings, clock=clock)
        await server.start(port)
        try:
            assert await asyncio.wait_for(registering, 60)
            assert db.sql("SELECT enabled FROM delivery.whatsapp_accounts WHERE account_id = %s", (ACCOUNT,)) == [(True,)]
        finally:
            await server.stop(0)
    finally:
        stopping.set()
        registering.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await registering
        await stubs.close()


async def test_a_runtime_told_to_stop_while_waiting_for_delivery_stops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="runtime.whatsapp")
    egress, stubs = _egress(tmp_path, free_port())
    stopping = asyncio.Event()
    try:
        registering = asyncio.create_task(egress.register(stopping))
        await eventually(lambda: _retries(caplog) >= 1, timeout_s=60)
        stopping.set()
        assert await asyncio.wait_for(registering, 30) is False
    finally:
        await stubs.close()
