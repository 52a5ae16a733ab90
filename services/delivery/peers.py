"""What delivery sends to its peers through the outbox: the delivery outcome of a message
(finding 27) to messages' idempotent MarkMessageDelivery. Retry starts (zenthor.retries) are
the other topic."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc

from services.delivery.domain.outbound import MARK_DELIVERY_TOPIC
from zenthor.clients import Peers
from zenthor.config import ServiceName
from zenthor.gen.zenthor.messages.v1 import messages_pb2
from zenthor.outbox import Handler, PermanentDeliveryError

_OUTCOME = {"delivered": messages_pb2.MESSAGE_STATUS_DELIVERED, "failed": messages_pb2.MESSAGE_STATUS_FAILED}
# The message is gone, or already carries another final outcome: no retry can change that.
_PERMANENT = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION})


def outbox_handlers(peers: Peers) -> dict[str, Handler]:
    async def mark_message_delivery(payload: Mapping[str, Any]) -> None:
        request = messages_pb2.MarkMessageDeliveryRequest(
            message_id=payload["message_id"], status=_OUTCOME[payload["outcome"]]
        )
        try:
            await peers.stub(ServiceName.MESSAGES).MarkMessageDelivery(request)
        except grpc.aio.AioRpcError as e:
            if e.code() in _PERMANENT:
                raise PermanentDeliveryError(f"MarkMessageDelivery: {e.code().name}: {e.details()}") from e
            raise

    return {MARK_DELIVERY_TOPIC: mark_message_delivery}
