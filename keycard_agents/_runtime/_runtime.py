"""The anyio task runtime behind an A2A 1.0 agent (A2A spec §3 operations, §4.1 Task, §7 streaming).

It implements ``SendMessage`` (blocking unless ``returnImmediately``), ``SendStreamingMessage``,
``GetTask``, ``ListTasks`` (owner-scoped, newest first, cursor pagination), ``CancelTask`` and
``SubscribeToTask`` on top of a :class:`~keycard_agents._runtime._store.TaskStore`.

Lifecycle: SUBMITTED → WORKING → COMPLETED | FAILED | CANCELED, or an interrupted state
(INPUT_REQUIRED, AUTH_REQUIRED) that the client's next message on the task resumes by
replaying the skill (see :class:`~keycard_agents._agent._context.Context`).

Streams: every status and artifact event of a task is broadcast, in order, to each
subscriber through its own bounded buffer (``subscriber_buffer`` events). A stream stays
open until the task reaches a terminal state (§3.1.6): through INPUT_REQUIRED and
AUTH_REQUIRED the subscribers wait, parked under the task's id, for the run that the
client's reply starts (this process's subscribers; a task resumed on another replica is
the store's to relay). A subscriber
that falls that far behind is dropped instead of slowing the skill down: its stream ends
with an :class:`~keycard_agents._a2a.errors.InternalError` saying so, and it can call
``SubscribeToTask`` again to resume from the task's current state.
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from opentelemetry import context as otel_context
from opentelemetry.context import Context as OtelContext
from opentelemetry.trace import Span
from pydantic import BaseModel

from keycard_agents._a2a.errors import (
    InternalError,
    InvalidParamsError,
    PushNotificationNotSupportedError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from keycard_agents._a2a.interrupt import TaskInterrupt
from keycard_agents._a2a.types import (
    Artifact,
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTaskPushNotificationConfigsResponse,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    Task,
    TaskArtifactUpdateEvent,
    TaskPushNotificationConfig,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
    new_id,
)
from keycard_agents._agent._agent import Agent, Skill
from keycard_agents._agent._context import Context, DelegationProvider
from keycard_agents._audit._agent_records import AuditRecorder
from keycard_agents._audit._calls import recording
from keycard_agents._errors import (
    AuthenticationError,
    ConfigurationError,
    InsufficientScopeError,
    KeycardError,
    UserRequiredError,
)
from keycard_agents._jose._subjects import subject_is_client
from keycard_agents._logs import get_logger
from keycard_agents._oauth._resource_server import Caller
from keycard_agents._observe._metrics import record_skill, watch_task_store
from keycard_agents._observe._tracing import (
    ATTR_SKILL,
    ATTR_TASK_ID,
    acting_for,
    mark_error,
    set_task_outcome,
    span,
)
from keycard_agents._runtime._direct import answer_directly
from keycard_agents._runtime._failures import log_failed_task
from keycard_agents._runtime._push import PushNotifier
from keycard_agents._runtime._shared import SharedTaskStore, TaskWatch
from keycard_agents._runtime._store import (
    MemoryTaskStore,
    TaskRecord,
    TaskStore,
    TaskTooLargeError,
    TaskViewer,
)

if sys.version_info >= (3, 11):  # pragma: no cover - depends on the interpreter
    from builtins import BaseExceptionGroup
else:  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = ["TaskRuntime"]

logger = get_logger("keycard_agents.runtime")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
#: Default limits on what one task may hold (see docs/security.md).
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024
DEFAULT_MAX_TASK_BYTES = 4 * 1024 * 1024
CANCELED_BY_CLIENT = "Task canceled by the client."
SHUTTING_DOWN = "Task canceled: the agent is shutting down."


_Receive = MemoryObjectReceiveStream[StreamResponse]


@dataclass(eq=False)
class _Subscriber:
    send: MemoryObjectSendStream[StreamResponse]
    overflowed: bool = False


@dataclass(eq=False)
class _LiveTask:
    """A task whose skill is running (or about to) in the runtime's task group."""

    record: TaskRecord
    caller: Caller = field(default_factory=lambda: Caller(None))
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)
    # Orders the saves of one task for stores that await (see _persist); made on the
    # first save that needs it.
    save_lock: anyio.Lock | None = None
    #: Shared with the task's earlier and later runs: parked while the task is interrupted.
    subscribers: list[_Subscriber] = field(default_factory=list)
    cancel_reason: str | None = None
    trace_context: OtelContext | None = None


def _json_size(model: BaseModel) -> int:
    """The bytes of ``model`` as compact JSON (what a task's limits count)."""
    return len(model.__pydantic_serializer__.to_json(model, exclude_none=True))


