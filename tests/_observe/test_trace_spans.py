"""The OpenTelemetry helper: delegation attributes, error marking, no token leaks."""

from __future__ import annotations

import pytest
from leak_support import assert_no_token
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from keycard_agents import Actor, ActorChain, DelegationDeniedError, Principal
from keycard_agents._observe._tracing import (
    ATTR_ACTORS,
    ATTR_CHAIN_DEPTH,
    ATTR_ERROR,
    ATTR_JTI,
    ATTR_SCOPES_GRANTED,
    ATTR_TARGET,
    ATTR_TXN,
    ATTR_USER,
    principal_attributes,
    span,
)


@pytest.fixture
def recorded() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


PRINCIPAL = Principal(
    user="alice",
    issuer="https://sts.test",
    audience=("https://c.test/",),
    scopes=frozenset({"read"}),
    actors=ActorChain([Actor("b"), Actor("a")]),
    txn="txn-9",
    jti="jti-9",
    claims={"secret-ish": "eyJhbGciOi.not.atoken"},
)


def _only(exporter: InMemorySpanExporter) -> ReadableSpan:
    spans = exporter.get_finished_spans()
    assert len(spans) == 1
    return spans[0]


def test_span_carries_the_delegation_attributes(
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = recorded
    with span(
        "token exchange",
        kind=SpanKind.CLIENT,
        principal=PRINCIPAL,
        attributes={ATTR_TARGET: "https://d.test/", ATTR_SCOPES_GRANTED: ("read",), "x": None},
        tracer=provider.get_tracer("test"),
    ) as current:
        assert current.is_recording()
    done = _only(exporter)
    assert done.name == "token exchange"
    assert done.kind == SpanKind.CLIENT
    attrs = dict(done.attributes or {})
    assert attrs[ATTR_USER] == "alice"
    assert attrs[ATTR_ACTORS] == ("b", "a")
    assert attrs[ATTR_CHAIN_DEPTH] == 2
    assert attrs[ATTR_TXN] == "txn-9"
    assert attrs[ATTR_JTI] == "jti-9"
    assert attrs[ATTR_TARGET] == "https://d.test/"
    assert attrs[ATTR_SCOPES_GRANTED] == ("read",)
    assert "x" not in attrs
    assert_no_token(str(attrs))
    assert done.status.status_code == StatusCode.UNSET


def test_errors_mark_the_span_without_the_message(
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = recorded
    with (
        pytest.raises(DelegationDeniedError),
        span("exchange", principal=None, tracer=provider.get_tracer("test")),
    ):
        raise DelegationDeniedError("invalid_scope", "scope 'write' exceeds ... token eyJ-x")
    done = _only(exporter)
    attrs = dict(done.attributes or {})
    assert attrs == {
        "error.type": "DelegationDeniedError",
        ATTR_ERROR: "invalid_scope",
        "keycard.outcome": "denied",
    }
    assert done.status.status_code == StatusCode.ERROR
    assert done.status.description == "DelegationDeniedError"
    assert not done.events  # no exception event with the message


def test_principal_attributes() -> None:
    assert principal_attributes(None) == {}
    bare = Principal(user="u", issuer="i", audience=(), scopes=frozenset())
    assert principal_attributes(bare) == {ATTR_USER: "u", ATTR_ACTORS: [], ATTR_CHAIN_DEPTH: 0}


def test_default_tracer_is_a_no_op_without_an_sdk() -> None:
    with span("plain", attributes={"n": 1, "flag": True, "obj": object()}) as current:
        assert current is not None
