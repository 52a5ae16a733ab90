"""The shared service key of trusted runtimes (`x-service-key` metadata), failing closed."""

from __future__ import annotations

import hmac

from zenthor.errors import PermissionDenied, Unauthenticated

# The metadata entry that carries the key, read by the auth interceptor and sent by
# zenthor.clients on every peer call.
SERVICE_KEY_HEADER = "x-service-key"


class ServiceKeyCheck:
    """Fails closed (docs/hardening.md #3): with no key configured every service call is
    refused unless the operator set ZENTHOR_DEV_INSECURE=1 on purpose."""

    def __init__(self, expected: str | None, dev_insecure: bool) -> None:
        self._expected = expected.encode() if expected else None
        self._dev_insecure = dev_insecure

    @property
    def open_for_dev(self) -> bool:
        return self._expected is None and self._dev_insecure

    def check(self, presented: str | None) -> None:
        if self._expected is None:
            if self._dev_insecure:
                return
            raise PermissionDenied("Forbidden: service calls are disabled (SERVICE_KEY is not set)")
        if not presented:
            raise Unauthenticated(f"Not authenticated: missing {SERVICE_KEY_HEADER}")
        # Constant-time: the time taken does not reveal how much of the key matched.
        if not hmac.compare_digest(presented.encode(), self._expected):
            raise PermissionDenied("Forbidden: wrong service key")
