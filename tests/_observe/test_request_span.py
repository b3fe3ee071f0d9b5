"""``request_span`` without an OpenTelemetry SDK: no work when there is nothing to carry,
the caller's trace context passed on when there is."""

from __future__ import annotations

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from keycard_agents import Principal
from keycard_agents._observe._tracing import acting_for, current_principal, request_span

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
TRACEPARENT = f"00-{TRACE_ID:032x}-00f067aa0ba902b7-01"
ALICE = Principal(user="alice", issuer="https://sts.test", audience=(), scopes=frozenset())


def test_no_sdk_and_no_trace_headers_runs_in_an_empty_context_without_a_principal() -> None:
    token = otel_context.attach(baggage.set_baggage("tenant", "outer"))
    try:
        with acting_for(ALICE):
            with request_span({"content-type": "text/plain"}, name="r") as current:
                assert current is trace.INVALID_SPAN
                assert not current.is_recording()
                assert baggage.get_baggage("tenant") is None  # never inherited
                assert current_principal() is None
            assert current_principal() is ALICE
        assert baggage.get_baggage("tenant") == "outer"
    finally:
        otel_context.detach(token)


def test_no_sdk_passes_the_callers_trace_context_on() -> None:
    with request_span({"traceparent": TRACEPARENT}, name="r") as current:
        assert not current.is_recording()
        assert current.get_span_context().trace_id == TRACE_ID
        assert trace.get_current_span().get_span_context().trace_id == TRACE_ID
    assert not trace.get_current_span().get_span_context().is_valid


def test_no_sdk_inside_a_valid_span_keeps_it() -> None:
    outer = NonRecordingSpan(
        SpanContext(TRACE_ID, 0x00F067AA0BA902B7, is_remote=False, trace_flags=TraceFlags(1))
    )
    with trace.use_span(outer), request_span({}, name="r") as current:
        assert current.get_span_context().trace_id == TRACE_ID
