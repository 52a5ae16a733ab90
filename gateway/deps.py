"""Route dependencies, chained with Annotated: settings, peers, the caller's request id and
bearer token as the metadata of the gRPC call a route makes on the caller's behalf."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from zenthor.clients import Peers
from zenthor.config import Settings
from zenthor.interceptors import REQUEST_ID_HEADER

if TYPE_CHECKING:
    from zenthor.gen.zenthor.identity.v1.identity_pb2_grpc import IdentityServiceAsyncStub

Metadata = tuple[tuple[str, str], ...]

# Every dependency is `async def`: FastAPI runs plain `def` ones in a worker thread, where no
# event loop exists for the grpc.aio channels Peers opens lazily.


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _peers(request: Request) -> Peers:
    peers: Peers = request.app.state.peers
    return peers


async def _request_id(request: Request) -> str:
    # Set by RequestContextMiddleware before any route runs.
    return str(request.state.request_id)


AppSettings = Annotated[Settings, Depends(_settings)]
AppPeers = Annotated[Peers, Depends(_peers)]
RequestId = Annotated[str, Depends(_request_id)]

# No auto_error: public routes exist, and identity is the one that says "Not authenticated".
_bearer = HTTPBearer(auto_error=False, description="Clerk session JWT, forwarded to the services")
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def _call_metadata(request_id: RequestId, credentials: BearerCredentials) -> Metadata:
    metadata: list[tuple[str, str]] = [(REQUEST_ID_HEADER, request_id)]
    if credentials is not None:
        metadata.append(("authorization", f"Bearer {credentials.credentials}"))
    return tuple(metadata)


async def _service_metadata(request_id: RequestId) -> Metadata:
    # Peers adds the service key; the gateway acts as itself, never with a user's token.
    return ((REQUEST_ID_HEADER, request_id),)


CallMetadata = Annotated[Metadata, Depends(_call_metadata)]
ServiceMetadata = Annotated[Metadata, Depends(_service_metadata)]


async def _identity(peers: AppPeers) -> IdentityServiceAsyncStub:
    return peers.identity()


if TYPE_CHECKING:
    IdentityStub = Annotated[IdentityServiceAsyncStub, Depends(_identity)]
else:  # the async stub's name exists only in the generated .pyi; FastAPI reads this at run time
    IdentityStub = Annotated[Any, Depends(_identity)]
