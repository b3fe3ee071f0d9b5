"""OpenTelemetry spans and the agents' audit trail across the chain user → Front → Middle →
Collector, in process, on asyncio and trio.

Every hop is a real A2A JSON-RPC call through ``httpx.ASGITransport`` and a real RFC 8693
exchange at the embedded token service. The SDK's in-memory exporter receives the spans.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, unquote_plus

import httpx
import pytest
from delegation_support import PLANNER, USER_SCOPES, WEATHER, Planner, chain_agents
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util._once import Once

from keycard_agents import call_message
from keycard_agents._observe._tracing import (
    ATTR_ACTORS,
    ATTR_CACHE,
    ATTR_CHAIN_DEPTH,
    ATTR_DEPENDENCY,
    ATTR_ERROR,
    ATTR_OUTCOME,
    ATTR_SCOPES_GRANTED,
    ATTR_SCOPES_REQUESTED,
    ATTR_SKILL,
    ATTR_TARGET,
    ATTR_TASK_ID,
    ATTR_TXN,
    ATTR_USER,
    get_tracer,
)
from keycard_agents.a2a import Task, TaskState
from keycard_agents.audit import AuditTrail
from keycard_agents.testing import LocalAgents, LocalTokenService, open_local_agents

pytestmark = pytest.mark.anyio

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _install(provider: trace.TracerProvider | None) -> None:
    """Set (or clear) the global tracer provider; the API allows setting it only once."""
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    if provider is not None:
        trace.set_tracer_provider(provider)


@pytest.fixture
def no_sdk() -> Iterator[None]:
    saved = trace._TRACER_PROVIDER
    _install(None)
    try:
        yield
    finally:
        _install(saved)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """An SDK provider with an in-memory exporter, W3C trace context as the propagator."""
    saved_provider = trace._TRACER_PROVIDER
    saved_propagator: TextMapPropagator = propagate.get_global_textmap()
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    _install(provider)
    propagate.set_global_textmap(TraceContextTextMapPropagator())
    try:
        yield memory
    finally:
        provider.shutdown()
        _install(saved_provider)
        propagate.set_global_textmap(saved_propagator)


class Recording(httpx.AsyncBaseTransport):
    """Passes requests on and keeps every token and trace header that went by."""

    def __init__(self, inner: httpx.AsyncBaseTransport, secrets: set[str], seen: list[str]):
        self.inner = inner
        self.secrets = secrets
        self.traceparents = seen

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            self.secrets.add(auth[7:])
        elif auth.lower().startswith("basic "):  # RFC 6749 §2.3.1 client secret
            secret = base64.b64decode(auth[6:]).decode().partition(":")[2]
            self.secrets.add(unquote_plus(secret))
        if "traceparent" in request.headers:
            self.traceparents.append(f"{request.url} {request.headers['traceparent']}")
        if request.method == "POST" and request.url.path.endswith("/token"):
            form = parse_qs((await request.aread()).decode())
            for field in ("subject_token", "actor_token", "client_secret", "client_assertion"):
                self.secrets.update(form.get(field, []))
        response = await self.inner.handle_async_request(request)
        if request.url.path.endswith("/token"):
            body = await response.aread()
            try:
                issued = json.loads(body).get("access_token")
            except ValueError:
                issued = None
            if isinstance(issued, str):
                self.secrets.add(issued)
            return httpx.Response(
                response.status_code, headers=response.headers, content=body, request=request
            )
        return response


def record_traffic(net: LocalAgents) -> tuple[set[str], list[str]]:
    secrets: set[str] = set()
    seen: list[str] = []
    for key, transport in list(net.router.routes.items()):
        net.router.routes[key] = Recording(transport, secrets, seen)
    return secrets, seen


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def one(spans: list[ReadableSpan], name: str, kind: SpanKind) -> ReadableSpan:
    found = [s for s in spans if s.name == name and s.kind == kind]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def everything_in(span: ReadableSpan) -> str:
    """Every string a span exports: name, attributes, events, links, status."""
    parts: list[Any] = [span.name, attrs(span), span.status.description]
    for event in span.events:
        parts += [event.name, dict(event.attributes or {})]
    for link in span.links:
        parts.append(dict(link.attributes or {}))
    return repr(parts)


async def test_three_hop_call_is_one_trace_with_the_span_tree(
    exporter: InMemorySpanExporter,
) -> None:
    agents = chain_agents()
    sts = LocalTokenService(agents=agents.all)
    async with open_local_agents(sts, agents.all) as net:
        secrets, traceparents = record_traffic(net)
        token = sts.mint_user_token("alice", audience=agents.front, scopes=USER_SCOPES)
        secrets.add(token)
        async with net.client(agents.front, token=token) as client:
            result = await client.call("start")
            exporter.clear()  # the second run: exchanges come from the cache
            again = await client.call("start")
    assert result["below"]["below"]["sub"] == again["below"]["below"]["sub"] == "alice"
    txn = again["here"]["txn"]
    spans = list(exporter.get_finished_spans())

    # One trace: every span, every hop.
    assert len({s.context.trace_id for s in spans if s.context is not None}) == 1
    root = one(spans, "A2A call 127.0.0.1:9101", SpanKind.CLIENT)
    assert root.parent is None
    # client of the app → server of Front → skill of Front → client of Front → ...
    expected = [
        ("A2A SendMessage", SpanKind.SERVER),
        ("skill start", SpanKind.INTERNAL),
        ("A2A call middle", SpanKind.CLIENT),
        ("A2A SendMessage", SpanKind.SERVER),
        ("skill relay", SpanKind.INTERNAL),
        ("A2A call collector", SpanKind.CLIENT),
        ("A2A SendMessage", SpanKind.SERVER),
        ("skill seen", SpanKind.INTERNAL),
    ]
    path = [root]
    exchanges: list[ReadableSpan] = []
    for name, kind in expected:
        below = children(spans, path[-1])
        exchanges += [s for s in below if s.name == "token exchange"]
        nxt = [s for s in below if s.name == name and s.kind == kind]
        assert len(nxt) == 1, (name, [s.name for s in below])
        path.append(nxt[0])
    assert children(spans, path[-1]) == []
    # The exchange spans sit under the client spans of Front and Middle.
    assert [e.parent.span_id for e in exchanges if e.parent] == [
        path[3].context.span_id,
        path[6].context.span_id,
    ]
    assert len(spans) == len(path) + len(exchanges) == 11

    # Attributes: user, chain, depth, txn, skill, task id, target, scopes, outcome.
    server_b, skill_b, client_b = path[4], path[5], path[6]
    for span in path[1:]:
        assert attrs(span)[ATTR_TXN] == txn, span.name
        assert attrs(span)[ATTR_USER] == "alice", span.name
    assert attrs(server_b)[ATTR_ACTORS] == ("front",)
    assert attrs(server_b)[ATTR_CHAIN_DEPTH] == 1
    assert attrs(server_b)["rpc.method"] == "SendMessage"
    assert attrs(server_b)[ATTR_OUTCOME] == "completed"
    assert attrs(skill_b)[ATTR_SKILL] == "relay"
    assert attrs(skill_b)[ATTR_TASK_ID] == attrs(server_b)[ATTR_TASK_ID]
    assert attrs(skill_b)[ATTR_OUTCOME] == "completed"
    assert attrs(client_b)[ATTR_TARGET] == agents.collector.url
    assert attrs(client_b)[ATTR_DEPENDENCY] == "collector"
    assert attrs(client_b)[ATTR_SKILL] == "seen"
    assert attrs(client_b)[ATTR_SCOPES_REQUESTED] == ("c.read",)
    assert attrs(client_b)[ATTR_SCOPES_GRANTED] == ("c.read",)
    assert attrs(client_b)[ATTR_ACTORS] == ("front",)  # Middle acts for what it received
    skill_c = path[8]
    assert attrs(skill_c)[ATTR_ACTORS] == ("middle", "front")  # current actor first
    assert attrs(skill_c)[ATTR_CHAIN_DEPTH] == 2
    exchange_b = exchanges[1]
    assert attrs(exchange_b)[ATTR_CACHE] == "hit"
    assert attrs(exchange_b)[ATTR_TARGET] == agents.collector.url
    assert attrs(exchange_b)[ATTR_SCOPES_GRANTED] == ("c.read",)
    assert attrs(exchange_b)[ATTR_TXN] == txn
    assert all(s.status.status_code != StatusCode.ERROR for s in spans)

    # Trace context went over every A2A hop (and to the token service on the first run).
    assert any(str(agents.collector.url) in line for line in traceparents)
    assert any("/token " in line for line in traceparents)

    # No token (nor any credential that went over the wire) anywhere in any span.
    assert len(secrets) >= 5
    for span in spans:
        exported = everything_in(span)
        for secret in secrets:
            assert secret not in exported, span.name


async def test_first_run_records_cache_misses_and_the_sdk_sees_no_token(
    exporter: InMemorySpanExporter,
) -> None:
    agents = chain_agents()
    sts = LocalTokenService(agents=agents.all)
    async with open_local_agents(sts, agents.all) as net:
        secrets, _ = record_traffic(net)
        token = sts.mint_user_token("bob", audience=agents.front, scopes=USER_SCOPES)
        async with net.client(agents.front, token=token) as client:
            await client.call("start")
    spans = list(exporter.get_finished_spans())
    exchanges = [s for s in spans if s.name == "token exchange"]
    assert [attrs(s)[ATTR_CACHE] for s in exchanges] == ["miss", "miss"]
    for span in spans:
        for secret in secrets | {token}:
            assert secret not in everything_in(span)


async def test_a_denied_hop_marks_the_spans_and_the_audit_tree(
    exporter: InMemorySpanExporter,
) -> None:
    agents = chain_agents(c_scopes=("c.read", "c.admin"))  # Middle asks for too much
    sts = LocalTokenService(agents=agents.all)
    async with open_local_agents(sts, agents.all) as net:
        token = sts.mint_user_token("alice", audience=agents.front, scopes=USER_SCOPES)
        async with net.client(agents.front, token=token) as client:
            task = await client.send(call_message("start"))
        assert isinstance(task, Task)
        assert task.status.state == TaskState.FAILED
        stores = [net.apps[str(a.url)].state.keycard_recorder.store for a in agents.all]
        trail = AuditTrail(
            token_service=sts.service.audit,
            agents=stores,
            names={str(a.url): a.name for a in agents.all},
        )
        txn = next(r.txn for r in await sts.audit() if r.txn is not None)
        tree = await trail.tree(txn)

    # Spans: the exchange at Collector is denied; the client and skill spans fail.
    spans = list(exporter.get_finished_spans())
    denied = [s for s in spans if s.name == "token exchange" and attrs(s)[ATTR_OUTCOME] == "denied"]
    assert len(denied) == 1
    assert attrs(denied[0])[ATTR_ERROR] == "invalid_scope"
    assert attrs(denied[0])["error.type"] == "DelegationDeniedError"
    assert denied[0].status.status_code == StatusCode.ERROR
    client_b = one(spans, "A2A call collector", SpanKind.CLIENT)
    assert attrs(client_b)[ATTR_OUTCOME] == "denied"
    assert attrs(one(spans, "skill relay", SpanKind.INTERNAL))[ATTR_OUTCOME] == "failed"
    assert not any(s.name == "A2A SendMessage" and "collector" in repr(attrs(s)) for s in spans)

    # Audit: each agent recorded what it served and what it called.
    by_agent: dict[str, list[tuple[str, str]]] = {}
    for store in stores:
        for record in await store.query(txn=txn):
            by_agent.setdefault(record.agent, []).append((record.kind, record.outcome))
    assert sorted(by_agent["front"]) == [("call", "failed"), ("served", "failed")]
    assert sorted(by_agent["middle"]) == [("call", "denied"), ("served", "failed")]
    assert "collector" not in by_agent  # never reached

    hops = {hop.path: hop for hop in tree.walk()}
    front = hops[("alice", "front")]
    middle = hops[("alice", "front", "middle")]
    collector = [h for p, h in hops.items() if p[-1] == "collector"]
    assert front.status == "failed"  # its skill failed because Middle's did
    assert middle.status == "failed"
    assert [h.status for h in collector] == ["denied"]
    hop = collector[0]
    assert hop.error == "invalid_scope"
    assert "c.admin" in (hop.reason or "")
    kinds = sorted((e.source, e.kind) for e in hop.entries)
    assert kinds == [("agent", "call"), ("token-service", "exchange")]
    call = next(e for e in hop.entries if e.kind == "call")
    assert call.dependency == "collector"
    assert call.scopes_requested == ("c.read", "c.admin")
    assert (call.ended or 0.0) >= call.time > 0
    served = [e for e in middle.entries if e.kind == "served"]
    assert [(e.skill, e.outcome) for e in served] == [("relay", "failed")]


async def test_without_an_sdk_nothing_is_recorded_and_context_passes_through(
    no_sdk: None,
) -> None:
    unused = InMemorySpanExporter()
    TracerProvider().add_span_processor(SimpleSpanProcessor(unused))  # never installed
    assert not get_tracer().start_span("probe").is_recording()
    agents = chain_agents()
    sts = LocalTokenService(agents=agents.all)
    upstream = NonRecordingSpan(
        SpanContext(
            trace_id=int(TRACEPARENT.split("-")[1], 16),
            span_id=int(TRACEPARENT.split("-")[2], 16),
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
    )
    async with open_local_agents(sts, agents.all) as net:
        _, traceparents = record_traffic(net)
        token = sts.mint_user_token("alice", audience=agents.front, scopes=USER_SCOPES)
        async with net.client(agents.front, token=token) as client:
            with trace.use_span(upstream, end_on_exit=False):  # the app was called with it
                result = await client.call("start")
    assert result["below"]["below"]["actors"] == ["middle", "front"]
    assert unused.get_finished_spans() == ()
    # The upstream trace context reached every hop unchanged (no SDK: no new span ids).
    for agent in agents.all:
        reached = [line.split()[1] for line in traceparents if line.split()[0] == agent.url]
        assert reached == [TRACEPARENT], agent.name


async def test_http_api_call_has_a_client_span_propagation_and_an_audit_record(
    exporter: InMemorySpanExporter,
) -> None:
    planner = Planner(url=PLANNER)
    sts = LocalTokenService(agents=[planner])
    received: list[httpx.Request] = []

    def weather(request: httpx.Request) -> httpx.Response:
        received.append(request)
        return httpx.Response(200, json={"sky": "clear"})

    transports = {WEATHER: httpx.MockTransport(weather)}
    async with open_local_agents(sts, [planner], transports=transports) as net:
        token = sts.mint_user_token("erin", audience=planner, scopes=("plan", "weather.read"))
        async with net.client(planner, token=token) as client:
            value = await client.call("forecast", city="Oslo")
        store = net.apps[PLANNER].state.keycard_recorder.store
        records = await store.query(user="erin")
    assert value == {"status": 200, "body": {"sky": "clear"}}

    spans = list(exporter.get_finished_spans())
    http = one(spans, f"HTTP GET {WEATHER}", SpanKind.CLIENT)
    skill = one(spans, "skill forecast", SpanKind.INTERNAL)
    assert http.parent is not None
    assert skill.context is not None
    assert http.parent.span_id == skill.context.span_id
    assert attrs(http)["url.full"] == f"{WEATHER}/forecast"  # the query is left out
    assert attrs(http)["http.response.status_code"] == 200
    assert attrs(http)[ATTR_SCOPES_GRANTED] == ("weather.read",)
    assert attrs(http)[ATTR_USER] == "erin"
    assert http.context is not None
    exchange = one(spans, "token exchange", SpanKind.INTERNAL)
    assert exchange.parent is not None
    assert exchange.parent.span_id == http.context.span_id
    # The API got the HTTP span as its parent.
    traceparent = received[0].headers["traceparent"]
    assert traceparent.split("-")[1:3] == [
        format(http.context.trace_id, "032x"),
        format(http.context.span_id, "016x"),
    ]
    assert [(r.kind, r.outcome) for r in records] == [
        ("call", "completed"),
        ("served", "completed"),
    ]
    call = records[0]
    assert (call.target, call.dependency) == (WEATHER, "weather")
    assert call.scopes_granted == ("weather.read",)
    assert call.agent == "planner"
