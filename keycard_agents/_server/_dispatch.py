"""The A2A 1.0 operations, shared by the JSON-RPC and HTTP+JSON bindings.

Implements the abstract operations of A2A 1.0 §3.1 (SendMessage, SendStreamingMessage,
GetTask, ListTasks, CancelTask, SubscribeToTask, GetExtendedAgentCard and the push
notification configuration methods, §3.1.7-§3.1.10, answered with PushNotificationNotSupported
when the runtime sends none) on top of the task runtime, and
the mapping of every failure to a protocol error that reveals no internals.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, aclosing
from typing import Any, NamedTuple, Protocol, runtime_checkable

from opentelemetry.trace import get_current_span
from pydantic import BaseModel, ValidationError

from keycard_agents._a2a.errors import (
    A2AError,
    ExtendedAgentCardNotConfiguredError,
    InternalError,
    MethodNotFoundError,
    PushNotificationNotSupportedError,
    invalid_params,
)
from keycard_agents._a2a.types import (
    AgentCard,
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetExtendedAgentCardRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTaskPushNotificationConfigsResponse,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    Task,
    TaskPushNotificationConfig,
    dump,
)
from keycard_agents._agent._context import DelegationProvider
from keycard_agents._audit._agent_records import AuditRecorder
from keycard_agents._errors import AuthenticationError
from keycard_agents._logs import get_logger
from keycard_agents._oauth._resource_server import Caller, MissingCredentialsError
from keycard_agents._observe._tracing import set_task_outcome

__all__ = [
    "PUSH_METHODS",
    "STREAMING_METHODS",
    "UNARY_METHODS",
    "A2ARuntime",
    "Dispatcher",
    "EncodedResult",
    "ExtendedCardProvider",
    "ManagedRuntime",
    "PushConfigRuntime",
    "as_protocol_error",
    "parse_params",
    "sends_push_notifications",
]

logger = get_logger("keycard_agents.server")

PUSH_METHODS = frozenset(
    {
        "CreateTaskPushNotificationConfig",
        "GetTaskPushNotificationConfig",
        "ListTaskPushNotificationConfigs",
        "DeleteTaskPushNotificationConfig",
    }
)
_PUSH_PARAMS: dict[str, type[BaseModel]] = {
    "CreateTaskPushNotificationConfig": TaskPushNotificationConfig,
    "GetTaskPushNotificationConfig": GetTaskPushNotificationConfigRequest,
    "ListTaskPushNotificationConfigs": ListTaskPushNotificationConfigsRequest,
    "DeleteTaskPushNotificationConfig": DeleteTaskPushNotificationConfigRequest,
}
_PARAMS: dict[str, type[BaseModel]] = {
    "SendMessage": SendMessageRequest,
    "SendStreamingMessage": SendMessageRequest,
    "GetTask": GetTaskRequest,
    "ListTasks": ListTasksRequest,
    "CancelTask": CancelTaskRequest,
    "SubscribeToTask": SubscribeToTaskRequest,
    "GetExtendedAgentCard": GetExtendedAgentCardRequest,
}
STREAMING_METHODS = frozenset({"SendStreamingMessage", "SubscribeToTask"})
UNARY_METHODS = frozenset(_PARAMS) - STREAMING_METHODS | PUSH_METHODS


class A2ARuntime(Protocol):
    """What the server calls on the task runtime (``keycard_agents.runtime.TaskRuntime``)."""

    async def send_message(
        self, request: SendMessageRequest, *, caller: Caller
    ) -> Task | Message: ...

    def stream_message(
        self, request: SendMessageRequest, *, caller: Caller
    ) -> AsyncIterator[StreamResponse]: ...

    async def get_task(self, request: GetTaskRequest, *, caller: Caller) -> Task: ...

    async def list_tasks(
        self, request: ListTasksRequest, *, caller: Caller
    ) -> ListTasksResponse: ...

    async def cancel_task(self, request: CancelTaskRequest, *, caller: Caller) -> Task: ...

    def subscribe(
        self, request: SubscribeToTaskRequest, *, caller: Caller
    ) -> AsyncIterator[StreamResponse]: ...


@runtime_checkable
class PushConfigRuntime(Protocol):
    """A runtime that may send push notifications (``TaskRuntime`` with a ``PushNotifier``)."""

    @property
    def push_notifications(self) -> bool: ...

    async def create_push_config(
        self, config: TaskPushNotificationConfig, *, caller: Caller
    ) -> TaskPushNotificationConfig: ...

    async def get_push_config(
        self, request: GetTaskPushNotificationConfigRequest, *, caller: Caller
    ) -> TaskPushNotificationConfig: ...

    async def list_push_configs(
        self, request: ListTaskPushNotificationConfigsRequest, *, caller: Caller
    ) -> ListTaskPushNotificationConfigsResponse: ...

    async def delete_push_config(
        self, request: DeleteTaskPushNotificationConfigRequest, *, caller: Caller
    ) -> None: ...


def sends_push_notifications(runtime: object) -> bool:
    return isinstance(runtime, PushConfigRuntime) and runtime.push_notifications


@runtime_checkable
class ManagedRuntime(A2ARuntime, Protocol):
    """A runtime the app manages (``keycard_agents.runtime.TaskRuntime`` is one).

    The app's lifespan enters :meth:`running` and, on shutdown, :meth:`aclose` ends the
    running tasks; the agent's audit records go to ``recorder`` (the app sets one when it
    is ``None``); ``delegation`` is the provider behind ``ctx.dependency(...)``. A runtime
    that is only an :class:`A2ARuntime` is served as is, without any of this.
    """

    recorder: AuditRecorder | None
    delegation: DelegationProvider | None

    def running(self) -> AbstractAsyncContextManager[Any]: ...

    async def aclose(self) -> None: ...


ExtendedCardProvider = Callable[[Caller], AgentCard]


class EncodedResult(NamedTuple):
    """A method's result as compact UTF-8 JSON text (see :meth:`Dispatcher.unary`)."""

    json: bytes


