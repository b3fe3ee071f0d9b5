"""OpenTelemetry spans for delegation chains, and W3C trace context propagation.

Uses only the OpenTelemetry API (the SDK is the application's choice): without an SDK
every span is the API's non-recording span and no attribute is ever built. Attribute
names live under ``keycard.`` and describe RFC 8693 delegation: the user (``sub``), the
actor chain of §4.1 ``act`` claims (current actor first), the ``txn`` shared by the
whole chain (draft-ietf-oauth-transaction-tokens), the RFC 8707 target and the scopes
asked for and granted. ``error.type``, ``rpc.*``, ``http.request.method``,
``url.full`` and ``server.address`` follow the OpenTelemetry semantic conventions.
Trace context travels in the W3C Trace Context ``traceparent`` / ``tracestate``
headers through the globally configured propagator (``opentelemetry.propagate``).

Never put a token in an attribute: a ``jti`` is enough to correlate with the audit
trail. Errors are described by their type and OAuth / JSON-RPC error code only, never
by their message.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Final
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context as OtelContext
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.util.types import AttributeValue

from keycard_agents._errors import DelegationDeniedError, KeycardError
from keycard_agents._jose._principal import Principal

__all__ = [
    "ATTR_ACTORS",
    "ATTR_AGENT",
    "ATTR_CACHE",
    "ATTR_CHAIN_DEPTH",
    "ATTR_DECISION",
    "ATTR_DEPENDENCY",
    "ATTR_ERROR",
    "ATTR_JTI",
    "ATTR_OPERATION",
    "ATTR_OUTCOME",
    "ATTR_SCOPES_GRANTED",
    "ATTR_SCOPES_REQUESTED",
    "ATTR_SKILL",
    "ATTR_SUBJECT_JTI",
    "ATTR_TARGET",
    "ATTR_TASK_ID",
    "ATTR_TASK_STATE",
    "ATTR_TOOL",
    "ATTR_TXN",
    "ATTR_USER",
    "TRACER_NAME",
    "acting_for",
    "current_principal",
    "describe_a2a_call",
    "describe_a2a_result",
    "fetch_span",
    "get_tracer",
    "inject_context",
    "mark_error",
    "name_server_span",
    "outcome_of",
    "principal_attributes",
    "request_span",
    "server_span",
    "set_attributes",
    "set_grant",
    "set_http_outcome",
    "set_principal",
    "set_task_outcome",
    "span",
    "tracing_configured",
]

TRACER_NAME = "keycard_agents"

ATTR_TXN = "keycard.txn"
ATTR_USER = "keycard.user"
ATTR_AGENT = "keycard.agent"
ATTR_ACTORS = "keycard.actors"
ATTR_CHAIN_DEPTH = "keycard.chain.depth"
ATTR_TARGET = "keycard.target"
ATTR_DEPENDENCY = "keycard.dependency"
ATTR_SKILL = "keycard.skill"
ATTR_TOOL = "keycard.tool"
ATTR_TASK_ID = "keycard.task.id"
ATTR_TASK_STATE = "keycard.task.state"
ATTR_SCOPES_REQUESTED = "keycard.scopes.requested"
ATTR_SCOPES_GRANTED = "keycard.scopes.granted"
ATTR_DECISION = "keycard.decision"
ATTR_OUTCOME = "keycard.outcome"
ATTR_OPERATION = "keycard.a2a.operation"
ATTR_CACHE = "keycard.exchange.cache"
ATTR_ERROR = "keycard.error"
ATTR_JTI = "keycard.jti"
ATTR_SUBJECT_JTI = "keycard.subject.jti"

_ERROR_TYPE: Final = "error.type"
_RPC_ERROR_CODE: Final = "rpc.jsonrpc.error_code"

# The verified principal the current task acts for (set by the runtime around a skill), so
# that spans and audit records of outbound calls carry the user, chain and txn untold.
_PRINCIPAL: ContextVar[Principal | None] = ContextVar("keycard_agents.principal", default=None)

_tracer_cache: tuple[TracerProvider, Tracer, bool] | None = None


class _Ambient:
    """Marker: take the principal from :func:`current_principal`."""


_AMBIENT: Final = _Ambient()


def _tracer_state() -> tuple[Tracer, bool]:
    """This library's tracer, and whether an SDK (a real tracer provider) is configured."""
    global _tracer_cache
    provider = trace.get_tracer_provider()
    cached = _tracer_cache
    if cached is not None and cached[0] is provider:
        return cached[1], cached[2]
    tracer = provider.get_tracer(TRACER_NAME)
    configured = not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))
    _tracer_cache = (provider, tracer, configured)
    return tracer, configured


