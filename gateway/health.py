"""Probes: liveness is the process answering; readiness is every peer we need serving."""

from __future__ import annotations

import asyncio

import grpc
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from grpc_health.v1 import health_pb2

from gateway.deps import AppPeers
from zenthor.clients import Peers, health_check
from zenthor.config import ServiceName

router = APIRouter(tags=["health"])

# All seven, as every deployment runs them: the contract routes (gateway/rest.py) reach six
# today (delivery has no RPC people call yet) and a new service's routes need no change here.
READINESS_PEERS: tuple[ServiceName, ...] = tuple(ServiceName)
# Under the Kubernetes default probe timeout (1 s): answer 503 rather than time out.
PROBE_TIMEOUT_S = 0.8


@router.get("/healthz", summary="Liveness")
async def liveness() -> dict[str, str]:
    return {"status": "ok"}


async def _peer_health(peers: Peers, service: ServiceName) -> str:
    check = health_check(peers.channel(service))
    try:
        # service "" is the server as a whole; it turns NOT_SERVING on graceful stop. A probe
        # reports the peer as it is now, so no waiting for a reconnect (Peers' default).
        reply = await check(
            health_pb2.HealthCheckRequest(service=""), timeout=PROBE_TIMEOUT_S, wait_for_ready=False
        )
    except grpc.aio.AioRpcError as e:
        return e.code().name
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


@router.get("/readyz", summary="Readiness: 503 unless every peer reports SERVING")
async def readiness(peers: AppPeers) -> JSONResponse:
    states = await asyncio.gather(*(_peer_health(peers, s) for s in READINESS_PEERS))
    checks = {service.value: state for service, state in zip(READINESS_PEERS, states, strict=True)}
    ready = all(state == "SERVING" for state in states)
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "peers": checks},
        status_code=200 if ready else 503,
    )
