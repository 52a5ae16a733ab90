"""What a hostile run saw, per RPC: cases, status codes, and every finding (a forbidden code,
an error without the request id, a rejected call that changed rows)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
from google.protobuf import text_format
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import DecodeError

from tests.support.hostile_strategies import Case, message_class
from tests.support.pytest_plugin import add_summary_line

if TYPE_CHECKING:
    import pytest

# What no input may ever cause (docs/architecture.md §5: anything unexpected is INTERNAL).
FORBIDDEN_CODES = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS})
FORBIDDEN_PROBLEMS = frozenset({*(code.name for code in FORBIDDEN_CODES), "5xx"})
SHOWN_CHARS = 400
KEPT_PER_PROBLEM = 3


def rpc_name(method: MethodDescriptor) -> str:
    return f"{method.containing_service.name}.{method.name}"


def render(method: MethodDescriptor, case: Case) -> str:
    """A short readable form of what was sent."""
    if case.kind == "well-typed":
        try:
            message = message_class(method.input_type).FromString(case.payload)
            shown = text_format.MessageToString(message, as_one_line=True, as_utf8=True)
        except DecodeError:
            shown = repr(case.payload[:SHOWN_CHARS])
    else:
        shown = case.payload[: SHOWN_CHARS // 2].hex() + ("…" if len(case.payload) > SHOWN_CHARS // 2 else "")
    shown = shown if len(shown) <= SHOWN_CHARS else shown[:SHOWN_CHARS] + f"… ({len(case.payload)} bytes)"
    return f"[{case.kind}, {case.credential.name}] {shown}"


@dataclass(frozen=True)
class Finding:
    rpc: str
    problem: str  # INTERNAL, UNKNOWN, DATA_LOSS, NO_REQUEST_ID, PARTIAL_WRITE
    sent: str
    answer: str
    request_id: str

    def __str__(self) -> str:
        return f"{self.rpc}: {self.problem} (request id {self.request_id}) for {self.sent} → {self.answer}"


@dataclass
class RpcTally:
    rpc: str
    cases: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    rejections_checked: int = 0  # rejected calls whose rows were compared conclusively
    inconclusive: int = 0  # compared while a peer's event was still pending

    def add(self, finding: Finding) -> None:
        self.problems[finding.problem] += 1
        if sum(f.problem == finding.problem for f in self.findings) < KEPT_PER_PROBLEM:
            self.findings.append(finding)

    @property
    def forbidden(self) -> int:
        """Answers no input may cause: INTERNAL, UNKNOWN, DATA_LOSS over gRPC, 5xx over HTTP."""
        return sum(n for problem, n in self.problems.items() if problem in FORBIDDEN_PROBLEMS)


@dataclass
class Census:
    """Every RPC's tally in one run (the default sample or the soak)."""

    label: str
    protocol: str = "gRPC"  # or "HTTP"
    tallies: dict[str, RpcTally] = field(default_factory=dict)
    seeds: dict[str, int | None] = field(default_factory=dict)

    def tally(self, rpc: str) -> RpcTally:
        return self.tallies.setdefault(rpc, RpcTally(rpc))

    def summary(self) -> str:
        tallies = list(self.tallies.values())
        if not tallies:
            return f"hostile {self.protocol} ({self.label}): nothing ran"
        codes: Counter[str] = Counter()
        for t in tallies:
            codes.update(t.codes)
        unit, forbidden = ("RPC", "INTERNAL/UNKNOWN/DATA_LOSS") if self.protocol == "gRPC" else ("operation", "5xx")
        line = (
            f"hostile {self.protocol} ({self.label}): {len(tallies)} {unit}s covered, {sum(t.cases for t in tallies)} cases, "
            f"min {min(t.cases for t in tallies)} cases per {unit}, {forbidden} {sum(t.forbidden for t in tallies)}, "
            f"errors without request id {sum(t.problems['NO_REQUEST_ID'] for t in tallies)}"
        )
        if self.protocol == "gRPC":
            line += (
                f", partial writes {sum(t.problems['PARTIAL_WRITE'] for t in tallies)} "
                f"(rejected calls checked {sum(t.rejections_checked for t in tallies)}, "
                f"inconclusive {sum(t.inconclusive for t in tallies)})"
            )
        return f"{line}; {'codes' if self.protocol == 'gRPC' else 'statuses'} {dict(codes.most_common())}"

    def table(self) -> list[str]:
        """One line per RPC: cases and the codes seen."""
        return [
            f"  {t.rpc}: {t.cases} cases, {dict(t.codes.most_common())}"
            + (f", problems {dict(t.problems)}" if t.problems else "")
            for t in sorted(self.tallies.values(), key=lambda t: t.rpc)
        ]


def write_summaries(config: pytest.Config, censuses: list[Census]) -> None:
    """Each run's summary line (and, with -v, its per-RPC table), printed at the end of the run
    so that it shows in a passing run too."""
    verbose = config.get_verbosity() > 0
    for census in censuses:
        for line in (census.summary(), *(census.table() if verbose else [])):
            add_summary_line(config, "hostile-input runs", line)