def tracing_configured() -> bool:
    """Whether an OpenTelemetry SDK (a real tracer provider) is configured. Without one a
    span records nothing and a hot path may skip even its context manager."""
    return _tracer_state()[1]


def get_tracer() -> Tracer:
    """This library's tracer from the global tracer provider (cached per provider)."""
    return _tracer_state()[0]


def current_principal() -> Principal | None:
    """The principal the current task acts for (inside a skill), else ``None``."""
    return _PRINCIPAL.get()


@contextmanager
def acting_for(principal: Principal | None) -> Iterator[None]:
    """Make ``principal`` the :func:`current_principal` for the block (and for tasks it
    starts)."""
    reset = _PRINCIPAL.set(principal)
    try:
        yield
    finally:
        _PRINCIPAL.reset(reset)


def principal_attributes(principal: Principal | None) -> dict[str, AttributeValue]:
    """The attributes describing who a call is for: user, actor chain, ``txn``, ``jti``."""
    if principal is None:
        return {}
    attributes: dict[str, AttributeValue] = {
        ATTR_USER: principal.user,
        ATTR_ACTORS: list(principal.actors.subjects()),
        ATTR_CHAIN_DEPTH: principal.actors.depth,
    }
    if principal.txn is not None:
        attributes[ATTR_TXN] = principal.txn
    if principal.jti is not None:
        attributes[ATTR_JTI] = principal.jti
    return attributes


def _clean(attributes: Mapping[str, object]) -> dict[str, AttributeValue]:
    out: dict[str, AttributeValue] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        if isinstance(value, (str, bool, int, float)):
            out[key] = value
        elif isinstance(value, Sequence):
            out[key] = [str(v) for v in value]
        else:
            out[key] = str(value)
    return out


def set_attributes(current: Span, attributes: Mapping[str, object]) -> None:
    """Set ``attributes`` (``None`` dropped, sequences as string lists) if it records."""
    if current.is_recording():
        current.set_attributes(_clean(attributes))


def set_principal(current: Span, principal: Principal | None) -> None:
    """Describe who ``current`` is for (a server span learns it after authentication)."""
    if principal is not None and current.is_recording():
        current.set_attributes(principal_attributes(principal))


def outcome_of(exc: BaseException) -> str:
    """``denied`` for a token service refusal, ``failed`` for anything else."""
    return "denied" if isinstance(exc, DelegationDeniedError) else "failed"


