"""The OAuth flow. Start stores a state and starts its TodoistOAuthWorkflow; a callback (the
gateway's, or CompleteTodoistOAuth from the web app) claims the state in one guarded UPDATE —
consumed for good before anything is called (docs/hardening.md #8) — then signals the workflow
and waits for how it ended. The workflow exchanges the code through ExchangeTodoistOAuthCode
and discards the state when the flow ends, or after 10 minutes without a callback."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from services.todoist.domain import oauth as domain
from services.todoist.domain.connections import NOT_CONNECTED, ConnectionStatus
from services.todoist.domain.oauth import Callback, OAuthState, StartedFlow, StateStatus
from services.todoist.domain.tokens import TokenCipher
from services.todoist.store import connections as connections_store
from services.todoist.store import oauth_states as store
from services.todoist.store.connections import SealedToken
from services.todoist.usecases.connections import add_revocation, cipher_of, get_status_of
from services.todoist.usecases.deps import Deps
from zenthor import ids
from zenthor.auth.principal import ResolvedUser
from zenthor.errors import FailedPrecondition
from zenthor.logs import get_logger
from zenthor.pagination import Swept

log = get_logger("todoist.oauth")


@dataclass(frozen=True)
class CallbackResult:
    user_id: uuid.UUID
    status: ConnectionStatus


async def start_oauth(deps: Deps, user: ResolvedUser) -> StartedFlow:
    """Replaces the user's flows with a new one. The state is usable only once its workflow
    runs: STARTING until then, so a workflow that never started leaves nothing usable."""
    deps.oauth.check()
    now = deps.clock()
    state = OAuthState(
        state=domain.state_for(deps.new_uuid()),
        user_id=user.user_id,
        status=StateStatus.STARTING,
        created_at=now,
        expires_at=domain.expiry_for(now),
    )
    async with deps.uow() as uow:
        superseded = await store.delete_for_user(uow.conn, user.user_id)
        await store.insert_starting(uow.conn, state)
        await uow.commit()
    try:
        await deps.flows.start(state.state, domain.STATE_TTL)
    except Exception:
        await _discard(deps, state.state)
        raise
    async with deps.uow() as uow:
        opened = await store.mark_open(uow.conn, state.state)
        await uow.commit()
    if not opened:  # a concurrent start of the same user replaced it meanwhile
        await deps.flows.cancel([state.state])
        raise FailedPrecondition(domain.SUPERSEDED)
    await deps.flows.cancel(superseded)
    log.info("todoist.oauth_started", user_id=ids.USER.format(user.user_id), state=state.state)
    return StartedFlow(domain.authorization_url(deps.oauth, state.state), state.expires_at, state.state)


async def complete_oauth(deps: Deps, user: ResolvedUser, code: str, state: str) -> ConnectionStatus:
    """The web app's completion (the original's completeOAuth), through the same workflow."""
    callback = Callback(code=domain.check_code(code), error=None)
    state = domain.check_state(state)
    owner = await _claim(deps, state, user.user_id)
    return await _finish(deps, owner, state, callback)


async def submit_callback(deps: Deps, state: str, code: str | None, error: str | None) -> CallbackResult:
    """The gateway's callback: the state alone says whose flow it is."""
    state = domain.check_state(state)
    callback = domain.check_callback(code, error)
    owner = await _claim(deps, state, None)
    if callback.error is not None:
        outcome = await deps.flows.submit(state, callback)
        if outcome.end != "denied":
            raise domain.outcome_error(outcome)
        return CallbackResult(owner, NOT_CONNECTED)
    return CallbackResult(owner, await _finish(deps, owner, state, callback))


async def _claim(deps: Deps, state: str, user_id: uuid.UUID | None) -> uuid.UUID:
    """Consumes the state for this one callback, durably, before anything else happens."""
    async with deps.uow() as uow:
        owner = await store.claim(uow.conn, state, deps.clock(), user_id)
        if owner is not None:
            await uow.commit()
            return owner
        current = await store.get(uow.conn, state)
        if current is None or current.status is not StateStatus.OPEN or (
            user_id is not None and current.user_id != user_id
        ):
            raise domain.invalid_state()
        # Open but past its expiry: consumed now, so a retry finds nothing (docs/hardening.md #8).
        await store.delete(uow.conn, state)
        await uow.commit()
    await deps.flows.cancel([state])
    raise FailedPrecondition(domain.EXPIRED_STATE)


async def _finish(deps: Deps, owner: uuid.UUID, state: str, callback: Callback) -> ConnectionStatus:
    outcome = await deps.flows.submit(state, callback)
    if outcome.end != "connected":
        raise domain.outcome_error(outcome)
    return await get_status_of(deps, owner)


async def exchange_code(deps: Deps, state: str, code: str) -> CallbackResult:
    """The workflow's activity. Only a claimed state is exchanged; Todoist is called with no
    transaction open, and the connection is stored with the state marked EXCHANGED, so a retry
    after success answers from the database instead of spending the code twice."""
    state = domain.check_state(state)
    code = domain.check_code(code)
    cipher = cipher_of(deps)
    async with deps.uow() as uow:
        current = await store.get(uow.conn, state)
    if current is None or current.status not in (StateStatus.CLAIMED, StateStatus.EXCHANGED):
        raise domain.invalid_state()
    if current.status is StateStatus.EXCHANGED:
        return CallbackResult(current.user_id, await get_status_of(deps, current.user_id))

    grant = await deps.todoist.exchange_code(code)
    profile = await deps.todoist.profile(grant.access_token)
    sealed = SealedToken(*cipher.encrypt(grant.access_token))
    async with deps.uow() as uow:
        if not await store.mark_exchanged(uow.conn, state):
            # The flow ended meanwhile (expired): the fresh token must not outlive it.
            await add_revocation(uow.conn, deps, sealed.ciphertext)
            await uow.commit()
            deps.kick_outbox()
            raise FailedPrecondition(domain.EXPIRED_STATE)
        connection, previous = await connections_store.upsert(
            uow.conn,
            connection_id=ids.TODOIST_CONNECTION.new(),
            user_id=current.user_id,
            token=sealed,
            grant=grant,
            profile=profile,
            now=deps.clock(),
        )
        if previous is not None and _replaced(cipher, previous, grant.access_token):
            await add_revocation(uow.conn, deps, previous)
        await connections_store.notify_changed(uow.conn, ids.USER.format(current.user_id))
        await uow.commit()
    deps.kick_outbox()
    log.info("todoist.connected", user_id=ids.USER.format(current.user_id), state=state)
    return CallbackResult(current.user_id, connection.status)


def _replaced(cipher: TokenCipher, previous: str, token: str) -> bool:
    """Whether a reconnect replaced a different token (Todoist may hand out the same one again,
    which must not be revoked); an old token no key can read cannot be revoked either."""
    try:
        return cipher.decrypt(previous) != token
    except FailedPrecondition:
        return False


async def discard_state(deps: Deps, state: str) -> bool:
    """The end of a flow, whatever its status; idempotent."""
    return await _discard(deps, domain.check_state(state))


async def _discard(deps: Deps, state: str) -> bool:
    async with deps.uow() as uow:
        deleted = await store.delete(uow.conn, state)
        await uow.commit()
    return deleted


async def cleanup_expired_states(deps: Deps, batch_size: int) -> Swept:
    """The hourly sweep: states past their expiry whose workflow did not discard them."""
    batch = domain.check_batch_size(batch_size)
    async with deps.uow() as uow:
        deleted = await store.delete_expired(uow.conn, deps.clock(), batch)
        await uow.commit()
    return Swept.of(deleted, batch)
