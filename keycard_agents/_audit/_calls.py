"""Each agent's audit record of its outbound calls to dependencies.

The runtime makes the agent's :class:`~._agent_records.AuditRecorder` current around a
skill (:func:`recording`); the delegation handles wrap each call to a dependency in
:func:`audited_call`, which records it with the user, actor chain (RFC 8693 §4.1) and
``txn`` of the principal the skill acts for, and the outcome: the RFC 8693 §2.2.2 /
RFC 6749 §5.2 ``error`` when the token service refused the exchange.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar

from keycard_agents._a2a.interrupt import TaskInterrupt
from keycard_agents._audit._agent_records import AuditRecorder
from keycard_agents._errors import DelegationDeniedError, KeycardError
from keycard_agents._logs import get_logger
from keycard_agents._observe._tracing import current_principal

__all__ = ["CallRecord", "audited_call", "current_recorder", "recording"]

logger = get_logger("keycard_agents.audit")

# The audit recorder of the agent whose skill runs in the current task (set by the runtime).
_RECORDER: ContextVar[AuditRecorder | None] = ContextVar("keycard_agents.recorder", default=None)


def current_recorder() -> AuditRecorder | None:
    """The audit recorder of the agent whose skill runs in the current task, else ``None``."""
    return _RECORDER.get()


@contextmanager
def recording(recorder: AuditRecorder | None) -> Iterator[None]:
    """Make ``recorder`` the :func:`current_recorder` for the block (and tasks it starts)."""
    reset = _RECORDER.set(recorder)
    try:
        yield
    finally:
        _RECORDER.reset(reset)


class CallRecord:
    """What the caller learns while an outbound call runs (see :func:`audited_call`).

    Set ``target`` once the resource is known (an agent's RFC 9728 ``resource``),
    ``scopes_granted`` once a token was issued, ``outcome`` when the call succeeded in
    some other way than ``completed`` (for example ``input_required``).
    """

    __slots__ = ("outcome", "scopes_granted", "target")

    def __init__(self, target: str) -> None:
        self.target = target
        self.scopes_granted: Sequence[str] | None = None
        self.outcome = "completed"


@asynccontextmanager
async def audited_call(
    *, target: str, dependency: str | None, scopes_requested: Sequence[str] | None
) -> AsyncIterator[CallRecord]:
    """Record one outbound call in the current agent's audit trail, if it keeps one.

    Outcomes: ``completed`` (or what the block sets), ``denied`` when the token service
    refused the exchange (with its OAuth ``error`` and ``error_description``), the state
    of a remote task that did not complete, ``auth_required`` / ``input_required`` when
    the task was interrupted, else ``failed``. A cancelled call is not recorded, and a
    failing audit store never fails the call.
    """
    recorder = _RECORDER.get()
    call = CallRecord(target)
    if recorder is None:
        yield call
        return
    started = recorder.now()
    error: str | None = None
    reason: str | None = None
    try:
        yield call
    except TaskInterrupt as interrupt:
        call.outcome = interrupt.state.value.removeprefix("TASK_STATE_").lower()
        await _record_call(recorder, call, dependency, scopes_requested, started, None, None)
        raise
    except Exception as exc:
        call.outcome, error, reason = _failure(exc)
        await _record_call(recorder, call, dependency, scopes_requested, started, error, reason)
        raise
    await _record_call(recorder, call, dependency, scopes_requested, started, None, None)


def _failure(exc: Exception) -> tuple[str, str | None, str | None]:
    """(outcome, error, reason) of a failed call; only our own messages become a reason."""
    if isinstance(exc, DelegationDeniedError):
        return "denied", exc.error, exc.error_description[:500] or None
    state = getattr(exc, "state", None)
    if isinstance(exc, KeycardError) and isinstance(state, str):  # a remote task's end
        outcome = state.removeprefix("TASK_STATE_").lower()
        remote_reason = getattr(exc, "reason", None)
        return outcome, None, remote_reason[:500] if isinstance(remote_reason, str) else None
    if isinstance(exc, KeycardError):
        code = getattr(exc, "error", None)
        return "failed", code if isinstance(code, str) else type(exc).__name__, str(exc)[:500]
    return "failed", type(exc).__name__, None


async def _record_call(
    recorder: AuditRecorder,
    call: CallRecord,
    dependency: str | None,
    scopes_requested: Sequence[str] | None,
    started: float,
    error: str | None,
    reason: str | None,
) -> None:
    try:
        await recorder.record_call(
            principal=current_principal(),
            target=call.target,
            outcome=call.outcome,
            started=started,
            dependency=dependency,
            scopes_requested=scopes_requested,
            scopes_granted=call.scopes_granted,
            error=error,
            reason=reason,
        )
    except Exception as exc:
        logger.warning(
            "could not record a call to %s in the audit trail (%s)",
            call.target,
            type(exc).__name__,
        )