def mark_error(current: Span, exc: BaseException) -> None:
    """Mark ``current`` failed by ``exc``: its type, OAuth / JSON-RPC error code, outcome.

    The message is never recorded: it may come from another party.
    """
    if not current.is_recording():
        return
    name = type(exc).__name__
    current.set_attribute(_ERROR_TYPE, name)
    current.set_attribute(ATTR_OUTCOME, outcome_of(exc))
    if isinstance(exc, KeycardError):  # only our own errors carry codes we trust
        error = getattr(exc, "error", None)
        if isinstance(error, str) and error:
            current.set_attribute(ATTR_ERROR, error[:64])
        code = getattr(type(exc), "code", None)
        if isinstance(code, int) and not isinstance(code, bool):
            current.set_attribute(_RPC_ERROR_CODE, code)
    current.set_status(Status(StatusCode.ERROR, name))


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    principal: Principal | _Ambient | None = _AMBIENT,
    attributes: Mapping[str, object] | None = None,
    tracer: Tracer | None = None,
    context: OtelContext | None = None,
) -> Iterator[Span]:
    """Start a current span with the principal's delegation attributes.

    ``principal`` defaults to :func:`current_principal`; pass ``None`` for none.
    ``None`` attribute values are dropped and sequences become lists of strings; nothing
    is built when the span does not record (no SDK, or not sampled). ``keycard.outcome``
    starts as ``ok``; set it to something better when known. An exception marks the
    span as an error (see :func:`mark_error`); cancellation (a ``BaseException``) is not
    an error. ``context`` is the parent context (default: the current one).
    """
    if tracer is None:
        tracer, configured = _tracer_state()
        if not configured:  # no SDK: no span at all, only the parent context (pass-through)
            if context is None:
                yield trace.get_current_span()
                return
            token = otel_context.attach(context)
            try:
                yield trace.get_current_span(context)
            finally:
                otel_context.detach(token)
            return
    with tracer.start_as_current_span(
        name,
        context=context,
        kind=kind,
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        if current.is_recording():
            who = current_principal() if isinstance(principal, _Ambient) else principal
            merged = principal_attributes(who)
            merged[ATTR_OUTCOME] = "ok"
            if attributes:
                merged.update(_clean(attributes))
            current.set_attributes(merged)
        try:
            yield current
        except Exception as exc:
            mark_error(current, exc)
            raise


@contextmanager
def server_span(
    headers: Mapping[str, str], *, name: str = "A2A", attributes: Mapping[str, object] | None = None
) -> Iterator[Span]:
    """A SERVER span for one inbound request, child of the caller's ``traceparent``.

    The trace context is extracted from ``headers`` (never inherited from whatever runs
    the app in process), and the block runs with no :func:`current_principal` until the
    request is authenticated (call :func:`set_principal`).
    """
    parent = propagate.extract(headers)
    if not _tracer_state()[1]:
        # No SDK: what span() and acting_for() do then, in one step (this runs on every
        # request): the caller's context is current, for outbound calls to carry on.
        reset = _PRINCIPAL.set(None)
        token = otel_context.attach(parent)
        try:
            yield trace.get_current_span(parent)
        finally:
            otel_context.detach(token)
            _PRINCIPAL.reset(reset)
        return
    with (
        acting_for(None),
        span(
            name, kind=SpanKind.SERVER, principal=None, attributes=attributes, context=parent
        ) as current,
    ):
        yield current


@contextmanager
def request_span(headers: Mapping[str, str], *, name: str) -> Iterator[Span]:
    """The span of one inbound request, in the caller's trace (``traceparent``).

    When the web framework already opened a SERVER span for this request (FastAPI does
    when an SDK is configured), this is an INTERNAL child of it; otherwise it is the
    SERVER span itself, a child of the caller's context.
    """
    framework = trace.get_current_span().get_span_context()
    if not framework.is_valid and not _tracer_state()[1] and not _carries_context(headers):
        # No SDK, no span around us and no trace context from the caller: what the
        # general path below comes to (an empty parent context, no principal, the invalid
        # span), without extracting nothing from the headers through two context managers.
        token = otel_context.attach(otel_context.Context())
        reset = _PRINCIPAL.set(None)
        try:
            yield trace.INVALID_SPAN
        finally:
            _PRINCIPAL.reset(reset)
            otel_context.detach(token)
        return
    parent = propagate.extract(headers)
    caller = trace.get_current_span(parent).get_span_context()
    if framework.is_valid and (not caller.is_valid or framework.trace_id == caller.trace_id):
        with acting_for(None), span(name, principal=None) as current:
            yield current
    else:
        with server_span(headers, name=name) as current:
            yield current


_fields_cache: tuple[object, tuple[str, ...]] | None = None


def _carries_context(headers: Mapping[str, str]) -> bool:
    """Whether ``headers`` hold any header the global propagator reads (``traceparent``,
    ``tracestate``, ``baggage`` by default)."""
    global _fields_cache
    propagator = propagate.get_global_textmap()
    cached = _fields_cache
    if cached is None or cached[0] is not propagator:
        cached = _fields_cache = (propagator, tuple(propagator.fields))
    return any(field in headers for field in cached[1])


_TASK_FAILED = frozenset({"TASK_STATE_FAILED", "TASK_STATE_REJECTED"})


def set_task_outcome(current: Span, state: str, *, task_id: str | None = None) -> None:
    """Record an A2A task's state (``TASK_STATE_*``) as the span's outcome.

    A failed or rejected task marks the span as an error (without a message).
    """
    if not current.is_recording():
        return
    outcome = state.removeprefix("TASK_STATE_").lower()
    current.set_attributes({ATTR_TASK_STATE: state, ATTR_OUTCOME: outcome})
    if task_id is not None:
        current.set_attribute(ATTR_TASK_ID, task_id)
    if state in _TASK_FAILED:
        current.set_status(Status(StatusCode.ERROR, outcome))


def set_grant(
    current: Span, *, requested: Sequence[str] | None, granted: Sequence[str] | None
) -> None:
    """The scopes a delegated call asked for and was granted (RFC 8693 §2.1 ``scope``)."""
    if current.is_recording():
        set_attributes(current, {ATTR_SCOPES_REQUESTED: requested, ATTR_SCOPES_GRANTED: granted})


def set_http_outcome(
    current: Span, status_code: int, scopes_granted: Sequence[str] | None = None
) -> None:
    """An HTTP response on a client span: its status, ``failed`` from 400 on."""
    if not current.is_recording():
        return
    current.set_attribute("http.response.status_code", status_code)
    if scopes_granted is not None:
        current.set_attribute(ATTR_SCOPES_GRANTED, list(scopes_granted))
    if status_code >= 400:
        current.set_attributes({_ERROR_TYPE: str(status_code), ATTR_OUTCOME: "failed"})
        current.set_status(Status(StatusCode.ERROR, str(status_code)))


def describe_a2a_call(
    current: Span, *, method: str, params: Mapping[str, Any], url: str, name: str | None
) -> None:
    """A client span's A2A request: method, target agent, dependency name, skill, task id."""
    if current.is_recording():
        set_attributes(
            current,
            {
                "rpc.system": "jsonrpc",
                "rpc.method": method,
                "server.address": urlsplit(url).hostname,
                ATTR_TARGET: url,
                ATTR_DEPENDENCY: name,
                ATTR_SKILL: _skill_of(params),
                ATTR_TASK_ID: params.get("id"),
            },
        )


def describe_a2a_result(current: Span, result: Any) -> None:
    """A returned task's id and state (A2A 1.0 §4.1) on a client span."""
    if not current.is_recording():
        return
    task = result.get("task", result) if isinstance(result, dict) else None
    status = task.get("status") if isinstance(task, dict) else None
    if isinstance(task, dict) and isinstance(status, dict) and isinstance(task.get("id"), str):
        set_task_outcome(current, str(status.get("state")), task_id=task["id"])


def _skill_of(params: Mapping[str, Any]) -> str | None:
    """The skill of a typed call message (one data part ``{"skill": ...}``), for spans."""
    message = params.get("message")
    parts = message.get("parts") if isinstance(message, dict) else None
    if isinstance(parts, list) and len(parts) == 1 and isinstance(parts[0], dict):
        data = parts[0].get("data")
        if isinstance(data, dict) and isinstance(data.get("skill"), str):
            return str(data["skill"])
    return None


def name_server_span(current: Span, operation: str) -> None:
    """Name a server span after the A2A operation once the request says which it is."""
    if current.is_recording():
        operation = operation[:64]
        current.update_name(f"A2A {operation}")
        current.set_attributes({ATTR_OPERATION: operation, "rpc.method": operation})


@contextmanager
def fetch_span(what: str, url: str) -> Iterator[dict[str, str]]:
    """A CLIENT span for fetching a discovery document or a key set (RFC 8414, RFC 9728,
    a JWKS) for the request being served: a child of the current span, never a trace
    of its own. Yields the trace context headers to send with the fetch."""
    attributes = {
        "http.request.method": "GET",
        "url.full": url,
        "server.address": urlsplit(url).hostname,
    }
    with span(f"GET {what}", kind=SpanKind.CLIENT, attributes=attributes):
        headers: dict[str, str] = {}
        inject_context(headers)
        yield headers


def inject_context(
    headers: MutableMapping[str, str], *, context: OtelContext | None = None
) -> None:
    """Add the trace context (``traceparent``, ``tracestate``, baggage) to ``headers``.

    ``context`` defaults to the current one.
    """
    propagate.inject(headers, context=context)
