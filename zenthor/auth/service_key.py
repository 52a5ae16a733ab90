"""The shared service key of trusted runtimes (`x-service-key` metadata), failing closed."""

from __future__ import annotations

import hmac

from zenthor.errors import PermissionDenied, Unauthenticated


class ServiceKeyCheck:
    """spec §4.5, with finding 3 fixed: no configured key refuses every call unless the
    operator set ZENTHOR_DEV_INSECURE=1 on purpose."""

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
            raise Unauthenticated("Not authenticated: missing x-service-key")
        # Constant-time: the time taken does not reveal how much of the key matched.
        if not hmac.compare_digest(presented.encode(), self._expected):
            raise PermissionDenied("Forbidden: wrong service key")
