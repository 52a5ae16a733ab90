"""The job loop: wait for claimable jobs, claim them, answer each one in its own task.

One job, start to end (README.md in this folder has the diagram):
claim → heartbeat the lease in the background → read the conversation's context → create a
placeholder linked to the job → stream the reply into it (asking for a tool approval first when
the message says `/approve`) → finalize it → store a memory → complete the job. A failure fails
the placeholder and retries or fails the job; a lost lease just stops (the backend requeues
the job and fails the placeholder itself). A cancelled job (its heartbeat reply or the job watch
says so, docs/double-texting.md) stops its reply, fails the placeholder and acknowledges with
FailJob, which the backend records as CANCELLED, never retried; so does one waiting for a tool
approval."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc
from google.protobuf import duration_pb2, struct_pb2

from examples.runtime.config import Config
from examples.runtime.responder import ModelError, Responder, Role, Turn, embed, last_user_message
from examples.runtime.stubs import Stubs
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as aq
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2 as ap
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as msg

log = logging.getLogger("runtime.jobs")
T = TypeVar("T")

APPROVE_COMMAND = "/approve"
DEMO_TOOL = "demo_tool"
ROLES: dict[int, Role] = {
    msg.MESSAGE_ROLE_USER: "user",
    msg.MESSAGE_ROLE_ASSISTANT: "assistant",
    msg.MESSAGE_ROLE_SYSTEM: "system",
}
# Codes another attempt may get past; everything else fails the job for good.
RETRYABLE_CODES = frozenset({
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL,
})


class LeaseLost(Exception):
    """The job's lease is someone else's now: write nothing more for it."""


class JobCancelled(Exception):
    """Someone cancelled the job (a person, or a double-texting send): stop and acknowledge."""


def reply_removed(error: BaseException) -> bool:
    """The placeholder is gone: a double-texting rollback deleted the partial reply, and the
    cancellation of this job is on its way (docs/double-texting.md)."""
    return isinstance(error, grpc.aio.AioRpcError) and error.code() == grpc.StatusCode.NOT_FOUND


@dataclass
class Signals:
    """What the background calls learn about one running job."""

    lease_lost: asyncio.Event
    cancelled: asyncio.Event

    def check(self) -> None:
        if self.lease_lost.is_set():
            raise LeaseLost
        if self.cancelled.is_set():
            raise JobCancelled

    async def unless_stopped(self, wait: Awaitable[T]) -> T:
        """What `wait` gives, unless the job is cancelled or its lease lost first: a wait with
        no end of its own (a person's answer) must not outlive the job. The wait is then
        cancelled and JobCancelled or LeaseLost raised."""
        task = asyncio.ensure_future(wait)
        stops = [asyncio.ensure_future(event.wait()) for event in (self.lease_lost, self.cancelled)]
        try:
            await asyncio.wait([task, *stops], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for stop in stops:
                stop.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.cancelled():
            self.check()
        return task.result()


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str
    retryable: bool


def classify(error: BaseException) -> Failure:
    """What to tell the queue about an exception: a short reason, the message, and whether
    RetryJob (another attempt later) or FailJob (for good) fits."""
    if isinstance(error, ModelError):
        return Failure("model_error", str(error), error.retryable)
    if isinstance(error, grpc.aio.AioRpcError):
        code = error.code()
        return Failure(f"backend_{code.name.lower()}", error.details() or code.name, code in RETRYABLE_CODES)
    return Failure("unknown", repr(error), False)


def turns_of(messages: Sequence[msg.Message]) -> list[Turn]:
    """The conversation as the model reads it: oldest first, empty placeholders left out."""
    return [Turn(ROLES[m.role], m.content) for m in messages if m.role in ROLES and m.content]


def wants_approval(turns: Sequence[Turn]) -> bool:
    return APPROVE_COMMAND in last_user_message(turns)


def seconds(value: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(value * 1e9))
    return d


class JobLoop:
    def __init__(self, config: Config, stubs: Stubs, responder: Responder) -> None:
        self._config = config
        self._stubs = stubs
        self._responder = responder
        self._running: set[asyncio.Task[None]] = set()
        # job id → its cancel signal, while the job runs here.
        self._cancels: dict[str, asyncio.Event] = {}

    async def run(self, stopping: asyncio.Event) -> None:
        """Claims until `stopping` is set, then lets running jobs finish (within the grace)."""
        watch = asyncio.create_task(self._watch())
        await stopping.wait()
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
        if self._running:
            log.info("stopping: waiting for %d running job(s)", len(self._running))
            _, late = await asyncio.wait(self._running, timeout=self._config.shutdown_grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def _watch(self) -> None:
        """WatchPendingJobs pushes the claimable set whenever it changes (and every few seconds),
        so the loop never polls; a broken stream is reopened after a short pause."""
        request = aq.WatchPendingJobsRequest(processor_id=self._config.worker_id)
        while True:
            try:
                async for snapshot in self._stubs.jobs.WatchPendingJobs(
                        request, metadata=self._stubs.stream_metadata, wait_for_ready=True):
                    # The jobs this worker holds whose cancellation was asked for.
                    for job_id in snapshot.cancel_requested_job_ids:
                        self._cancel(job_id)
                    await self._claim([job.id for job in snapshot.jobs])
            except grpc.aio.AioRpcError as e:
                log.warning("job watch ended (%s); reopening", e.code().name)
            await asyncio.sleep(1.0)

    async def _claim(self, candidates: list[str]) -> None:
        free = self._config.max_jobs - len(self._running)
        if not candidates or free <= 0:
            return
        try:
            claimed = await self._stubs.jobs.ClaimJobs(aq.ClaimJobsRequest(
                processor_id=self._config.worker_id, max_jobs=min(free, 100),
                lease=seconds(self._config.lease_s), job_ids=candidates,
            ))
        except grpc.aio.AioRpcError as e:
            log.warning("claim failed: %s", e.code().name)
            return
        # Jobs another runtime took first are simply not in the answer.
        for job in claimed.jobs:
            task = asyncio.create_task(self._handle(job))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _cancel(self, job_id: str) -> None:
        cancelled = self._cancels.get(job_id)
        if cancelled is not None and not cancelled.is_set():
            log.info("cancellation of %s requested", job_id)
            cancelled.set()

    async def _handle(self, job: aq.Job) -> None:
        log.info("claimed %s (%s, attempt %d)", job.id, job.conversation_id, job.attempt_count)
        signals = Signals(lease_lost=asyncio.Event(), cancelled=asyncio.Event())
        self._cancels[job.id] = signals.cancelled
        heartbeat = asyncio.create_task(self._heartbeat(job.id, signals))
        placeholder: str | None = None
        try:
            reply = await self._stubs.jobs.GetConversationContext(
                aq.GetConversationContextRequest(conversation_id=job.conversation_id))
            if not reply.HasField("context"):
                await self._fail(job, Failure("no_context", "conversation not found", retryable=False))
                return
            context = reply.context
            created = await self._stubs.messages.CreatePlaceholder(
                msg.CreatePlaceholderRequest(conversation_id=job.conversation_id, job_id=job.id))
            placeholder = created.message.id
            text, tool_calls = await self._answer(job, context, placeholder, signals)
            signals.check()
            await self._stubs.messages.FinalizeMessage(
                msg.FinalizeMessageRequest(message_id=placeholder, content=text, tool_calls=tool_calls))
            placeholder = None
            await self._remember(context, text)
            signals.check()
            await self._stubs.jobs.CompleteJob(aq.CompleteJobRequest(
                job_id=job.id, processor_id=self._config.worker_id, model_used=self._responder.model))
            log.info("completed %s", job.id)
        except LeaseLost:
            log.warning("lease of %s lost; leaving it to the backend", job.id)
        except JobCancelled:
            await self._stop_cancelled(job, placeholder)
        except asyncio.CancelledError:
            # Shutdown past the grace: hand the job back for another attempt.
            await self._give_up(job, placeholder, Failure("shutdown", "runtime stopped", retryable=True))
            raise
        except Exception as e:
            if reply_removed(e) and placeholder and not signals.cancelled.is_set():
                # Rolled back under us: the cancellation reaches us within a heartbeat or two;
                # acknowledging before it would record the job as failed instead of cancelled.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(signals.cancelled.wait(), 2 * self._config.heartbeat_s)
            if signals.cancelled.is_set():
                await self._stop_cancelled(job, placeholder)
            else:
                log.exception("job %s failed", job.id)
                await self._give_up(job, placeholder, classify(e))
        finally:
            heartbeat.cancel()
            self._cancels.pop(job.id, None)

    async def _answer(self, job: aq.Job, context: aq.ConversationContext, placeholder: str,
                      signals: Signals) -> tuple[str, list[msg.ToolCall]]:
        turns = turns_of(context.messages)
        text, sequence, tool_calls = "", 0, []

        async def show(more: str) -> None:
            nonlocal text, sequence
            signals.check()
            text, sequence = text + more, sequence + 1
            # The whole text so far; `sequence` lets the backend drop a late, older update.
            await self._stubs.messages.UpdateStreamingContent(
                msg.UpdateStreamingContentRequest(message_id=placeholder, content=text, sequence=sequence))

        if wants_approval(turns):
            await show(f"Asking you to approve `{DEMO_TOOL}`… ")
            status = await signals.unless_stopped(self._ask_approval(job, context))
            outcome = "approved" if status == ap.APPROVAL_STATUS_APPROVED else ap.ApprovalStatus.Name(status)
            await show(f"{DEMO_TOOL}: {outcome}. ")
            tool_calls.append(msg.ToolCall(
                name=DEMO_TOOL, input=struct_pb2.Value(string_value=last_user_message(turns)),
                output=struct_pb2.Value(string_value=outcome)))
        async for piece in self._responder.reply(turns):
            await show(piece)
        return text, tool_calls

    async def _ask_approval(self, job: aq.Job, context: aq.ConversationContext) -> ap.ApprovalStatus.ValueType:
        """Creates the approval and waits on its stream until it is final (or expires)."""
        conversation = context.conversation
        request = ap.CreateApprovalRequest(
            conversation_id=conversation.id, job_id=job.id, tool_name=DEMO_TOOL,
            tool_input=struct_pb2.Value(string_value="demo"), channel=conversation.channel)
        # The owner, copied from the conversation, so resolving can check it.
        if conversation.HasField("user_id"):
            request.conversation_user_id = conversation.user_id
        if conversation.HasField("contact_id"):
            request.conversation_contact_id = conversation.contact_id
        approval = (await self._stubs.approvals.CreateApproval(request)).approval
        status = approval.status
        async for update in self._stubs.approvals.WaitForApproval(
                ap.WaitForApprovalRequest(approval_id=approval.id), metadata=self._stubs.stream_metadata):
            status = update.approval.status
        return status

    async def _remember(self, context: aq.ConversationContext, text: str) -> None:
        said = last_user_message(turns_of(context.messages))
        content = f"User said: {said}\nAssistant answered: {text}"
        await self._stubs.messages.StoreMemory(msg.StoreMemoryRequest(
            conversation_id=context.conversation.id, content=content, embedding=embed(content),
            source=msg.MEMORY_SOURCE_CONVERSATION))

    async def _heartbeat(self, job_id: str, signals: Signals) -> None:
        """Extends the lease every third of it; a refusal means the lease is gone for good, a
        reply with `cancel_requested` that the job must stop."""
        request = aq.HeartbeatJobRequest(job_id=job_id, processor_id=self._config.worker_id,
                                         lease=seconds(self._config.lease_s))
        while True:
            await asyncio.sleep(self._config.heartbeat_s)
            try:
                reply = await self._stubs.jobs.HeartbeatJob(request)
            except grpc.aio.AioRpcError as e:
                if e.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                    signals.lease_lost.set()
                    return
                log.warning("heartbeat of %s failed (%s); trying again", job_id, e.code().name)
                continue
            if reply.cancel_requested:
                self._cancel(job_id)

    async def _stop_cancelled(self, job: aq.Job, placeholder: str | None) -> None:
        """The reply stops where it is: the placeholder fails (partial text kept, unless a rollback
        deletes it) and FailJob acknowledges, which ends the job CANCELLED (never retried)."""
        log.info("cancelled %s; stopping", job.id)
        try:
            if placeholder:
                await self._stubs.messages.FailPlaceholder(msg.FailPlaceholderRequest(message_id=placeholder))
        except grpc.aio.AioRpcError as e:  # NOT_FOUND: a rollback deleted it already
            log.info("placeholder of %s not failed: %s", job.id, e.code().name)
        try:
            await self._fail(job, Failure("cancelled", "cancelled on request", retryable=False))
        except grpc.aio.AioRpcError as e:
            log.warning("could not acknowledge the cancellation of %s: %s", job.id, e.code().name)

    async def _give_up(self, job: aq.Job, placeholder: str | None, failure: Failure) -> None:
        """Fails the open placeholder, then retries or fails the job; errors here are logged only
        (the lease then expires and the backend requeues the job). A placeholder that cannot be
        failed (gone) does not keep the job from being reported."""
        try:
            if placeholder:
                await self._stubs.messages.FailPlaceholder(msg.FailPlaceholderRequest(message_id=placeholder))
        except grpc.aio.AioRpcError as e:
            log.warning("could not fail the placeholder of %s: %s", job.id, e.code().name)
        try:
            await self._fail(job, failure)
        except grpc.aio.AioRpcError as e:
            log.warning("could not report the failure of %s: %s", job.id, e.code().name)

    async def _fail(self, job: aq.Job, failure: Failure) -> None:
        reason, message = failure.reason[:64], failure.message[:500]
        if failure.retryable:
            await self._stubs.jobs.RetryJob(aq.RetryJobRequest(
                job_id=job.id, processor_id=self._config.worker_id, error_reason=reason, error_message=message))
        else:
            await self._stubs.jobs.FailJob(aq.FailJobRequest(
                job_id=job.id, processor_id=self._config.worker_id, error_reason=reason, error_message=message))