def _encode(model: BaseModel) -> bytes:
    # The bytes of pydantic_core.to_json(dump(model)): JSON mode, camelCase, no None.
    return model.__pydantic_serializer__.to_json(model, by_alias=True, exclude_none=True)


def parse_params(method: str, params: Mapping[str, Any] | None) -> BaseModel | None:
    """Validate a method's params into its request model (InvalidParams listing problems).

    Push notification methods have no model here: they are refused before use.
    """
    model = _PARAMS.get(method) or _PUSH_PARAMS.get(method)
    if model is None:
        raise MethodNotFoundError(f"Unknown method {method[:64]!r}.")
    try:
        return model.model_validate(params or {})
    except ValidationError as exc:
        raise invalid_params(exc) from exc


def as_protocol_error(exc: Exception) -> Exception:
    """The error to report for ``exc``: A2A and authentication errors pass; others hide.

    Anything else (a bug in a skill or in the runtime, a library error) becomes an
    InternalError with a generic message; the details go to the server log only.
    """
    if isinstance(exc, A2AError | AuthenticationError):
        return exc
    if isinstance(exc, ValidationError):
        # A model built by the runtime failed its own validation: the agent's fault.
        logger.error("invalid agent response: %s", type(exc).__name__, exc_info=exc)
        return InternalError("The agent produced an invalid response.")
    logger.error("unhandled error in an A2A call: %s", type(exc).__name__, exc_info=exc)
    return InternalError()


