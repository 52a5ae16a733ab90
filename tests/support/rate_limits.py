"""Reading a rate-limit refusal back, and a clock for the servers' token buckets that the test
moves (GrpcServer.rate_limits.use_clock)."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2

from zenthor.clients import rpc_status_of


class BucketClock:
    """Monotonic seconds that stand still until the test moves them."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def retry_delay_s(error: grpc.aio.AioRpcError) -> float:
    """The RetryInfo delay of a RESOURCE_EXHAUSTED answer; fails the test when it has none."""
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    status = rpc_status_of(error)
    assert status is not None, "no google.rpc.Status in the trailers"
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            nanoseconds: int = info.retry_delay.ToNanoseconds()
            return nanoseconds / 1e9
    raise AssertionError(f"no RetryInfo among the details of {error.details()!r}")
