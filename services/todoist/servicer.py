"""TodoistService over gRPC: request → wire → one use case → wire → response. No rules, no SQL,
no HTTP here."""

from __future__ import annotations

from collections.abc import AsyncIterator

from services.todoist import wire
from services.todoist.usecases import connections as connections_uc
from services.todoist.usecases import oauth as oauth_uc
from services.todoist.usecases import tasks as tasks_uc
from services.todoist.usecases.deps import Deps
from zenthor import ids
from zenthor.auth.principal import ResolvedUser, current_principal
from zenthor.gen.zenthor.todoist.v1 import todoist_pb2 as pb
from zenthor.gen.zenthor.todoist.v1 import todoist_pb2_grpc
from zenthor.server import Ctx


def _user() -> ResolvedUser:
    return current_principal().require_user()


class TodoistServicer(todoist_pb2_grpc.TodoistServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    # --- connection (user) ---

    async def GetTodoistConnectionStatus(
        self, request: pb.GetTodoistConnectionStatusRequest, context: Ctx
    ) -> pb.GetTodoistConnectionStatusResponse:
        status = await connections_uc.get_status(self._deps, _user())
        return pb.GetTodoistConnectionStatusResponse(status=wire.status_pb(status))

    async def WatchTodoistConnectionStatus(
        self, request: pb.WatchTodoistConnectionStatusRequest, context: Ctx
    ) -> AsyncIterator[pb.WatchTodoistConnectionStatusResponse]:
        async for status in connections_uc.watch_status(self._deps, _user()):
            yield pb.WatchTodoistConnectionStatusResponse(status=wire.status_pb(status))

    async def StartTodoistOAuth(self, request: pb.StartTodoistOAuthRequest, context: Ctx) -> pb.StartTodoistOAuthResponse:
        return wire.started_pb(await oauth_uc.start_oauth(self._deps, _user()))

    async def CompleteTodoistOAuth(
        self, request: pb.CompleteTodoistOAuthRequest, context: Ctx
    ) -> pb.CompleteTodoistOAuthResponse:
        status = await oauth_uc.complete_oauth(self._deps, _user(), request.code, request.state)
        return pb.CompleteTodoistOAuthResponse(status=wire.status_pb(status))

    async def DisconnectTodoist(self, request: pb.DisconnectTodoistRequest, context: Ctx) -> pb.DisconnectTodoistResponse:
        return pb.DisconnectTodoistResponse(disconnected=await connections_uc.disconnect(self._deps, _user()))

    # --- OAuth plumbing (gateway, workflow) ---

    async def SubmitTodoistOAuthCallback(
        self, request: pb.SubmitTodoistOAuthCallbackRequest, context: Ctx
    ) -> pb.SubmitTodoistOAuthCallbackResponse:
        fields = wire.callback_fields(request)
        result = await oauth_uc.submit_callback(self._deps, fields.state, fields.code, fields.error)
        return pb.SubmitTodoistOAuthCallbackResponse(
            status=wire.status_pb(result.status), user_id=ids.USER.format(result.user_id)
        )

    async def ExchangeTodoistOAuthCode(
        self, request: pb.ExchangeTodoistOAuthCodeRequest, context: Ctx
    ) -> pb.ExchangeTodoistOAuthCodeResponse:
        result = await oauth_uc.exchange_code(self._deps, request.state, request.code)
        return pb.ExchangeTodoistOAuthCodeResponse(
            user_id=ids.USER.format(result.user_id), status=wire.status_pb(result.status)
        )

    async def DiscardTodoistOAuthState(
        self, request: pb.DiscardTodoistOAuthStateRequest, context: Ctx
    ) -> pb.DiscardTodoistOAuthStateResponse:
        return pb.DiscardTodoistOAuthStateResponse(discarded=await oauth_uc.discard_state(self._deps, request.state))

    async def CleanupExpiredTodoistOAuthStates(
        self, request: pb.CleanupExpiredTodoistOAuthStatesRequest, context: Ctx
    ) -> pb.CleanupExpiredTodoistOAuthStatesResponse:
        result = await oauth_uc.cleanup_expired_states(self._deps, request.batch_size)
        return pb.CleanupExpiredTodoistOAuthStatesResponse(deleted=result.deleted, more=result.more)

    # --- conversation-scoped tasks (agent tools) ---

    async def CreateTodoistTask(self, request: pb.CreateTodoistTaskRequest, context: Ctx) -> pb.CreateTodoistTaskResponse:
        task = await tasks_uc.create_task(
            self._deps,
            wire.conversation_id(request.conversation_id),
            wire.new_task(request),
            wire.request_id(request.request_id),
        )
        return pb.CreateTodoistTaskResponse(task=wire.optional_task_pb(task))

    async def ListTodoistTasks(self, request: pb.ListTodoistTasksRequest, context: Ctx) -> pb.ListTodoistTasksResponse:
        asked = wire.task_list_request(request)
        listing = await tasks_uc.list_tasks(
            self._deps, wire.conversation_id(request.conversation_id), asked.filter_query, asked.size, asked.cursor
        )
        return pb.ListTodoistTasksResponse(
            connected=listing.connected,
            tasks=[wire.task_pb(t) for t in listing.tasks],
            next_page_token=wire.next_page_token(listing.next_cursor, asked.filter_query),
        )

    async def CompleteTodoistTask(
        self, request: pb.CompleteTodoistTaskRequest, context: Ctx
    ) -> pb.CompleteTodoistTaskResponse:
        completed = await tasks_uc.complete_task(
            self._deps,
            wire.conversation_id(request.conversation_id),
            request.task_id,
            wire.request_id(request.request_id),
        )
        return pb.CompleteTodoistTaskResponse(completed=completed)

    async def RescheduleTodoistTask(
        self, request: pb.RescheduleTodoistTaskRequest, context: Ctx
    ) -> pb.RescheduleTodoistTaskResponse:
        due = wire.due(request)
        task = await tasks_uc.reschedule_task(
            self._deps,
            wire.conversation_id(request.conversation_id),
            request.task_id,
            due.due_string,
            due.due_date_time,
            wire.request_id(request.request_id),
        )
        return pb.RescheduleTodoistTaskResponse(task=wire.optional_task_pb(task))
