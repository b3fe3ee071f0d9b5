"""The token endpoint's server span (``TokenEndpoint.handle``) and request metric: the
span is named after the grant and carries who asked for what and the decision, with an
error status only on a 500; each decision is counted with its grant and error. The
mutation run's test selection holds no observability test, so these pin it in the
token service's own tests (``dev.py mutation sts``, docs/testing.md)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from metrics_support import metric_reader
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from span_support import recorded_spans
from sts_support import ISSUER, B, Clock, claims_of, make_config, open_world

from keycard_agents._audit._sts_records import AuditRecord
from keycard_agents.sts import TokenService

pytestmark = pytest.mark.anyio


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span the test makes, kept in memory (the SDK provider installed globally)."""
    with recorded_spans() as memory:
        yield memory


def _server_span(memory: InMemorySpanExporter, name: str) -> ReadableSpan:
    (found,) = [s for s in memory.get_finished_spans() if s.name == name]
    return found


def _attrs(span: ReadableSpan) -> dict[str, Any]:
    """The span's ``keycard.*`` attributes and its HTTP status (not the outcome the
    request span adds by itself)."""
    return {k: v for k, v in (span.attributes or {}).items() if k != "keycard.outcome"}


async def test_an_issued_exchange_is_described_on_its_span(spans: InMemorySpanExporter) -> None:
    async with open_world() as w:
        user = await w.user_token(scope="read")
        reply = await w.exchange("a", user, B)
    assert reply.status_code == 200, reply.text
    issued = claims_of(reply.json()["access_token"])
    server = _server_span(spans, "token service token-exchange")
    assert _attrs(server) == {
        "keycard.agent": "a",
        "keycard.target": B,
        "keycard.txn": issued["txn"],
        "keycard.user": "alice",
        "keycard.actors": ("a",),
        "keycard.scopes.granted": ("read",),
        "keycard.jti": issued["jti"],
        "keycard.decision": "issued",
        "http.response.status_code": 200,
    }
    assert server.status.status_code is not StatusCode.ERROR
    assert _attrs(_server_span(spans, "token service sign"))["keycard.jti"] == issued["jti"]


async def test_a_refusal_is_described_on_its_span_without_an_error_status(
    spans: InMemorySpanExporter,
) -> None:
    """A 400 is the service doing its job: ``denied``, not a failed span."""
    async with open_world() as w:
        reply = await w.post_token(
            {"grant_type": "client_credentials", "scope": "x", **w.auth("b")}
        )
    assert reply.status_code == 400
    server = _server_span(spans, "token service client_credentials")
    assert _attrs(server) == {
        "keycard.agent": "b",
        "keycard.target": ISSUER,
        "keycard.decision": "denied",
        "http.response.status_code": 400,
    }
    assert server.status.status_code is not StatusCode.ERROR


class _BrokenAudit:
    async def append(self, record: AuditRecord) -> None:
        raise RuntimeError("disk full")

    async def query(self, **kwargs: Any) -> list[AuditRecord]:
        return []


async def test_a_500_marks_the_span_as_an_error(spans: InMemorySpanExporter) -> None:
    config, _ = make_config()
    service = TokenService(config, audit=_BrokenAudit(), clock=Clock())
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
        reply = await client.post("/token", data={"grant_type": "password"})
    assert reply.status_code == 500
    server = _server_span(spans, "token service other")
    assert _attrs(server)["keycard.decision"] == "denied"
    assert _attrs(server)["http.response.status_code"] == 500
    assert (server.status.status_code, server.status.description) == (
        StatusCode.ERROR,
        "server_error",
    )


# -- metrics ----------------------------------------------------------------------------


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    with metric_reader() as memory:
        yield memory


def _request_counts(reader: InMemoryMetricReader) -> dict[tuple[Any, ...], int]:
    data = reader.get_metrics_data()
    assert data is not None
    counts: dict[tuple[Any, ...], int] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != "keycard.token_service.requests":
                    continue
                for point in metric.data.data_points:
                    a = point.attributes or {}
                    key = (
                        a.get("keycard.grant_type"),
                        a.get("keycard.decision"),
                        a.get("error.type"),
                    )
                    counts[key] = counts.get(key, 0) + int(getattr(point, "value", 0))
    return counts


async def test_each_decision_is_counted_with_its_grant_and_error(
    reader: InMemoryMetricReader,
) -> None:
    async with open_world() as w:
        user = await w.user_token(scope="read")
        assert (await w.exchange("a", user, B)).status_code == 200
        assert (await w.exchange("a", user, "https://d.example/api")).status_code == 400
    assert _request_counts(reader) == {
        ("authorization_code", "issued", None): 1,
        ("token-exchange", "issued", None): 1,
        ("token-exchange", "denied", "invalid_target"): 1,
    }
