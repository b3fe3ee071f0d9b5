"""The A2A 1.0 client: call agents from scripts, apps and other agents.

Implements the client side of A2A 1.0 §8.2 (Agent Card discovery at
``/.well-known/agent-card.json``), §9 (the JSON-RPC binding: ``SendMessage``,
``SendStreamingMessage`` as Server-Sent Events, ``GetTask``, ``ListTasks``, ``CancelTask``,
``SubscribeToTask``; header ``A2A-Version: 1.0``), RFC 9728 §3 (protected resource
metadata: which resource to ask a token for and which authorization servers issue it),
RFC 9111 §5.2 / RFC 9110 §13.1.2 (``Cache-Control: max-age``, ``no-cache``, ``no-store``
and ``ETag`` revalidation of those documents) and RFC 6750 §3 (reading the
``WWW-Authenticate`` challenge of a refused call).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import httpx
from opentelemetry.context import Context as OtelContext
from opentelemetry.trace import Span, SpanKind, set_span_in_context
from pydantic import BaseModel, ValidationError

from keycard_agents._a2a import errors as a2a_errors
from keycard_agents._a2a.errors import A2AError, InvalidAgentResponseError
from keycard_agents._a2a.types import (
    AGENT_CARD_PATH,
    AgentCard,
    ListTasksResponse,
    Message,
    Part,
    ProtocolBinding,
    Role,
    StreamResponse,
    Task,
    TaskState,
)
from keycard_agents._a2a.v03 import (
    METHODS_TO_V03,
    card_endpoint_v03,
    event_from_v03,
    params_to_v03,
    result_from_v03,
)
from keycard_agents._errors import (
    ConfigurationError,
    KeycardError,
    RemoteAuthenticationError,
    RemoteTaskError,
    TransportError,
)
from keycard_agents._jose._card_signature import (
    CARD_SIGNATURE_POLICIES,
    CardSignatureError,
    CardSignaturePolicy,
    signature_key_urls,
    verify_card,
)
from keycard_agents._jose._keys import VerificationKeys
from keycard_agents._json import JsonLimitError, loads_bounded
from keycard_agents._oauth._challenge import bearer_challenge
from keycard_agents._oauth._discovery import (
    CardCache,
    CardCacheStats,
    DocumentMissingError,
    ResourceMetadata,
    parse_metadata,
)
from keycard_agents._oauth._http import describe_error
from keycard_agents._oauth._urls import (
    protected_resource_metadata_url,
    resource_metadata_url_under,
    same_origin,
)
from keycard_agents._observe._tracing import (
    describe_a2a_call,
    describe_a2a_result,
    get_tracer,
    inject_context,
    mark_error,
    span,
)

__all__ = [
    "AgentClient",
    "AuthRequired",
    "CardCache",
    "CardCacheStats",
    "ResourceMetadata",
    "TokenProvider",
    "auth_required",
    "call_message",
    "open_agent_client",
    "task_result",
    "text_message",
]

ProtocolChoice = Literal["auto", "1.0", "0.3"]
PROTOCOL_CHOICES: tuple[ProtocolChoice, ...] = ("auto", "1.0", "0.3")

A2A_VERSION = "1.0"
_MAX_EVENTS_AFTER_FAILURE = 100
#: The key set of a card that names none this client may use (one object: a memo key).
_NO_KEYS = VerificationKeys(())
_ERROR_CLASSES: dict[int, type[A2AError]] = {
    cls.code: cls
    for cls in (
        getattr(a2a_errors, name)
        for name in a2a_errors.__all__
        if isinstance(getattr(a2a_errors, name), type)
    )
    if issubclass(cls, A2AError) and cls is not A2AError
}

TokenProvider = Callable[[], Awaitable[str]]
_M = TypeVar("_M", bound=BaseModel)


# ------------------------------------------------------------------------- messages


def text_message(
    text: str, *, task_id: str | None = None, context_id: str | None = None
) -> Message:
    """A user message with one text part."""
    return Message(
        message_id=str(uuid.uuid4()),
        role=Role.USER,
        parts=[Part(text=text)],
        task_id=task_id,
        context_id=context_id,
    )


def call_message(
    skill: str, arguments: dict[str, Any] | None = None, *, context_id: str | None = None
) -> Message:
    """A typed skill call: one data part ``{"skill": id, "arguments": {...}}``."""
    return Message(
        message_id=str(uuid.uuid4()),
        role=Role.USER,
        parts=[Part(data={"skill": skill, "arguments": arguments or {}})],
        context_id=context_id,
    )


def _as_message(message: Message | str, task_id: str | None, context_id: str | None) -> Message:
    if isinstance(message, str):
        return text_message(message, task_id=task_id, context_id=context_id)
    update = {k: v for k, v in (("task_id", task_id), ("context_id", context_id)) if v}
    return message.model_copy(update=update) if update else message


def _part_value(part: Part) -> Any:
    if part.text is not None:
        return part.text
    if part.raw is not None:
        return part.raw
    if part.url is not None:
        return part.url
    return part.data


def _status_text(task: Task) -> str | None:
    message = task.status.message
    if message is None:
        return None
    texts = [p.text for p in message.parts if p.text is not None]
    return "\n".join(texts) if texts else None


def _status_url(task: Task) -> str | None:
    """The first ``url`` part of the task's status message (an interruption's link)."""
    message = task.status.message
    if message is None:
        return None
    return next((p.url for p in message.parts if p.url is not None), None)


@dataclass(frozen=True)
class AuthRequired:
    """A task stopped in ``TASK_STATE_AUTH_REQUIRED``: what to show the user.

    ``url`` is the page where the user authorizes (connects an account, consents), when
    the agent sent one; ``reason`` the agent's message. Once the user is done, send a
    message to ``task_id`` (``client.send("done", task_id=...)``) to resume the task.
    """

    task_id: str
    context_id: str | None
    url: str | None
    reason: str | None


def auth_required(task: Task | Message) -> AuthRequired | None:
    """The :class:`AuthRequired` of a task stopped for authorization, else ``None``."""
    if isinstance(task, Message) or task.status.state is not TaskState.AUTH_REQUIRED:
        return None
    return AuthRequired(
        task_id=task.id,
        context_id=task.context_id,
        url=_status_url(task),
        reason=_status_text(task),
    )


def task_result(task: Task | Message) -> Any:
    """The value a finished task produced: its last artifact's content.

    One part gives its value (text as ``str``, data as JSON data, raw as ``bytes``);
    several give a list; no artifact gives ``None``. A task that did not complete
    raises :class:`RemoteTaskError` with its state, the agent's reason and, for an
    interrupted task, the link its status message carries (``url``).
    """
    if isinstance(task, Message):
        values = [_part_value(p) for p in task.parts]
        return values[0] if len(values) == 1 else values
    state = task.status.state
    if state is not TaskState.COMPLETED:
        reason = _status_text(task)
        if state.is_terminal or state.is_interrupted:
            what = state.value.removeprefix("TASK_STATE_").lower().replace("_", " ")
            url = _status_url(task) if state.is_interrupted else None
            raise RemoteTaskError(
                f"task {task.id} ended {what}" + (f": {reason}" if reason else ""),
                state=state.value,
                task_id=task.id,
                reason=reason,
                url=url,
                context_id=task.context_id,
            )
        raise InvalidAgentResponseError(
            f"task {task.id} is still {state.value}; expected a finished task"
        )
    if not task.artifacts:
        return None
    values = [_part_value(p) for p in task.artifacts[-1].parts]
    return values[0] if len(values) == 1 else values


# -------------------------------------------------------------------------- errors


def _refused(response: httpx.Response, what: str) -> RemoteAuthenticationError:
    params = bearer_challenge(response.headers.get("www-authenticate"))
    error = params.get("error")
    description = params.get("error_description")
    detail = f"{error}: {description}" if error and description else error or description
    return RemoteAuthenticationError(
        f"{what} was refused with HTTP {response.status_code}"
        + (f" ({detail})" if detail else " (no valid token sent)"),
        status_code=response.status_code,
        error=error,
        error_description=description,
        resource_metadata=params.get("resource_metadata"),
    )


def _rpc_error(error: Any, what: str) -> A2AError:
    if not isinstance(error, dict):
        return InvalidAgentResponseError(f"{what}: the error member is not an object")
    code = error.get("code")
    message = str(error.get("message") or "no message")[:500]
    cls = _ERROR_CLASSES.get(code, A2AError) if isinstance(code, int) else A2AError
    return cls(message, data=error.get("data"))


# -------------------------------------------------------------------------- client


class _BearerAuth(httpx.Auth):
    """A static token, or a provider asked before every request."""

    def __init__(self, token: str | None, provider: TokenProvider | None) -> None:
        self._token = token
        self._provider = provider

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = self._token if self._provider is None else await self._provider()
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        yield request


class AgentClient:
    """A client for one A2A 1.0 agent at ``url`` (its canonical URL, the token audience).

    Authentication: ``token`` (a bearer token for the agent), ``token_provider`` (an async
    callable returning one, asked before every call) or ``auth`` (any ``httpx.Auth``, such
    as the delegated auth of a skill's dependency handle). The card and the resource
    metadata are public and fetched without credentials. Prefer
    :func:`open_agent_client`, which closes the HTTP client it opens.

    Card signatures (A2A 1.0 §8.4): ``card_signatures`` is ``"verify-if-present"``
    (default: a signed card must verify), ``"require"`` (an unsigned card is refused too)
    or ``"ignore"``. The keys are ``card_keys`` (a JWK Set) or, by default, the JWK Set a
    signature names when it is on the agent's own origin. A refused card raises
    ``CardSignatureError`` (an ``InvalidAgentResponseError``).

    A2A 0.3 agents: with ``protocol="auto"`` (default) a card whose ``protocolVersion``
    is 0.3 makes the calls speak 0.3 JSON-RPC (``message/send``, ``tasks/get``,
    ``tasks/cancel``, ``message/stream``, ``tasks/resubscribe``; no ``A2A-Version``),
    translated to and from the same 1.0 types; ``"0.3"`` forces it, ``"1.0"`` never uses
    it. ``list_tasks`` has no 0.3 method and raises ``UnsupportedOperationError``.

    Each operation is an OpenTelemetry CLIENT span ``A2A call <name or host>`` whose W3C
    ``traceparent`` goes with the request; ``name`` (a dependency name) labels it.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        token_provider: TokenProvider | None = None,
        auth: httpx.Auth | None = None,
        http_client: httpx.AsyncClient | None = None,
        card_cache: CardCache | None = None,
        timeout: float = 60.0,
        name: str | None = None,
        card_signatures: CardSignaturePolicy = "verify-if-present",
        card_keys: Mapping[str, Any] | None = None,
        protocol: ProtocolChoice = "auto",
    ) -> None:
        if protocol not in PROTOCOL_CHOICES:
            raise ConfigurationError(
                f"protocol must be one of {', '.join(PROTOCOL_CHOICES)}", setting="protocol"
            )
        self._protocol: ProtocolChoice = protocol
        if card_signatures not in CARD_SIGNATURE_POLICIES:
            raise ConfigurationError(
                f"card_signatures must be one of {', '.join(CARD_SIGNATURE_POLICIES)}",
                setting="card_signatures",
            )
        self._card_policy: CardSignaturePolicy = card_signatures
        self._card_keys = card_keys
        self._card_key_set: VerificationKeys | None = None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(f"agent URL {url!r} is not an absolute http(s) URL")
        if sum(x is not None for x in (token, token_provider, auth)) > 1:
            raise ConfigurationError(
                "pass at most one of token=, token_provider= and auth=", setting="token"
            )
        if timeout <= 0:
            raise ConfigurationError("timeout must be positive", setting="timeout")
        self.url = url.rstrip("/")
        # The resource identifier is the URL as given: ``/a/`` and ``/a`` are different
        # resources (RFC 9728 §3.3), although requests go below either without the "/".
        self._resource = url
        self._auth: httpx.Auth = auth or _BearerAuth(token, token_provider)
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient()
        self._cards = card_cache if card_cache is not None else CardCache()
        self._timeout = timeout
        self.name = name
        self._span_name = f"A2A call {name or parts.netloc}"

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def http_client(self) -> httpx.AsyncClient:
        """The HTTP client the calls go through."""
        return self._http

    def __repr__(self) -> str:
        return f"AgentClient(url={self.url!r})"

    # -- discovery ---------------------------------------------------------------------

    async def _card_data(self) -> Any:
        """The card's JSON, its signature checked under the client's policy."""
        url = self.url + AGENT_CARD_PATH
        data = await self._cards.get_json(self._http, url, request_timeout=self._timeout)
        policy = self._card_policy
        if isinstance(data, dict) and (
            policy == "require" or (policy == "verify-if-present" and data.get("signatures"))
        ):
            keys = await self._card_verification_keys(data)
            # Checked once per card document and key set while the cache keeps both (a
            # card's signature has no time in it): not again on every call.
            self._cards.derived(
                url,
                data,
                ("signature", policy, keys),
                lambda: verify_card(data, keys, policy=policy, where=url),
            )
        return data

    async def card(self) -> AgentCard:
        """The agent's card (cached for its ``max-age``, revalidated by ``ETag``)."""
        return self._validated_card(await self._card_data())

    def _validated_card(self, data: Any) -> AgentCard:
        url = self.url + AGENT_CARD_PATH
        try:
            return AgentCard.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                ".".join(str(p) for p in e["loc"]) + ": " + e["msg"]
                for e in exc.errors(include_url=False, include_input=False)[:5]
            )
            raise InvalidAgentResponseError(
                f"the agent card at {url} is not a valid A2A 1.0 card: {problems}"
            ) from exc

    async def _card_verification_keys(self, card: Mapping[str, Any]) -> VerificationKeys:
        """The keys that may sign the card: ``card_keys``, else the JWK Set a signature
        names (``jku``) when it is on the agent's own origin (any other is ignored: a
        card altered in transit could name its own keys)."""
        where = self.url + AGENT_CARD_PATH
        try:
            if self._card_keys is not None:
                if self._card_key_set is None:
                    self._card_key_set = VerificationKeys.from_jwks(
                        self._card_keys, source="card_keys"
                    )
                return self._card_key_set
            for jku in signature_key_urls(card):
                if same_origin(jku, self.url):
                    jwks = await self._cards.get_json(
                        self._http, jku, request_timeout=self._timeout
                    )
                    return self._cards.derived(
                        jku,
                        jwks,
                        "verification-keys",
                        partial(VerificationKeys.from_jwks, jwks, source=jku),
                    )
        except ValueError as exc:
            raise CardSignatureError(f"the keys for the agent card at {where}: {exc}") from exc
        return _NO_KEYS

    async def resource_metadata(self) -> ResourceMetadata:
        """The agent's RFC 9728 metadata, checked to describe this agent's URL.

        Looked up under the agent's URL (where agents served by this library publish it)
        and, failing that, at the RFC 9728 §3.1 location (well-known segment before the
        path).
        """
        candidates = [resource_metadata_url_under(self.url)]
        standard = protected_resource_metadata_url(self._resource)
        if standard != candidates[0]:
            candidates.append(standard)
        for index, url in enumerate(candidates):
            try:
                data = await self._cards.get_json(self._http, url, request_timeout=self._timeout)
            except DocumentMissingError as exc:
                if exc.status == 404 and index + 1 < len(candidates):
                    continue
                raise
            return parse_metadata(data, url=url, expected=self._resource)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def protocol_version(self) -> str:
        """The A2A version the calls speak: ``"1.0"``, or ``"0.3"`` for an agent whose
        card says ``protocolVersion`` 0.3 (or when the client was made with
        ``protocol="0.3"``)."""
        return (await self._endpoint())[1]

    async def _endpoint(self) -> tuple[str, str]:
        """The JSON-RPC URL and the A2A version to speak there."""
        if self._protocol != "1.0":
            data = await self._card_data()
            legacy_url = card_endpoint_v03(data) if isinstance(data, dict) else None
            if legacy_url is not None:
                self._check_origin(legacy_url)
                return legacy_url, "0.3"
            if self._protocol == "0.3" and not (
                isinstance(data, dict) and "supportedInterfaces" in data
            ):
                raise a2a_errors.UnsupportedOperationError(
                    f"the agent at {self.url} offers no A2A 0.3 JSON-RPC interface"
                )
        return await self._endpoint_v1(), "1.0" if self._protocol != "0.3" else "0.3"

    def _check_origin(self, url: str) -> None:
        if not same_origin(url, self.url):
            # Credentials go only where the agent's own URL points.
            raise InvalidAgentResponseError(
                f"the card of {self.url} puts its JSON-RPC interface on another origin "
                f"({url[:100]}); refusing to send credentials there"
            )

    async def _endpoint_v1(self) -> str:
        data = await self._card_data()
        return self._cards.derived(
            self.url + AGENT_CARD_PATH,
            data,
            "jsonrpc-1.0",
            lambda: self._jsonrpc_v1(self._validated_card(data)),
        )

    def _jsonrpc_v1(self, card: AgentCard) -> str:
        for interface in card.supported_interfaces:
            if interface.protocol_binding.upper() != ProtocolBinding.JSONRPC:
                continue
            if not interface.protocol_version.startswith("1."):
                continue
            self._check_origin(interface.url)
            return interface.url
        raise a2a_errors.UnsupportedOperationError(
            f"the agent at {self.url} offers no A2A 1.0 JSON-RPC interface"
        )

    # -- JSON-RPC ----------------------------------------------------------------------

    def _envelope(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": str(uuid.uuid4()), "method": method, "params": params}

    def _headers(
        self, accept: str, trace_context: OtelContext | None = None, *, version: str = "1.0"
    ) -> dict[str, str]:
        headers = {"Accept": accept, "Content-Type": "application/json"}
        if version != "0.3":  # a 0.3 agent knows no A2A-Version (its absence means 0.3)
            headers["A2A-Version"] = A2A_VERSION
        inject_context(headers, context=trace_context)  # W3C traceparent of the client span
        return headers

    async def _rpc(self, method: str, params: dict[str, Any]) -> Any:
        with span(self._span_name, kind=SpanKind.CLIENT) as current:
            describe_a2a_call(current, method=method, params=params, url=self.url, name=self.name)
            endpoint, version = await self._endpoint()
            what = f"{method} on {self.url}"
            envelope = _wire_envelope(self._envelope(method, params), version, what)
            try:
                response = await self._http.post(
                    endpoint,
                    content=json.dumps(envelope).encode(),
                    headers=self._headers("application/json", version=version),
                    auth=self._auth,
                    timeout=self._timeout,
                )
            except httpx.HTTPError as exc:
                raise TransportError(f"{what} failed: {describe_error(exc)}") from exc
            if current.is_recording():
                current.set_attribute("http.response.status_code", response.status_code)
            result = _rpc_result(response, what)
            if version == "0.3":
                result = result_from_v03(method, result)
            describe_a2a_result(current, result)
            return result

    async def _stream_rpc(
        self, method: str, params: dict[str, Any]
    ) -> AsyncGenerator[StreamResponse, None]:
        # The span is not made current: a generator is suspended between events, and the
        # consumer's own spans must not become its children. Its context goes in the headers.
        client_span = get_tracer().start_span(self._span_name, kind=SpanKind.CLIENT)
        try:
            describe_a2a_call(
                client_span, method=method, params=params, url=self.url, name=self.name
            )
            async for event in self._stream_events(method, params, client_span):
                yield event
        except Exception as exc:
            mark_error(client_span, exc)
            raise
        finally:
            client_span.end()

    async def _stream_events(
        self, method: str, params: dict[str, Any], client_span: Span
    ) -> AsyncGenerator[StreamResponse, None]:
        endpoint, version = await self._endpoint()
        what = f"{method} on {self.url}"
        envelope = _wire_envelope(self._envelope(method, params), version, what)
        try:
            async with self._http.stream(
                "POST",
                endpoint,
                content=json.dumps(envelope).encode(),
                headers=self._headers(
                    "text/event-stream", set_span_in_context(client_span), version=version
                ),
                auth=self._auth,
                timeout=httpx.Timeout(self._timeout, read=None),
            ) as response:
                kind = response.headers.get("content-type", "")
                if response.status_code != 200 or not kind.startswith("text/event-stream"):
                    await response.aread()
                    _rpc_result(response, what)
                    raise InvalidAgentResponseError(f"{what}: expected an event stream")
                # A failure event is raised once the stream has ended (servers end it right
                # after one), so the transport's iterators finish instead of being abandoned.
                failure: KeycardError | None = None
                skipped = 0
                async with aclosing(_sse_data(response)) as events:
                    async for data in events:
                        if failure is not None:
                            skipped += 1
                            if skipped > _MAX_EVENTS_AFTER_FAILURE:
                                break
                            continue
                        try:
                            event = _stream_event(data, what, legacy=version == "0.3")
                        except KeycardError as exc:
                            failure = exc
                            continue
                        yield event
                if failure is not None:
                    raise failure
        except httpx.HTTPError as exc:
            raise TransportError(f"{what} failed: {describe_error(exc)}") from exc

    # -- operations --------------------------------------------------------------------

    async def send(
        self,
        message: Message | str,
        *,
        task_id: str | None = None,
        context_id: str | None = None,
        return_immediately: bool = False,
        history_length: int | None = None,
    ) -> Task | Message:
        """``SendMessage``: waits until the task finishes or is interrupted, unless
        ``return_immediately``. ``task_id`` continues an interrupted task."""
        params: dict[str, Any] = {
            "message": _dump(_as_message(message, task_id, context_id)),
        }
        config: dict[str, Any] = {}
        if return_immediately:
            config["returnImmediately"] = True
        if history_length is not None:
            config["historyLength"] = history_length
        if config:
            params["configuration"] = config
        result = await self._rpc("SendMessage", params)
        if not isinstance(result, dict):
            raise InvalidAgentResponseError(f"SendMessage on {self.url}: result is not an object")
        try:
            if "task" in result:
                return Task.model_validate(result["task"])
            if "message" in result:
                return Message.model_validate(result["message"])
        except ValidationError as exc:
            raise InvalidAgentResponseError(
                f"SendMessage on {self.url}: the result is not a valid task or message"
            ) from exc
        raise InvalidAgentResponseError(f"SendMessage on {self.url}: no task or message")

    async def call(self, skill: str, /, **arguments: Any) -> Any:
        """Call ``skill`` with typed ``arguments``; returns its result (see :func:`task_result`).

        Raises :class:`RemoteTaskError` when the task fails or stops for input or
        authorization.
        """
        return task_result(await self.send(call_message(skill, arguments)))

    def stream(
        self,
        message: Message | str,
        *,
        task_id: str | None = None,
        context_id: str | None = None,
    ) -> AsyncGenerator[StreamResponse, None]:
        """``SendStreamingMessage``: the task, then its status and artifact events."""
        params = {"message": _dump(_as_message(message, task_id, context_id))}
        return self._stream_rpc("SendStreamingMessage", params)

    def stream_call(self, skill: str, /, **arguments: Any) -> AsyncGenerator[StreamResponse, None]:
        """Like :meth:`call`, but streaming the task's events."""
        return self.stream(call_message(skill, arguments))

    def subscribe(self, task_id: str) -> AsyncGenerator[StreamResponse, None]:
        """``SubscribeToTask``: the task now, then its events until it stops."""
        return self._stream_rpc("SubscribeToTask", {"id": task_id})

    async def get_task(self, task_id: str, *, history_length: int | None = None) -> Task:
        params: dict[str, Any] = {"id": task_id}
        if history_length is not None:
            params["historyLength"] = history_length
        return _model(Task, await self._rpc("GetTask", params), f"GetTask on {self.url}")

    async def cancel_task(self, task_id: str) -> Task:
        return _model(Task, await self._rpc("CancelTask", {"id": task_id}), "CancelTask")

    async def list_tasks(
        self,
        *,
        context_id: str | None = None,
        status: TaskState | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        history_length: int | None = None,
        include_artifacts: bool | None = None,
    ) -> ListTasksResponse:
        """``ListTasks``: the caller's own tasks, newest first, one page."""
        params: dict[str, Any] = {}
        for key, value in (
            ("contextId", context_id),
            ("status", status.value if status is not None else None),
            ("pageSize", page_size),
            ("pageToken", page_token),
            ("historyLength", history_length),
            ("includeArtifacts", include_artifacts),
        ):
            if value is not None:
                params[key] = value
        result = await self._rpc("ListTasks", params)
        return _model(ListTasksResponse, result, f"ListTasks on {self.url}")


def _dump(message: Message) -> dict[str, Any]:
    return message.model_dump(mode="json", by_alias=True, exclude_none=True)


def _model(model: type[_M], data: Any, what: str) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidAgentResponseError(
            f"{what}: the result is not a valid {model.__name__}"
        ) from exc


def _stream_event(data: str, what: str, *, legacy: bool = False) -> StreamResponse:
    try:
        envelope = loads_bounded(data)
    except JsonLimitError as exc:
        raise InvalidAgentResponseError(f"{what}: an event is not acceptable JSON: {exc}") from exc
    result = _envelope_result(envelope, what)
    if legacy:
        result = event_from_v03(result)
    return _model(StreamResponse, result, what)


def _wire_envelope(envelope: dict[str, Any], version: str, what: str) -> dict[str, Any]:
    """The JSON-RPC request as the agent's A2A version spells it."""
    if version != "0.3":
        return envelope
    method = envelope["method"]
    if method not in METHODS_TO_V03:
        raise a2a_errors.UnsupportedOperationError(f"{what}: A2A 0.3 agents have no {method}")
    return {
        **envelope,
        "method": METHODS_TO_V03[method],
        "params": params_to_v03(method, envelope["params"]),
    }


def _envelope_result(envelope: Any, what: str) -> Any:
    if not isinstance(envelope, dict) or envelope.get("jsonrpc") != "2.0":
        raise InvalidAgentResponseError(f"{what}: the answer is not a JSON-RPC 2.0 response")
    if envelope.get("error") is not None:
        raise _rpc_error(envelope["error"], what)
    if "result" not in envelope:
        raise InvalidAgentResponseError(f"{what}: the response has neither result nor error")
    return envelope["result"]


def _rpc_result(response: httpx.Response, what: str) -> Any:
    if response.status_code in (401, 403):
        raise _refused(response, what)
    try:
        envelope = response.json()
    except ValueError:
        if response.status_code >= 500:
            raise TransportError(
                f"{what} failed: HTTP {response.status_code} without a JSON-RPC answer"
            ) from None
        raise InvalidAgentResponseError(
            f"{what}: HTTP {response.status_code} with a body that is not JSON"
        ) from None
    return _envelope_result(envelope, what)


async def _sse_data(response: httpx.Response) -> AsyncGenerator[str, None]:
    """The ``data`` of each Server-Sent Event (WHATWG HTML §9.2.6), lines joined by ``\\n``."""
    buffer: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if buffer:
                yield "\n".join(buffer)
                buffer = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            buffer.append(value[1:] if value.startswith(" ") else value)
    if buffer:
        yield "\n".join(buffer)


@asynccontextmanager
async def open_agent_client(
    url: str,
    *,
    token: str | None = None,
    token_provider: TokenProvider | None = None,
    auth: httpx.Auth | None = None,
    http_client: httpx.AsyncClient | None = None,
    card_cache: CardCache | None = None,
    timeout: float = 60.0,
    card_signatures: CardSignaturePolicy = "verify-if-present",
    card_keys: Mapping[str, Any] | None = None,
    protocol: ProtocolChoice = "auto",
) -> AsyncIterator[AgentClient]:
    """An :class:`AgentClient` for the agent at ``url``, closed on exit.

    ``http_client`` is used as is and left open; without one, the client opens its own.
    """
    client = AgentClient(
        url,
        token=token,
        token_provider=token_provider,
        auth=auth,
        http_client=http_client,
        card_cache=card_cache,
        timeout=timeout,
        card_signatures=card_signatures,
        card_keys=card_keys,
        protocol=protocol,
    )
    try:
        yield client
    finally:
        await client.aclose()
