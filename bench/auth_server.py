"""`python -m bench.auth_server`: the identity server with one handler body behind three auth
modes, so that a calls/s ratio between them measures the auth chain alone. The bench runs it as
its identity process: the other services resolve principals through it, unchanged.

GetHealthCheck (PUBLIC), GetCurrentUser (USER) and GetContactByPhone (SERVICE) each read the
bench user (`BENCH_USER_ID`) in one unit of work and build its protobuf. Everything else is
the identity service as shipped: its composition root (`services.identity.app.build_server`),
engine, principal resolver and cache, interceptor chain and access log.
"""

from __future__ import annotations

import os
import uuid

from services.identity import app, wire
from services.identity.servicer import IdentityServicer
from services.identity.store import users as user_store
from services.identity.usecases.deps import Deps
from zenthor.config import ServiceName
from zenthor.gen.zenthor.identity.v1 import identity_pb2 as pb
from zenthor.process import run_service_process
from zenthor.server import Ctx


class EqualWorkServicer(IdentityServicer):
    def __init__(self, deps: Deps) -> None:
        super().__init__(deps)
        self._user_id = uuid.UUID(os.environ["BENCH_USER_ID"])

    async def _work(self) -> pb.User:
        async with self._deps.uow() as uow:
            user = await user_store.get_user(uow.conn, self._user_id)
        assert user is not None, "the bench seeds its user before starting servers"
        return wire.user_pb(user)

    async def GetHealthCheck(self, request: pb.GetHealthCheckRequest, context: Ctx) -> pb.GetHealthCheckResponse:
        await self._work()
        return pb.GetHealthCheckResponse(status="OK")

    async def GetCurrentUser(self, request: pb.GetCurrentUserRequest, context: Ctx) -> pb.GetCurrentUserResponse:
        return pb.GetCurrentUserResponse(user=await self._work())

    async def GetContactByPhone(
        self, request: pb.GetContactByPhoneRequest, context: Ctx
    ) -> pb.GetContactByPhoneResponse:
        await self._work()
        return pb.GetContactByPhoneResponse()


if __name__ == "__main__":
    # The composition root builds its servicer by this name; swapping it is the only change.
    setattr(app, "IdentityServicer", EqualWorkServicer)  # noqa: B010  (the name build_server looks up)
    run_service_process(ServiceName.IDENTITY, app.build_server)
