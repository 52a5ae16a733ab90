"""`make bench`: what the auth chain costs per call, measured against peers in the same run.

Starts a real PostgreSQL and the real identity server, then times, over one gRPC channel with
16 calls in flight:
  public      GetHealthCheck (no auth: the floor of a round trip through the interceptors)
  user        GetCurrentUser with an RS256 JWT and the principal cache on (5 s TTL)
  user-nocache  the same with the cache off (one extra Postgres read per call)
  service     GetContactByPhone with the service key (auth + one indexed read)
and prints each as calls/s and as a ratio to `public`.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from services.identity.app import build_server
from tests.conftest import free_port
from tests.support.builders import alice
from tests.support.database import build_template, clone
from tests.support.jwks import FakeClerkIssuer
from zenthor.config import ServiceName, Settings
from zenthor.devstack.postgres import LocalPostgres
from zenthor.gen.zenthor.identity.v1 import identity_pb2 as pb
from zenthor.gen.zenthor.identity.v1 import identity_pb2_grpc


async def measure(call: Callable[[], Awaitable[object]], seconds: float, concurrency: int = 16) -> float:
    done = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await call()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


async def run(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pg = LocalPostgres(Path(tmp) / "data", free_port(), fast_unsafe=True)
        print("starting PostgreSQL…", flush=True)
        pg.start()
        issuer = FakeClerkIssuer()
        try:
            build_template(pg)
            db = clone(pg)
            alice(db)
            results: dict[str, float] = {}
            for cache_ttl in (5.0, 0.0):
                settings = Settings.model_validate({
                    "database_url": db.dsn_for(ServiceName.IDENTITY), "service_key": "bench-key",
                    "clerk_jwt_issuer_domain": issuer.issuer, "principal_cache_ttl_s": cache_ttl,
                    "log_level": "WARNING",
                })
                from zenthor.logs import configure_logging

                configure_logging("WARNING", "console")
                server = await build_server(settings)
                port = await server.start(0)
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    stub = identity_pb2_grpc.IdentityServiceStub(channel)
                    user = (("authorization", f"Bearer {issuer.token('user_alice', expires_in=3600)}"),)
                    key = (("x-service-key", "bench-key"),)
                    if cache_ttl:
                        print(f"measuring {seconds:g}s each…", flush=True)
                        results["public"] = await measure(lambda: stub.GetHealthCheck(pb.GetHealthCheckRequest()), seconds)
                        results["user"] = await measure(lambda: stub.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=user), seconds)
                        results["service"] = await measure(
                            lambda: stub.GetContactByPhone(pb.GetContactByPhoneRequest(phone="5511999990000"), metadata=key), seconds
                        )
                    else:
                        results["user-nocache"] = await measure(lambda: stub.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=user), seconds)
                await server.stop(0)
        finally:
            issuer.close()
            pg.stop()
    base = results["public"]
    print(f"\n{'case':<14}{'calls/s':>10}{'vs public':>11}")
    for name, rate in results.items():
        print(f"{name:<14}{rate:>10.0f}{rate / base:>10.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each measurement (default 3)")
    asyncio.run(run(parser.parse_args().seconds))


if __name__ == "__main__":
    main()
