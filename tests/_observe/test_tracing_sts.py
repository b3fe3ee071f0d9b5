"""Spans inside the token service, the issued token's jti, and key fetches in their trace.

The token service's work (the exchange, its policy checks, the signing) appears in the
caller's trace through ``traceparent``; the ``token exchange`` span names the *issued*
token's ``jti`` (the subject's under ``keycard.subject.jti``); fetching an issuer's
metadata and keys is a child of the request that needed them, not a trace of its own.
"""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from delegation_support import USER_SCOPES, chain_agents
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from test_tracing_chain import attrs, children, exporter, one

from keycard_agents import DelegationDeniedError
from keycard_agents._observe._tracing import (
    ATTR_ERROR,
    ATTR_JTI,
    ATTR_SUBJECT_JTI,
    ATTR_TXN,
    get_tracer,
)
from keycard_agents.auth import TokenVerifier
from keycard_agents.testing import LocalTokenService, open_local_agents

pytestmark = pytest.mark.anyio

__all__ = ["exporter"]  # the fixture, shared with the chain tests


def below(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    """Every span in the subtree under ``parent``."""
    found = []
    for child in children(spans, parent):
        found += [child, *below(spans, child)]
    return found


def _jti(token: str) -> str:
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"])


async def test_the_token_service_joins_the_callers_trace(
    exporter: InMemorySpanExporter,
) -> None:
    agents = chain_agents()
    sts = LocalTokenService(agents=agents.all)
    async with open_local_agents(sts, agents.all) as net:
        token = sts.mint_user_token("alice", audience=agents.front, scopes=USER_SCOPES)
        async with net.client(agents.front, token=token) as client:
            result = await client.call("start")
    # what the token service issued, by its own audit trail
    issued = [str(r.jti) for r in await sts.audit() if r.decision == "issued"]
    spans = list(exporter.get_finished_spans())
    assert len({s.context.trace_id for s in spans if s.context is not None}) == 1
    exchanges = [s for s in spans if s.name == "token exchange"]
    assert len(exchanges) == 2
    assert len(issued) == 2
    for exchange, jti in zip(exchanges, issued, strict=True):
        # the token service's SERVER span is a child of the agent's exchange span ...
        (server,) = [s for s in below(spans, exchange) if s.name == "token service token-exchange"]
        assert server.name == "token service token-exchange"
        # (a SERVER span of its own, or inside the one FastAPI opened for the request)
        assert server.kind in (SpanKind.SERVER, SpanKind.INTERNAL)
        inside = {s.name: s for s in children(spans, server)}
        assert set(inside) == {"token service policy", "token service sign"}
        # ... and every one of them names the token that was issued, never the subject's
        assert attrs(exchange)[ATTR_JTI] == jti
        assert attrs(server)[ATTR_JTI] == jti
        assert attrs(inside["token service sign"])[ATTR_JTI] == jti
        assert attrs(exchange)[ATTR_SUBJECT_JTI] != jti
        assert attrs(server)[ATTR_TXN] == result["here"]["txn"]
        assert attrs(server)["keycard.decision"] == "issued"
    # the first exchange's subject is the user token, the second's the first issued one
    assert attrs(exchanges[0])[ATTR_SUBJECT_JTI] == _jti(token)
    assert attrs(exchanges[1])[ATTR_SUBJECT_JTI] == issued[0]
    # the exchange client found the token endpoint in the metadata, inside the exchange
    fetches = [s for s in children(spans, exchanges[0]) if s.name == "GET metadata"]
    assert [s.kind for s in fetches] == [SpanKind.CLIENT]


async def test_a_denied_exchange_marks_the_policy_span(exporter: InMemorySpanExporter) -> None:
    agents = chain_agents()
    sts = LocalTokenService(agents=agents.all)
    async with open_local_agents(sts, agents.all) as net:
        token = sts.mint_user_token("alice", audience=agents.front, scopes=USER_SCOPES)
        with (
            get_tracer().start_as_current_span("caller"),
            pytest.raises(DelegationDeniedError, match="invalid_target"),
        ):
            await net.exchange_client(agents.front).exchange(
                token, resource="https://nowhere.example/"
            )
    spans = list(exporter.get_finished_spans())
    caller = one(spans, "caller", SpanKind.INTERNAL)
    (exchange,) = children(spans, caller)
    (server,) = [s for s in below(spans, exchange) if s.name == "token service token-exchange"]
    assert attrs(server)["keycard.decision"] == "denied"
    (policy,) = children(spans, server)
    assert policy.name == "token service policy"
    assert attrs(policy)[ATTR_ERROR] == "invalid_target"
    assert ATTR_JTI not in attrs(exchange)


async def test_key_and_metadata_fetches_belong_to_the_request(
    exporter: InMemorySpanExporter,
) -> None:
    sts = LocalTokenService()
    token = sts.mint_user_token("alice", audience="https://api.example/", scopes=["read"])
    seen: list[str] = []
    inner = httpx.ASGITransport(app=sts.app)

    async def route(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.url.path} {request.headers.get('traceparent', '-')}")
        response = await inner.handle_async_request(request)
        return httpx.Response(
            response.status_code, headers=response.headers, content=await response.aread()
        )

    async with httpx.AsyncClient(transport=httpx.MockTransport(route)) as http:
        verifier = TokenVerifier(issuers=[sts.issuer], http_client=http)
        with get_tracer().start_as_current_span("inbound request") as request_span:
            principal = await verifier.verify(token, audience="https://api.example/")
    assert principal.user == "alice"
    spans = list(exporter.get_finished_spans())
    root = one(spans, "inbound request", SpanKind.INTERNAL)
    fetches = children(spans, root)
    assert [s.name for s in fetches] == ["GET metadata", "GET JWKS"]
    assert all(s.kind == SpanKind.CLIENT for s in fetches)
    assert all(s.parent is not None for s in fetches)  # no trace of their own
    trace_id = format(request_span.get_span_context().trace_id, "032x")
    assert len(seen) == 2
    assert all(trace_id in line for line in seen), seen
    assert attrs(fetches[1])["url.full"].endswith("/jwks.json")
