"""Drives generated cases against the running stack, one RPC at a time, and records what
came back (runs in a worker thread: plain gRPC and psycopg, Hypothesis on top)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor
from google.rpc import error_details_pb2
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed

from tests.support.hostile_census import (
    FORBIDDEN_CODES,
    Census,
    Finding,
    RpcTally,
    render,
    rpc_name,
)
from tests.support.hostile_rows import RowFingerprints
from tests.support.hostile_stack import HostileStack, service_descriptor
from tests.support.hostile_strategies import Case, MessageStrategies, S, budgets, case_families
from zenthor.clients import rpc_status_of, violated_fields
from zenthor.config import ServiceName
from zenthor.interceptors import REQUEST_ID_HEADER

UNARY_TIMEOUT_S = 15.0
# A watch that is open and healthy sends its current state first; one that has nothing to
# send yet (WaitForApproval on a pending approval) is left after this long.
STREAM_FIRST_MESSAGE_TIMEOUT_S = 2.0
# Answers the client makes up itself (its own deadline, its own cancel): no server reply.
CLIENT_SIDE_CODES = frozenset({grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED})


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    message: str
    request_id_ok: bool
    response: bytes | None = None
    fields: list[str] = field(default_factory=list)  # what a BadRequest detail names


def _from_error(raised: grpc.RpcError, request_id: str) -> Outcome:
    # The synchronous API raises errors that are also the finished call (code, trailers).
    error: Any = raised
    code: grpc.StatusCode = error.code()
    trailers = {k: v for k, v in (error.trailing_metadata() or ()) if isinstance(v, str)}
    status = rpc_status_of(error)
    in_details = True
    if status is not None:
        infos = [d for d in status.details if d.Is(error_details_pb2.RequestInfo.DESCRIPTOR)]
        info = error_details_pb2.RequestInfo()
        in_details = bool(infos) and infos[0].Unpack(info) and info.request_id == request_id
    ok = trailers.get(REQUEST_ID_HEADER) == request_id and in_details
    return Outcome(code, error.details() or "", ok, None, violated_fields(error))


def send(stack: HostileStack, service: ServiceName, method: MethodDescriptor, case: Case, request_id: str) -> Outcome:
    path = f"/{method.containing_service.full_name}/{method.name}"
    metadata = (*case.credential.metadata, (REQUEST_ID_HEADER, request_id))
    channel: Any = stack.channel(service)  # raw bytes both ways: no (de)serializers
    if method.server_streaming:
        call = channel.unary_stream(path)(case.payload, metadata=metadata, timeout=STREAM_FIRST_MESSAGE_TIMEOUT_S)
        try:
            first: bytes = next(call)
        except StopIteration:
            return Outcome(grpc.StatusCode.OK, "", True, b"")
        except grpc.RpcError as error:
            return _from_error(error, request_id)
        call.cancel()
        return Outcome(grpc.StatusCode.OK, "", True, first)
    try:
        response: bytes = channel.unary_unary(path)(case.payload, metadata=metadata, timeout=UNARY_TIMEOUT_S)
    except grpc.RpcError as error:
        return _from_error(error, request_id)
    return Outcome(grpc.StatusCode.OK, "", True, response)


@dataclass
class HostileRun:
    """Cases per RPC and how they are drawn: derandomized for the default sample, from
    `seed` for the soak."""

    stack: HostileStack
    rows: RowFingerprints
    census: Census
    examples: int
    seed: int | None

    def service(self, name: ServiceName) -> None:
        messages = MessageStrategies(self.stack.pool)
        for method in service_descriptor(name).methods:
            self.method(name, method, messages)

    def method(self, service: ServiceName, method: MethodDescriptor, messages: MessageStrategies) -> None:
        rpc = rpc_name(method)
        tally = self.census.tally(rpc)
        self.census.seeds[rpc] = self.seed
        families = case_families(method, self.stack, messages)
        for family, count in zip(families, budgets(self.examples, families), strict=True):
            self.run_family(service, method, family.cases, count, tally)

    def run_family(self, service: ServiceName, method: MethodDescriptor, cases: S[Case], count: int, tally: RpcTally) -> None:
        @settings(
            max_examples=count,
            derandomize=self.seed is None,
            database=None,
            deadline=None,
            phases=[Phase.generate],  # every case is recorded, none raises: nothing to shrink
            suppress_health_check=list(HealthCheck),
            verbosity=Verbosity.quiet,
            print_blob=False,
        )
        @given(case=cases)
        def one(case: Case) -> None:
            self.one_case(service, method, case, tally)

        (hypothesis_seed(self.seed)(one) if self.seed is not None else one)()

    def one_case(self, service: ServiceName, method: MethodDescriptor, case: Case, tally: RpcTally) -> None:
        tally.cases += 1
        request_id = f"hostile-{method.name}-{tally.cases}"
        before = None
        settled = True
        if case.reaches_handler:
            settled = self.rows.settle()
            before = self.rows.take()
        outcome = send(self.stack, service, method, case, request_id)
        tally.codes[outcome.code.name] += 1

        def finding(problem: str, note: str = "") -> Finding:
            answer = f"{outcome.code.name} {outcome.message[:200]!r}{note}"
            return Finding(tally.rpc, problem, render(method, case), answer, request_id)

        if outcome.code in FORBIDDEN_CODES:
            tally.add(finding(outcome.code.name))
        if outcome.code is grpc.StatusCode.OK:
            if outcome.response:
                self.stack.pool.harvest(method.output_type, outcome.response)
            return
        if outcome.code in CLIENT_SIDE_CODES:
            return
        if not outcome.request_id_ok:
            tally.add(finding("NO_REQUEST_ID"))
        if before is not None:
            after = self.rows.take()
            changed = before.changed_tables(after)
            if settled and before.pending_events == 0:
                tally.rejections_checked += 1
                if changed:
                    tally.add(finding("PARTIAL_WRITE", f"; rows changed in {', '.join(changed)}"))
                    if after.pending_events:
                        self.rows.settle()
            else:
                tally.inconclusive += 1