class Dispatcher:
    """Runs A2A operations against a runtime and returns ProtoJSON data."""

    def __init__(
        self, *, runtime: A2ARuntime, extended_card: ExtendedCardProvider | None = None
    ) -> None:
        self._runtime = runtime
        self._extended_card = extended_card

    async def unary(
        self, method: str, request: BaseModel | None, *, caller: Caller, encoded: bool = False
    ) -> Any:
        """Run a non-streaming method; the result as JSON data.

        With ``encoded``, the result of ``SendMessage`` and ``GetTask`` comes as
        :class:`EncodedResult` (its JSON text, the same bytes as encoding the data):
        pydantic-core writes the task once instead of building it as data first.
        """
        runtime = self._runtime
        if method in PUSH_METHODS:
            return await self._push(method, request, caller)
        if isinstance(request, SendMessageRequest):
            self._refuse_push_config(request)
            result = await runtime.send_message(request, caller=caller)
            if isinstance(result, Task):
                set_task_outcome(get_current_span(), result.status.state.value, task_id=result.id)
                if encoded:
                    return EncodedResult(b'{"task":' + _encode(result) + b"}")
                return {"task": dump(result)}
            if encoded:
                return EncodedResult(b'{"message":' + _encode(result) + b"}")
            return {"message": dump(result)}
        if isinstance(request, GetTaskRequest):
            task = await runtime.get_task(request, caller=caller)
            return EncodedResult(_encode(task)) if encoded else dump(task)
        if isinstance(request, ListTasksRequest):
            response = await runtime.list_tasks(request, caller=caller)
            return response.model_dump(mode="json", by_alias=True, exclude_none=True)
        if isinstance(request, CancelTaskRequest):
            return dump(await runtime.cancel_task(request, caller=caller))
        if isinstance(request, GetExtendedAgentCardRequest):
            if self._extended_card is None:
                raise ExtendedAgentCardNotConfiguredError()
            if caller.principal is None:
                raise MissingCredentialsError("The extended agent card requires a bearer token.")
            return dump(self._extended_card(caller))
        raise MethodNotFoundError(f"{method} is a streaming method; use an SSE request.")

    def check_supported(self, method: str) -> None:
        """Refuse a method this agent does not offer, before its parameters are read."""
        if method in PUSH_METHODS and not sends_push_notifications(self._runtime):
            raise PushNotificationNotSupportedError()

    def _refuse_push_config(self, request: SendMessageRequest) -> None:
        config = request.configuration
        if (
            config is not None
            and config.task_push_notification_config is not None
            and not sends_push_notifications(self._runtime)
        ):
            raise PushNotificationNotSupportedError(
                "This agent does not send push notifications: leave out "
                "configuration.taskPushNotificationConfig and poll or stream instead."
            )

    async def _push(self, method: str, request: BaseModel | None, caller: Caller) -> Any:
        runtime = self._runtime
        if not (isinstance(runtime, PushConfigRuntime) and runtime.push_notifications):
            raise PushNotificationNotSupportedError()
        if isinstance(request, TaskPushNotificationConfig):
            return dump(await runtime.create_push_config(request, caller=caller))
        if isinstance(request, DeleteTaskPushNotificationConfigRequest):
            await runtime.delete_push_config(request, caller=caller)
            return {}
        if isinstance(request, GetTaskPushNotificationConfigRequest):
            return dump(await runtime.get_push_config(request, caller=caller))
        if isinstance(request, ListTaskPushNotificationConfigsRequest):
            return dump(await runtime.list_push_configs(request, caller=caller))
        raise MethodNotFoundError(f"Unknown method {method[:64]!r}.")  # pragma: no cover

    async def open_stream(
        self, method: str, request: BaseModel | None, *, caller: Caller
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Start a streaming method and wait for its first event.

        Errors that happen before the first event (authentication, unknown task, invalid
        request) are raised here, so the binding can still answer them with a plain
        response; the returned generator yields that event and then the rest.
        """
        if isinstance(request, SendMessageRequest) and method == "SendStreamingMessage":
            self._refuse_push_config(request)
            events = self._runtime.stream_message(request, caller=caller)
        elif isinstance(request, SubscribeToTaskRequest):
            events = self._runtime.subscribe(request, caller=caller)
        else:
            raise MethodNotFoundError(f"{method} is not a streaming method.")
        iterator = aiter(events)
        try:
            first: StreamResponse | None = await anext(iterator)
        except StopAsyncIteration:
            first = None
        except BaseException:
            await _close(iterator)
            raise
        return _chain(first, iterator)


async def _close(iterator: AsyncIterator[Any]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


class _Closing:
    """Adapts an async iterator to ``aclosing`` (which wants an ``aclose`` method)."""

    def __init__(self, iterator: AsyncIterator[StreamResponse]) -> None:
        self.iterator = iterator

    async def aclose(self) -> None:
        await _close(self.iterator)


async def _chain(
    first: StreamResponse | None, rest: AsyncIterator[StreamResponse]
) -> AsyncGenerator[dict[str, Any], None]:
    async with aclosing(_Closing(rest)):
        if first is None:
            return
        yield dump(first)
        async for event in rest:
            yield dump(event)
