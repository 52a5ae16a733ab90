"""The dev stack's commands for a person at a shell (`python -m zenthor.devstack <command>`):

- `token`: a bearer token from the stack's dev issuer for an email, as a member or an admin;
- `ask-approval`: a tool call of a conversation's pending agent job waiting for the user's
  approval, created with the service key exactly as the agent runtime creates one — for a
  stack started with `--no-runtime` (otherwise the reference runtime claims the job first;
  send a message containing `/approve` instead).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from google.protobuf import json_format, struct_pb2

from zenthor.clients import Peers
from zenthor.config import Settings
from zenthor.devstack.issuer import DEFAULT_TTL_S, DevIssuer
from zenthor.devstack.state import DEV_ADMIN_EMAIL, StackState, service_key
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2
from zenthor.gen.zenthor.messages.v1 import messages_pb2

# ListPendingJobs' largest page.
JOBS_PAGE = 1000


class CommandError(RuntimeError):
    """What the person must fix; printed without a traceback."""


def token(data_dir: Path, email: str | None, *, admin: bool, name: str | None = None, ttl_s: int = DEFAULT_TTL_S) -> str:
    """A token for `email`. The role is the stack's to decide (its admin allowlist, as in
    production), so asking for a role the email does not have is an error, not a surprise."""
    state = StackState.read(data_dir)
    address = (email or (DEV_ADMIN_EMAIL if admin else "")).strip().lower()
    if "@" not in address:
        raise CommandError("give --email (e.g. --email ana@example.com), or --admin alone for the dev admin")
    if admin and address not in state.admins:
        raise CommandError(
            f"{address} is not an admin of this stack (its allowlist: {', '.join(state.admins)}): "
            f"restart it with ADMIN_EMAIL_ALLOWLIST={address} make dev, or use --admin alone"
        )
    if not admin and address in state.admins:
        raise CommandError(f"{address} is on this stack's admin allowlist, so its user is an admin: add --admin")
    if ttl_s <= 0:
        raise CommandError("--ttl-s must be positive")
    return DevIssuer(data_dir, state.issuer, state.audience).token(address, name, ttl_s)


def ask_approval(data_dir: Path, conversation_id: str, tool_name: str, tool_input: str, wait_s: float) -> str:
    """The created approval as JSON."""
    try:
        arguments = json_format.Parse(tool_input, struct_pb2.Value())
    except json_format.ParseError as e:
        raise CommandError(f"--input is not JSON: {e}") from None
    state = StackState.read(data_dir)
    values: dict[str, object] = {f"{name}_addr": address for name, address in state.grpc.items()}
    settings = Settings.model_validate({**values, "service_key": service_key(data_dir)})
    approval = asyncio.run(_ask_approval(settings, conversation_id, tool_name, arguments, wait_s))
    return json.dumps(json_format.MessageToDict(approval, preserving_proto_field_name=True), indent=2)


async def _ask_approval(
    settings: Settings, conversation_id: str, tool_name: str, arguments: struct_pb2.Value, wait_s: float
) -> approvals_pb2.Approval:
    peers = Peers(settings)
    try:
        found = await peers.messages().BatchGetConversations(
            messages_pb2.BatchGetConversationsRequest(ids=[conversation_id])
        )
        if not found.conversations:
            raise CommandError(f"no conversation {conversation_id}")
        conversation = found.conversations[0]
        job_id = await _pending_job(peers, conversation_id, wait_s)
        request = approvals_pb2.CreateApprovalRequest(
            conversation_id=conversation_id,
            job_id=job_id,
            tool_name=tool_name,
            tool_input=arguments,
            channel=conversation.channel,
        )
        # The owner ids, as the runtime copies them from the conversation (approvals.proto).
        if conversation.HasField("user_id"):
            request.conversation_user_id = conversation.user_id
        if conversation.HasField("contact_id"):
            request.conversation_contact_id = conversation.contact_id
        created = await peers.approvals().CreateApproval(request)
        return created.approval
    finally:
        await peers.close()


async def _pending_job(peers: Peers, conversation_id: str, wait_s: float) -> str:
    """The conversation's newest pending agent job. A sent message reaches agent_queue through
    messages' outbox, after the send answered: wait for it, at most `wait_s`."""
    deadline = time.monotonic() + wait_s
    while True:
        page_token = ""
        newest = ""
        while True:
            reply = await peers.agent_queue().ListPendingJobs(
                agent_queue_pb2.ListPendingJobsRequest(page_size=JOBS_PAGE, page_token=page_token)
            )
            newest = next((j.id for j in reversed(reply.jobs) if j.conversation_id == conversation_id), newest)
            page_token = reply.next_page_token
            if not page_token:
                break
        if newest:
            return newest
        if time.monotonic() >= deadline:
            raise CommandError(
                f"no pending agent job for {conversation_id} within {wait_s:g} s: send a message to it first"
            )
        await asyncio.sleep(0.2)
