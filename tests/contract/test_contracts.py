"""Contract rules: every RPC declares who may call it, the open set is an explicit allowlist,
every original function maps to exactly one RPC, buf lint passes, docs/parity.md is current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from zenthor.auth.modes import AuthMode, MissingAuthMode, method_auth_modes
from zenthor.config import Settings
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2
from zenthor.gen.zenthor.identity.v1 import identity_pb2
from zenthor.gen.zenthor.messages.v1 import messages_pb2
from zenthor.gen.zenthor.plugins.v1 import plugins_pb2
from zenthor.gen.zenthor.todoist.v1 import todoist_pb2
from zenthor.server import GrpcServer

ROOT = Path(__file__).resolve().parents[2]
FILES = [identity_pb2, messages_pb2, agent_queue_pb2, delivery_pb2, approvals_pb2, plugins_pb2, todoist_pb2]
SERVICES = [s for f in FILES for s in f.DESCRIPTOR.services_by_name.values()]

# The unauthenticated set is exactly an explicit allowlist.
PUBLIC_ALLOWLIST = {"/zenthor.identity.v1.IdentityService/GetHealthCheck"}
SIGNED_IN_ALLOWLIST = {"/zenthor.identity.v1.IdentityService/GetOrCreateUserFromClerk"}


def test_every_method_of_every_service_declares_an_auth_mode() -> None:
    modes = method_auth_modes(SERVICES)  # raises MissingAuthMode otherwise
    assert len(SERVICES) == 7
    assert all(mode is not AuthMode.UNSPECIFIED for mode in modes.values())


def test_only_the_allowlisted_methods_are_open() -> None:
    modes = method_auth_modes(SERVICES)
    assert {m for m, mode in modes.items() if mode is AuthMode.PUBLIC} == PUBLIC_ALLOWLIST
    assert {m for m, mode in modes.items() if mode is AuthMode.SIGNED_IN} == SIGNED_IN_ALLOWLIST


def _service_without_auth_mode() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    proto = descriptor_pb2.FileDescriptorProto(name="forgetful.proto", package="forgetful.v1", syntax="proto3")
    proto.message_type.add(name="PingRequest")
    proto.message_type.add(name="PingResponse")
    service = proto.service.add(name="ForgetfulService")
    service.method.add(name="Ping", input_type=".forgetful.v1.PingRequest", output_type=".forgetful.v1.PingResponse")
    pool.Add(proto)
    return pool


def test_a_method_without_auth_mode_makes_the_server_refuse_to_start() -> None:
    from zenthor.auth.principal import ResolvedUser
    from zenthor.server import ServiceRegistration

    descriptor = _service_without_auth_mode().FindServiceByName("forgetful.v1.ForgetfulService")

    class NoResolver:
        async def resolve(self, external_id: str) -> ResolvedUser | None:
            return None

    registration = ServiceRegistration(descriptor=descriptor, base=object, servicer=object(), add_to_server=lambda s, srv: None)
    with pytest.raises(MissingAuthMode, match=r"forgetful\.v1\.ForgetfulService/Ping"):
        GrpcServer(Settings(), [registration], NoResolver())


def test_docs_parity_is_current_and_maps_all_122_functions() -> None:
    result = subprocess.run([sys.executable, "scripts/parity.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    checklist = [line for line in (ROOT / "docs/spec_checklist.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert len(checklist) == len(set(checklist)) == 122


def test_buf_lint_passes() -> None:
    buf = Path(sys.executable).parent / "buf"
    result = subprocess.run([str(buf), "lint"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_stubs_match_the_contracts(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "scripts/gen_proto.py", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    committed = ROOT / "zenthor" / "gen"
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*.py*")}
    current = {p.relative_to(committed): p.read_bytes() for p in committed.rglob("*.py*")}
    assert fresh == current, "zenthor/gen is stale: run `make proto`"


def test_import_rules_hold() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
