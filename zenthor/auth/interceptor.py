"""Authenticates every call and authorizes it from the method's declared auth mode."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import grpc

from zenthor.auth.jwt import JwtVerifier
from zenthor.auth.modes import AuthMode
from zenthor.auth.principal import Identity, Principal, Role, UserStatus, set_principal
from zenthor.auth.resolver import PrincipalResolver
from zenthor.auth.service_key import SERVICE_KEY_HEADER, ServiceKeyCheck
from zenthor.errors import PermissionDenied, Unauthenticated
from zenthor.interceptors import (
    Continuation,
    Ctx,
    Handler,
    is_infrastructure,
    metadata_dict,
    wrap_handler,
)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        modes: Mapping[str, AuthMode],
        service_key: ServiceKeyCheck,
        jwt_verifier: JwtVerifier | None,
        resolver: PrincipalResolver,
    ) -> None:
        self._modes = modes
        self._service_key = service_key
        self._jwt = jwt_verifier
        self._resolver = resolver

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if is_infrastructure(method):
            return handler
        # Fail closed: a method we know nothing about is refused, never served open.
        mode = self._modes.get(method, AuthMode.UNSPECIFIED)

        metadata = metadata_dict(handler_call_details)

        @asynccontextmanager
        async def authorized(_context: Ctx) -> AsyncIterator[None]:
            set_principal(await self._principal_for(mode, metadata))
            yield

        return wrap_handler(handler, authorized)

    async def _principal_for(self, mode: AuthMode, metadata: dict[str, str]) -> Principal:
        match mode:
            case AuthMode.PUBLIC:
                return Principal()
            case AuthMode.SERVICE:
                self._service_key.check(metadata.get(SERVICE_KEY_HEADER))
                return Principal(service=True)
            case AuthMode.SIGNED_IN:
                return Principal(identity=await self._identity(metadata))
            case AuthMode.USER | AuthMode.ADMIN:
                identity = await self._identity(metadata)
                user = await self._resolver.resolve(identity.subject)
                if user is None:
                    raise Unauthenticated("User not found")
                # Users deleted in Clerk lose access at once (docs/hardening.md #22).
                if user.status is not UserStatus.ACTIVE:
                    raise PermissionDenied("User is inactive")
                if mode is AuthMode.ADMIN and user.role is not Role.ADMIN:
                    raise PermissionDenied("Forbidden")
                return Principal(identity=identity, user=user)
            case _:
                raise PermissionDenied("Forbidden: method declares no auth mode")

    async def _identity(self, metadata: dict[str, str]) -> Identity:
        header = metadata.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("Not authenticated")
        if self._jwt is None:
            raise Unauthenticated("Not authenticated: CLERK_JWT_ISSUER_DOMAIN is not configured")
        return await self._jwt.verify(token.strip())