class _Sink:
    """The TaskSink a skill's Context writes to."""

    def __init__(self, runtime: TaskRuntime, live: _LiveTask) -> None:
        self._runtime = runtime
        self._live = live

    async def status_update(self, message: Message) -> None:
        self._runtime._check_fits(self._live.record, message, what="the status update")
        await self._runtime._set_status(self._live, TaskState.WORKING, message)

    async def add_artifact(
        self,
        parts: Sequence[Part],
        *,
        name: str | None,
        description: str | None,
        metadata: Mapping[str, Any] | None,
    ) -> None:
        artifact = Artifact(
            artifact_id=new_id(),
            parts=list(parts),
            name=name,
            description=description,
            metadata=dict(metadata) if metadata is not None else None,
        )
        size = self._runtime._check_fits(self._live.record, artifact, what="the artifact")
        await self._runtime._add_artifact(self._live, artifact, size)

    async def append_artifact(
        self,
        artifact_id: str,
        parts: Sequence[Part],
        *,
        name: str | None,
        description: str | None,
        metadata: Mapping[str, Any] | None,
        append: bool,
        last_chunk: bool,
    ) -> None:
        chunk = Artifact(
            artifact_id=artifact_id,
            parts=list(parts),
            name=name,
            description=description,
            metadata=dict(metadata) if metadata is not None else None,
        )
        size = self._runtime._check_fits(self._live.record, chunk, what="the artifact chunk")
        await self._runtime._add_artifact(
            self._live, chunk, size, append=append, last_chunk=last_chunk
        )


def _view(task: Task, *, history_length: int | None, include_artifacts: bool = True) -> Task:
    """A snapshot of ``task`` as a client sees it (``historyLength`` 0 means no history).

    Copy-on-write, not a deep copy: the runtime never mutates a message, artifact or
    status once it is in a task; it only replaces ``task.status`` and appends to
    ``task.history`` / ``task.artifacts``. So a shallow copy of the task with lists of its
    own is a snapshot that later events cannot change, at a fraction of the cost.
    """
    history = task.history
    if history_length is None:
        history = list(history)
    else:
        history = history[-history_length:] if history_length > 0 else []
    artifacts = list(task.artifacts) if include_artifacts else []
    copy = task.model_copy()
    copy.__dict__["history"] = history
    copy.__dict__["artifacts"] = artifacts
    return copy


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


class TaskRuntime:
    """Runs an agent's skills as A2A tasks. Enter :meth:`running` before serving requests.

    ``store`` defaults to a :class:`~keycard_agents._runtime._store.MemoryTaskStore`; ``clock``
    returns seconds since the epoch (status timestamps); ``recorder``, when given, records
    every task this agent serves in its audit trail; ``delegation`` provides the
    handles behind ``ctx.dependency(name)``.

    ``max_message_bytes`` (256 KiB) bounds each client message and ``max_task_bytes``
    (4 MiB) what one task holds (history and artifacts, as compact JSON): a client
    message over either is refused with InvalidParams, a skill's update or artifact over
    the task limit fails the task. Per-caller and store-wide limits are the store's
    (:class:`~keycard_agents.MemoryTaskStore`).
    """

    def __init__(
        self,
        agent: Agent,
        *,
        store: TaskStore | None = None,
        clock: Callable[[], float] = time.time,
        delegation: DelegationProvider | None = None,
        subscriber_buffer: int = 256,
        shutdown_grace: float = 5.0,
        recorder: AuditRecorder | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_task_bytes: int = DEFAULT_MAX_TASK_BYTES,
        push: PushNotifier | None = None,
    ) -> None:
        if subscriber_buffer < 1:
            raise ConfigurationError(
                "subscriber_buffer must be at least 1", setting="subscriber_buffer"
            )
        if max_message_bytes < 1 or max_task_bytes < max_message_bytes:
            raise ConfigurationError(
                "max_message_bytes must be at least 1 and max_task_bytes at least "
                "max_message_bytes",
                setting="max_task_bytes",
            )
        self.max_message_bytes = max_message_bytes
        self.max_task_bytes = max_task_bytes
        self.agent = agent
        self.store: TaskStore = store if store is not None else MemoryTaskStore()
        #: A store shared with other replicas carries events and cancels between them.
        self._shared = self.store if isinstance(self.store, SharedTaskStore) else None
        watch_task_store(self.store, agent.agent_name)
        self.delegation = delegation
        self.recorder = recorder
        #: Delivers push notifications (None: the push methods answer -32003).
        self.push = push
        self._clock = clock
        self._buffer = subscriber_buffer
        self._grace = shutdown_grace
        self._live: dict[str, _LiveTask] = {}
        #: Subscribers of interrupted tasks, waiting for the run a reply starts.
        self._parked: dict[str, list[_Subscriber]] = {}
        self._task_group: TaskGroup | None = None
        self._closing = False

    # -- lifetime ----------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[TaskRuntime]:
        """Run the task group that tasks outliving one request execute in."""
        if self._task_group is not None:
            raise ConfigurationError("this TaskRuntime is already running")
        self._closing = False
        try:
            async with anyio.create_task_group() as task_group, AsyncExitStack() as stack:
                self._task_group = task_group
                if self.push is not None:
                    self.push.start(task_group)
                if self._shared is not None:
                    await stack.enter_async_context(self._shared.attach(self._cancel_requested))
                try:
                    yield self
                finally:
                    await self.aclose()
                    task_group.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            if len(group.exceptions) != 1:
                raise
            inner = group.exceptions[0]
            context, suppress = inner.__context__, inner.__suppress_context__
            try:
                raise inner
            finally:
                inner.__context__, inner.__suppress_context__ = context, suppress
        finally:
            self._task_group = None

    async def aclose(self) -> None:
        """Cancel running tasks (recorded as CANCELED), end every stream, stop the runtime."""
        self._closing = True
        with anyio.CancelScope(shield=True):
            for live in list(self._live.values()):
                live.cancel_reason = SHUTTING_DOWN
                live.scope.cancel()
            with anyio.move_on_after(self._grace):
                for live in list(self._live.values()):
                    await live.done.wait()
        for live in list(self._live.values()):  # a skill that would not stop in time
            self._close_subscribers(live)
        for subscribers in list(self._parked.values()):
            for subscriber in subscribers:
                subscriber.send.close()
            subscribers.clear()
        self._parked.clear()
        if self.push is not None:
            await self.push.aclose(grace=self._grace)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), tz=timezone.utc)

    # -- authorization -----------------------------------------------------------------

    def _authorize(self, skill: Skill, caller: Caller) -> None:
        if skill.anonymous:
            return
        principal = caller.principal
        if principal is None:
            raise AuthenticationError(
                f"skill {skill.id!r} requires a bearer token from the agent's token service"
            )
        if skill.require_user and subject_is_client(principal):
            raise UserRequiredError(
                f"skill {skill.id!r} acts for a user, but this token's subject "
                f"{principal.user!r} is a client (a client-credentials token): call it with a "
                "token issued for a signed-in user"
            )
        missing = tuple(s for s in skill.scopes if s not in principal.scopes)
        if missing:
            raise InsufficientScopeError(
                f"skill {skill.id!r} requires scopes {' '.join(skill.scopes)}; "
                f"the token lacks {' '.join(missing)}",
                required=skill.scopes,
                missing=missing,
            )

    async def _owned(self, task_id: str, caller: Caller) -> TaskRecord:
        """The task, if ``caller`` may see it (:meth:`TaskViewer.may_see`); else not found."""
        live = self._live.get(task_id)
        record = live.record if live is not None else await self.store.get(task_id)
        if record is None or not TaskViewer.of(caller.principal).may_see(record):
            raise TaskNotFoundError(f"task {task_id} not found")
        return record

    # -- size limits -------------------------------------------------------------------

    def _check_message(self, message: Message) -> int:
        size = _json_size(message)
        if size > self.max_message_bytes:
            raise TaskTooLargeError(
                f"the message is {size} bytes as JSON, over this agent's limit of "
                f"{self.max_message_bytes} bytes: send large content as a file reference"
            )
        return size

    def _check_fits(
        self, record: TaskRecord, model: BaseModel, *, what: str, copies: int = 1
    ) -> int:
        """Refuse ``model`` when adding it (``copies`` times) would pass the task's limit;
        else the bytes of one copy."""
        one = _json_size(model)
        size = one * copies
        if record.size + size > self.max_task_bytes:
            raise TaskTooLargeError(
                f"{what} ({size} bytes) would make task {record.task.id} hold more than "
                f"this agent's limit of {self.max_task_bytes} bytes"
            )
        return one

    # -- events ------------------------------------------------------------------------

    def _wants_events(self, live: _LiveTask) -> bool:
        """Whether anyone takes this task's events: a stream, the shared store, a webhook."""
        return (
            bool(live.subscribers)
            or self._shared is not None
            or (self.push is not None and self.push.has_configs(live.record.task.id))
        )

    def _publish(self, live: _LiveTask, event: StreamResponse) -> None:
        if self.push is not None:
            self.push.notify(live.record.task.id, event)
        for subscriber in list(live.subscribers):
            try:
                subscriber.send.send_nowait(event)
            except anyio.WouldBlock:
                subscriber.overflowed = True
                subscriber.send.close()
                live.subscribers.remove(subscriber)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                live.subscribers.remove(subscriber)

    def _close_subscribers(self, live: _LiveTask) -> None:
        for subscriber in live.subscribers:
            subscriber.send.close()
        live.subscribers.clear()

    def _cancel_requested(self, task_id: str) -> None:
        """Another replica asked (through the shared store) to cancel a task running here."""
        live = self._live.get(task_id)
        if live is not None:
            if live.cancel_reason is None:
                live.cancel_reason = CANCELED_BY_CLIENT
            live.scope.cancel()

    async def _persist(self, live: _LiveTask, event: StreamResponse | None = None) -> None:
        if self._shared is None and type(self.store) is MemoryTaskStore:
            # Its save never awaits: two saves cannot interleave, nothing to order (and no
            # lock to make per task, three acquisitions per SendMessage).
            await self.store.save(live.record)
            return
        lock = live.save_lock
        if lock is None:
            lock = live.save_lock = anyio.Lock()
        try:  # uncontended (usually): no checkpoint, no loop round trip
            lock.acquire_nowait()
        except anyio.WouldBlock:
            await lock.acquire()
        try:
            if self._shared is not None:
                await self._shared.save_event(live.record, event)
            else:
                await self.store.save(live.record)
        finally:
            lock.release()

    async def _set_status(self, live: _LiveTask, state: TaskState, message: Message | None) -> None:
        # Mutate and publish without awaiting in between, so a subscriber that joins
        # while the store write is in flight sees the change exactly once.
        task = live.record.task
        status = TaskStatus(state=state, message=message, timestamp=self._now())
        task.status = status
        if message is not None:
            task.history.append(message)
            live.record.size += _json_size(message)
        response = None
        if self._wants_events(live):  # no events when nobody streams
            event = TaskStatusUpdateEvent(
                task_id=task.id, context_id=task.context_id, status=status
            )
            response = StreamResponse(status_update=event)
            self._publish(live, response)
        if state.is_terminal:
            self._close_subscribers(live)
            if self.push is not None:
                self.push.finish(task.id)
        await self._persist(live, response)

    async def _add_artifact(
        self,
        live: _LiveTask,
        artifact: Artifact,
        size: int,
        *,
        append: bool = False,
        last_chunk: bool = True,
    ) -> None:
        """Add an artifact, or with ``append`` a chunk to the task's artifact of that id.

        A chunk replaces the held artifact with a longer copy (never mutates it in place:
        snapshots share the artifacts the task holds, see :func:`_view`).
        """
        task = live.record.task
        index = None
        if append:
            index = next(
                (i for i, a in enumerate(task.artifacts) if a.artifact_id == artifact.artifact_id),
                None,
            )
        if index is not None:
            held = task.artifacts[index]
            task.artifacts[index] = held.model_copy(
                update={"parts": [*held.parts, *artifact.parts]}
            )
        else:
            task.artifacts.append(artifact)
        live.record.size += size
        response = None
        if self._wants_events(live):
            event = TaskArtifactUpdateEvent(
                task_id=task.id,
                context_id=task.context_id,
                artifact=artifact,
                append=append,
                last_chunk=last_chunk,
            )
            response = StreamResponse(artifact_update=event)
            self._publish(live, response)
        await self._persist(live, response)

    def _agent_message(self, task: Task, text: str, *, url: str | None = None) -> Message:
        parts = [Part(text=text)]
        if url is not None:  # where the user acts on an interruption (AUTH_REQUIRED)
            parts.append(Part(url=url, media_type="text/html"))
        return Message(
            message_id=new_id(),
            role=Role.AGENT,
            parts=parts,
            task_id=task.id,
            context_id=task.context_id,
        )

    def _subscribe(self, live: _LiveTask) -> tuple[Task, _Subscriber, _Receive]:
        """Snapshot and registration in one synchronous step: no event is missed or doubled."""
        subscriber, receive = self._register(live.subscribers)
        return _view(live.record.task, history_length=None), subscriber, receive

    def _register(self, subscribers: list[_Subscriber]) -> tuple[_Subscriber, _Receive]:
        send, receive = anyio.create_memory_object_stream[StreamResponse](self._buffer)
        subscriber = _Subscriber(send)
        subscribers.append(subscriber)
        return subscriber, receive

    def _park(self, live: _LiveTask) -> None:
        """Keep an interrupted task's subscribers for the run the client's reply starts."""
        if live.subscribers:
            self._parked[live.record.task.id] = live.subscribers

    async def _drain(
        self,
        task_id: str,
        subscribers: list[_Subscriber],
        snapshot: Task,
        subscriber: _Subscriber,
        receive: _Receive,
    ) -> AsyncGenerator[StreamResponse, None]:
        """The snapshot, then the subscriber's events; always unregisters and closes."""
        try:
            async with receive:
                yield StreamResponse(task=snapshot)
                async for event in receive:
                    yield event
        finally:
            if subscriber in subscribers:
                subscribers.remove(subscriber)
            if not subscribers and self._parked.get(task_id) is subscribers:
                del self._parked[task_id]
            subscriber.send.close()
        if subscriber.overflowed:
            raise InternalError(
                f"the event stream of task {task_id} fell more than "
                f"{self._buffer} events behind and was closed; subscribe again to resume"
            )

    # -- running a skill ---------------------------------------------------------------

    async def _run(self, live: _LiveTask, skill: Skill, arguments: dict[str, Any]) -> None:
        principal = live.caller.principal
        with (
            acting_for(principal),
            recording(self.recorder),
            span(
                f"skill {skill.id}",
                principal=principal,
                attributes={ATTR_SKILL: skill.id, ATTR_TASK_ID: live.record.task.id},
                context=live.trace_context,
            ) as current,
        ):
            try:
                await self._run_skill(live, skill, arguments, current)
            except KeycardError as exc:  # a shared store failed, or another replica ended it
                mark_error(current, exc)
                logger.warning(
                    "task %s: its state could not be saved (%s)",
                    live.record.task.id,
                    type(exc).__name__,
                )

    async def _run_skill(
        self, live: _LiveTask, skill: Skill, arguments: dict[str, Any], current: Span
    ) -> None:
        record = live.record
        task = record.task
        ctx = Context(
            caller=live.caller,
            task_id=task.id,
            context_id=task.context_id,
            skill_id=skill.id,
            message=record.replies[-1] if record.replies else task.history[0],
            sink=_Sink(self, live),
            dependencies=self.agent.dependency_map,
            delegation=self.delegation,
            replies=record.replies,
        )
        outcome: tuple[TaskState, str | None] | None = None
        interrupt_url: str | None = None
        started = self._clock()
        timer = time.perf_counter()
        try:
            with live.scope:
                await self._set_status(live, TaskState.WORKING, None)
                try:
                    result = await self.agent.call_skill(skill, ctx, arguments)
                    parts = skill.result_parts(result)
                except TaskInterrupt as interrupt:
                    outcome = (interrupt.state, interrupt.text)
                    interrupt_url = interrupt.url
                except KeycardError as exc:
                    mark_error(current, exc)
                    outcome = (TaskState.FAILED, str(exc))
                    log_failed_task(live.caller.principal, task.id, skill.id, exc)
                except Exception as exc:
                    mark_error(current, exc)
                    log_failed_task(live.caller.principal, task.id, skill.id, exc)
                    logger.debug("skill %s raised", skill.id, exc_info=True)
                    outcome = (
                        TaskState.FAILED,
                        f"The skill failed with an unexpected error ({type(exc).__name__}).",
                    )
                else:
                    outcome = (TaskState.COMPLETED, None)
                    if parts:
                        try:
                            await _Sink(self, live).add_artifact(
                                parts, name=f"{skill.id} result", description=None, metadata=None
                            )
                        except TaskTooLargeError as exc:
                            mark_error(current, exc)
                            outcome = (TaskState.FAILED, str(exc))
            if live.scope.cancel_called:
                outcome = (TaskState.CANCELED, live.cancel_reason or CANCELED_BY_CLIENT)
            assert outcome is not None
            state, text = outcome
            set_task_outcome(current, state.value)
            record_skill(skill.id, state.value, time.perf_counter() - timer)
            with anyio.move_on_after(self._grace, shield=True):
                message = (
                    None
                    if text is None
                    else self._agent_message(
                        task, text, url=interrupt_url if state.is_interrupted else None
                    )
                )
                await self._set_status(live, state, message)
                await self._record_served(live, skill, state, text, started)
        finally:
            if task.status.state.is_interrupted and not self._closing:
                self._park(live)
            else:
                self._close_subscribers(live)
            self._live.pop(task.id, None)
            live.done.set()

    async def _record_served(
        self, live: _LiveTask, skill: Skill, state: TaskState, text: str | None, started: float
    ) -> None:
        """One audit record per run of a task; a failing audit store never fails the task."""
        if self.recorder is None:
            return
        try:
            await self.recorder.record_served(
                principal=live.caller.principal,
                task_id=live.record.task.id,
                skill=skill.id,
                outcome=state.value.removeprefix("TASK_STATE_").lower(),
                started=started,
                ended=self._clock(),
                reason=None if state == TaskState.COMPLETED else text,
            )
        except Exception as exc:
            logger.warning(
                "could not record task %s in the audit trail (%s)",
                live.record.task.id,
                type(exc).__name__,
            )

    async def _start(
        self, request: SendMessageRequest, caller: Caller, *, subscribe: bool
    ) -> tuple[_LiveTask, tuple[Task, _Subscriber, _Receive] | tuple[Task, TaskWatch] | None]:
        if self._task_group is None or self._closing:
            raise InternalError(
                "the task runtime is not running (enter TaskRuntime.running()) or is shutting down"
            )
        message = request.message
        size = self._check_message(message)
        if message.task_id:
            record = await self._owned(message.task_id, caller)
            finishing = self._live.get(record.task.id)
            if finishing is not None and record.state.is_interrupted:
                # The run has published its interruption and is saving it: a reply sent
                # as soon as a stream shows INPUT_REQUIRED waits for that, then resumes.
                await finishing.done.wait()
                record = await self._owned(message.task_id, caller)
            if record.task.id in self._live or not record.state.is_interrupted:
                state = record.state.value
                raise UnsupportedOperationError(
                    f"task {record.task.id} is {state} and does not accept messages; "
                    "only tasks waiting for input or authorization do"
                )
            if message.context_id and message.context_id != record.task.context_id:
                raise InvalidParamsError(
                    f"message contextId does not match the contextId of task {record.task.id}"
                )
            skill = self.agent.skills.get(record.skill_id)
            if skill is None:
                raise InternalError(f"the skill of task {record.task.id} no longer exists")
            self._authorize(skill, caller)
            self.agent.check_media_types(message, skill)
            arguments = skill.validate_arguments(record.arguments)
            message = message.model_copy(update={"context_id": record.task.context_id})
            self._check_fits(record, message, what="the message", copies=2)
            record.replies.append(message)
            record.task.history.append(message)
            record.size += 2 * size  # in the history and among the replies
            if self._shared is not None:
                # Claim the resume (compare-and-set): of two replicas resuming at once,
                # one wins and the other answers TaskConflictError.
                record.task.status = TaskStatus(state=TaskState.WORKING, timestamp=self._now())
                await self._shared.save_event(record, None)
                if record.task.id in self._live:
                    raise UnsupportedOperationError(f"task {record.task.id} is already running")
        else:
            self.agent.check_media_types(message)
            call = self.agent.route(message)
            skill = self.agent.skills.get(call.skill_id)
            if skill is None:
                raise InvalidParamsError(
                    f"unknown skill {call.skill_id!r}. {self.agent.describe_skills()}"
                )
            self._authorize(skill, caller)
            self.agent.check_media_types(message, skill)
            arguments = skill.validate_arguments(call.arguments)
            task_id = new_id()
            context_id = message.context_id or new_id()
            message = message.model_copy(update={"task_id": task_id, "context_id": context_id})
            task = Task(
                id=task_id,
                context_id=context_id,
                status=TaskStatus(state=TaskState.SUBMITTED, timestamp=self._now()),
                history=[message],
            )
            record = TaskRecord(
                task=task,
                owner=caller.owner,
                skill_id=skill.id,
                arguments=dict(call.arguments),
                scopes=tuple(skill.scopes),
                size=size + len(task.id) + len(context_id) + 128,
            )
            await self.store.create(record)
            if self._task_group is None or self._closing:  # shut down while storing
                record.task.status = TaskStatus(
                    state=TaskState.CANCELED,
                    message=self._agent_message(task, SHUTTING_DOWN),
                    timestamp=self._now(),
                )
                await self.store.save(record)
                raise InternalError("the agent is shutting down; the task was not started")
        # No await since the checks above: registering the live task is atomic with them.
        live = _LiveTask(
            record=record,
            caller=caller,
            trace_context=otel_context.get_current(),
            subscribers=self._parked.pop(record.task.id, []),
        )
        self._live[record.task.id] = live
        subscription: tuple[Task, _Subscriber, _Receive] | tuple[Task, TaskWatch] | None = None
        if subscribe and self._shared is not None:
            watch = self._shared.watch(record.task.id)
            watch.start_after(record.revision)
            subscription = (_view(record.task, history_length=None), watch)
        elif subscribe:
            subscription = self._subscribe(live)
        assert self._task_group is not None
        self._task_group.start_soon(self._run, live, skill, arguments)
        return live, subscription

    # -- A2A operations ----------------------------------------------------------------

    async def _direct(self, request: SendMessageRequest, caller: Caller) -> Message | None:
        """The answer of a skill annotated ``-> Message`` (no task), else ``None``."""
        message = request.message
        if message.task_id or not any(s.returns_message for s in self.agent.skills.values()):
            return None
        if self._task_group is None or self._closing:
            return None  # _start refuses it
        self._check_message(message)
        self.agent.check_media_types(message)
        call = self.agent.route(message)
        skill = self.agent.skills.get(call.skill_id)
        if skill is None or not skill.returns_message:
            return None
        self._authorize(skill, caller)
        self.agent.check_media_types(message, skill)
        arguments = skill.validate_arguments(call.arguments)
        return await answer_directly(
            self.agent,
            skill,
            arguments,
            message,
            caller=caller,
            delegation=self.delegation,
            recorder=self.recorder,
            max_bytes=self.max_task_bytes,
        )

    # -- push notification configs (A2A 1.0 §3.1.7-§3.1.10) ------------------------------

    @property
    def push_notifications(self) -> bool:
        """Whether this runtime sends push notifications (the card's capability)."""
        return self.push is not None

    def _require_push(self) -> PushNotifier:
        if self.push is None:
            raise PushNotificationNotSupportedError(
                "This agent does not send push notifications: poll or stream instead."
            )
        return self.push

    async def _webhook_of(self, request: SendMessageRequest) -> TaskPushNotificationConfig | None:
        """``configuration.taskPushNotificationConfig``, checked before the task starts."""
        config = request.configuration
        webhook = config.task_push_notification_config if config is not None else None
        if webhook is not None:
            await self._require_push().validate(webhook)
        return webhook

    def _register_webhook(
        self, live: _LiveTask, webhook: TaskPushNotificationConfig | None
    ) -> None:
        # Synchronously after _start: the skill has not run yet, no event is missed.
        if webhook is not None and self.push is not None:
            self.push.register(live.record.task.id, live.record.owner, webhook)

    async def create_push_config(
        self, config: TaskPushNotificationConfig, *, caller: Caller
    ) -> TaskPushNotificationConfig:
        push = self._require_push()
        if not config.task_id:
            raise InvalidParamsError(
                "taskId is required",
                data={"errors": [{"field": "taskId", "message": "required"}]},
            )
        record = await self._owned(config.task_id, caller)
        return await push.create(record.task.id, record.owner, config)

    async def get_push_config(
        self, request: GetTaskPushNotificationConfigRequest, *, caller: Caller
    ) -> TaskPushNotificationConfig:
        push = self._require_push()
        record = await self._owned(request.task_id, caller)
        return push.get(record.task.id, request.id)

    async def list_push_configs(
        self, request: ListTaskPushNotificationConfigsRequest, *, caller: Caller
    ) -> ListTaskPushNotificationConfigsResponse:
        push = self._require_push()
        record = await self._owned(request.task_id, caller)
        return ListTaskPushNotificationConfigsResponse(configs=push.list(record.task.id))

    async def delete_push_config(
        self, request: DeleteTaskPushNotificationConfigRequest, *, caller: Caller
    ) -> None:
        push = self._require_push()
        record = await self._owned(request.task_id, caller)
        push.delete(record.task.id, request.id)

    async def send_message(self, request: SendMessageRequest, *, caller: Caller) -> Task | Message:
        """``SendMessage``: wait until the task is terminal or interrupted, unless
        ``configuration.returnImmediately`` is set. A skill annotated ``-> Message``
        answers with its message and no task."""
        direct = await self._direct(request, caller)
        if direct is not None:
            return direct
        webhook = await self._webhook_of(request)
        live, _ = await self._start(request, caller, subscribe=False)
        self._register_webhook(live, webhook)
        config = request.configuration
        history_length = config.history_length if config is not None else None
        if config is None or not config.return_immediately:
            await live.done.wait()
        return _view(live.record.task, history_length=history_length)

    async def stream_message(
        self, request: SendMessageRequest, *, caller: Caller
    ) -> AsyncGenerator[StreamResponse, None]:
        """``SendStreamingMessage``: the Task first, then its events until it stops (or,
        from a skill annotated ``-> Message``, that one message)."""
        direct = await self._direct(request, caller)
        if direct is not None:
            yield StreamResponse(message=direct)
            return
        webhook = await self._webhook_of(request)
        live, subscription = await self._start(request, caller, subscribe=True)
        self._register_webhook(live, webhook)
        if subscription is not None and len(subscription) == 2:
            async with aclosing(self._drain_shared(*subscription)) as events:
                async for event in events:
                    yield event
            return
        assert subscription is not None
        snapshot, subscriber, receive = subscription
        drain = self._drain(live.record.task.id, live.subscribers, snapshot, subscriber, receive)
        async with aclosing(drain) as events:
            async for event in events:
                yield event

    async def _drain_shared(
        self, snapshot: Task, watch: TaskWatch
    ) -> AsyncGenerator[StreamResponse, None]:
        """The snapshot, then the task's events from every replica; always closes."""
        try:
            yield StreamResponse(task=snapshot)
            async for event in watch.events():
                yield event
        finally:
            watch.close()

    async def get_task(self, request: GetTaskRequest, *, caller: Caller) -> Task:
        record = await self._owned(request.id, caller)
        return _view(record.task, history_length=request.history_length)

    async def list_tasks(self, request: ListTasksRequest, *, caller: Caller) -> ListTasksResponse:
        """``ListTasks``: the caller's own tasks, newest first.

        Authentication follows the agent card: where anonymous calls are allowed, an
        anonymous caller may list too, and sees no task (no task is visible to anonymous
        callers after the request that created it, see :class:`TaskViewer`).
        """
        size = request.page_size or DEFAULT_PAGE_SIZE
        size = min(size, MAX_PAGE_SIZE)
        if caller.principal is None:
            return ListTasksResponse(tasks=[], next_page_token="", page_size=size, total_size=0)
        after = request.status_timestamp_after
        page = await self.store.list(
            viewer=TaskViewer.of(caller.principal),
            context_id=request.context_id,
            state=request.status,
            updated_after=_utc(after) if after is not None else None,
            limit=size,
            cursor=request.page_token or None,
        )
        tasks = [
            _view(
                r.task,
                history_length=request.history_length,
                include_artifacts=bool(request.include_artifacts),
            )
            for r in page.records
        ]
        return ListTasksResponse(
            tasks=tasks,
            next_page_token=page.next_cursor or "",
            page_size=size,
            total_size=page.total,
        )

    async def cancel_task(self, request: CancelTaskRequest, *, caller: Caller) -> Task:
        """``CancelTask``: stop the running skill (its cancel scope) and record CANCELED."""
        record = await self._owned(request.id, caller)
        live = self._live.get(record.task.id)
        if live is not None:
            if live.cancel_reason is None:
                live.cancel_reason = CANCELED_BY_CLIENT
            live.scope.cancel()
            await live.done.wait()
            return _view(live.record.task, history_length=None)
        if self._shared is not None and not (
            record.state.is_terminal or record.state.is_interrupted
        ):
            return await self._cancel_elsewhere(self._shared, record)
        if record.state.is_terminal:
            raise TaskNotCancelableError(
                f"task {record.task.id} is already {record.state.value} and cannot be canceled"
            )
        idle = _LiveTask(record=record, subscribers=self._parked.pop(record.task.id, []))
        await self._set_status(
            idle, TaskState.CANCELED, self._agent_message(record.task, CANCELED_BY_CLIENT)
        )
        return _view(record.task, history_length=None)

    async def _cancel_elsewhere(self, shared: SharedTaskStore, record: TaskRecord) -> Task:
        """Cancel a task running on another replica: ask it, then wait for the end."""
        task_id = record.task.id
        watch = shared.watch(task_id)
        try:
            watch.start_after(record.revision)
            await shared.request_cancel(task_id)
            with anyio.move_on_after(self._grace):
                async for _ in watch.events():
                    pass
        finally:
            watch.close()
        latest = await self.store.get(task_id)
        return _view((latest or record).task, history_length=None)

    async def subscribe(
        self, request: SubscribeToTaskRequest, *, caller: Caller
    ) -> AsyncGenerator[StreamResponse, None]:
        """``SubscribeToTask``: the Task now, then its events until it is terminal (§3.1.6).

        An interrupted task's stream stays open: it carries the run that the client's
        reply starts, through any further interruption, until the task ends.
        """
        record = await self._owned(request.id, caller)
        if record.state.is_terminal:
            raise UnsupportedOperationError(
                f"task {record.task.id} is {record.state.value}; there is nothing to subscribe to"
            )
        task_id = record.task.id
        if self._shared is not None:
            watch = self._shared.watch(task_id)
            latest = await self.store.get(task_id)  # read after registering: nothing missed
            if latest is None or latest.state.is_terminal:
                watch.close()
                yield StreamResponse(task=_view((latest or record).task, history_length=None))
                return
            watch.start_after(latest.revision)
            shared = self._drain_shared(_view(latest.task, history_length=None), watch)
            async with aclosing(shared) as events:
                async for event in events:
                    yield event
            return
        live = self._live.get(task_id)
        if live is not None:
            subscribers = live.subscribers
            snapshot, subscriber, receive = self._subscribe(live)
        else:  # interrupted: wait, parked, for the run the client's reply starts
            subscribers = self._parked.setdefault(task_id, [])
            subscriber, receive = self._register(subscribers)
            # The record may have been read before a reply resumed and finished the task:
            # read it again now that the subscriber is registered (a run the reply starts
            # from here on takes the parked subscribers with it).
            try:
                latest = await self.store.get(task_id)
            except BaseException:  # cancelled or failed before the stream began
                if subscriber in subscribers:
                    subscribers.remove(subscriber)
                if not subscribers and self._parked.get(task_id) is subscribers:
                    del self._parked[task_id]
                subscriber.send.close()
                receive.close()
                raise
            if latest is None or latest.state.is_terminal:
                subscriber.send.close()
            snapshot = _view((latest or record).task, history_length=None)
        drain = self._drain(task_id, subscribers, snapshot, subscriber, receive)
        async with aclosing(drain) as events:
            async for event in events:
                yield event
