"""Metrics through the OpenTelemetry API, read with the SDK's in-memory reader.

A real chain in process (planner → calendar on the embedded token service): exchanges and
denials by reason, verification failures by check, latency histograms of verification,
exchange and skills, exchange cache hits and misses, and the task store's size.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from metrics_support import install_meter_provider, metric_reader
from opentelemetry import metrics
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from keycard_agents import (
    Agent,
    AgentDependency,
    Context,
    DelegationDeniedError,
    RemoteAuthenticationError,
    RemoteTaskError,
    skill,
)
from keycard_agents._observe import _metrics
from keycard_agents.testing import LocalTokenService, open_local_agents

pytestmark = pytest.mark.anyio

CALENDAR = "http://127.0.0.1:8902"


class Calendar(Agent):
    """Knows when the user is free."""

    @skill(scopes=["calendar.read"])
    async def free_slots(self, ctx: Context, day: str) -> list[str]:
        return [f"{day} 09:00"]


class Planner(Agent):
    """Plans meetings."""

    dependencies = [AgentDependency("calendar", url=CALENDAR, scopes=["calendar.read"])]  # noqa: RUF012

    @skill(scopes=["plan"])
    async def plan(self, ctx: Context, day: str) -> str:
        slots = await ctx.dependency("calendar").call("free_slots", day=day)
        return str(slots[0])

    @skill(scopes=["plan"])
    async def broken(self, ctx: Context) -> str:
        raise RuntimeError("boom")


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    with metric_reader() as memory:
        yield memory


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    found: dict[str, list[Any]] = {}
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            if scope.scope.name != _metrics.METER_NAME:
                continue
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


def _value(points: list[Any], **attributes: Any) -> float:
    """The sum (counters), count (histograms) or value (gauges) of the matching points."""
    total = 0.0
    for point in points:
        if all(point.attributes.get(k) == v for k, v in attributes.items()):
            count = getattr(point, "count", None)
            total += float(count if count is not None else point.value)
    return total


async def test_the_chain_reports_its_metrics(reader: InMemoryMetricReader) -> None:
    planner = Planner(url="http://127.0.0.1:8901")
    calendar = Calendar(url=CALENDAR)
    sts = LocalTokenService(agents=[planner, calendar])
    token = sts.mint_user_token("alice", audience=planner, scopes=["plan", "calendar.read"])
    async with open_local_agents(sts, [planner, calendar]) as net:
        async with net.client(planner, token=token) as client:
            assert await client.call("plan", day="Monday") == "Monday 09:00"
            assert await client.call("plan", day="Monday") == "Monday 09:00"  # cached token
            with pytest.raises(RemoteTaskError):
                await client.call("broken")
        # an agent refuses a token sent to another audience
        async with net.client(calendar, token=token) as wrong:
            with pytest.raises(RemoteAuthenticationError):
                await wrong.call("free_slots", day="Monday")
        # the token service refuses a target nobody declared, and a subject token
        # that was not sent to the agent exchanging it
        with pytest.raises(DelegationDeniedError):
            await net.exchange_client(planner).exchange(token, resource="https://x.example/")
        with pytest.raises(DelegationDeniedError):
            await net.exchange_client(calendar).exchange(token, resource=CALENDAR)
        points = _points(reader)

    requests = points["keycard.token_service.requests"]
    exchange = {"keycard.grant_type": "token-exchange"}
    assert _value(requests, **exchange, **{"keycard.decision": "issued"}) == 1
    assert _value(requests, **exchange, **{"error.type": "invalid_target"}) == 1
    assert _value(requests, **exchange, **{"error.type": "invalid_request"}) == 1
    assert _value(points["keycard.token_service.request.duration"], **exchange) == 3

    failures = points["keycard.token.verification.failures"]
    assert _value(failures, **{"keycard.check": "audience", "keycard.verifier": "agent"}) == 1
    assert (
        _value(failures, **{"keycard.check": "audience", "keycard.verifier": "token_service"}) == 1
    )
    verified = points["keycard.token.verification.duration"]
    assert _value(verified, **{"keycard.outcome": "ok"}) == 5  # 3 at the planner, 2 calendar
    assert _value(verified, **{"keycard.outcome": "error"}) == 1

    exchanged = points["keycard.exchange.duration"]
    assert (
        _value(exchanged, **{"keycard.grant_type": "token-exchange", "keycard.outcome": "ok"}) == 1
    )
    assert _value(exchanged, **{"keycard.outcome": "error"}) == 2

    lookups = points["keycard.cache.lookups"]
    exchanges = {"keycard.cache": "exchange"}
    assert _value(lookups, **exchanges, **{"keycard.cache.result": "hit"}) == 1
    assert _value(lookups, **exchanges, **{"keycard.cache.result": "miss"}) == 3
    hits = _value(lookups, **exchanges, **{"keycard.cache.result": "hit"})
    assert hits / _value(lookups, **exchanges) == pytest.approx(0.25)
    # the planner verified the same user token three times: once, then from its cache
    verified_cache = {"keycard.cache": "verification"}
    assert _value(lookups, **verified_cache, **{"keycard.cache.result": "hit"}) >= 2
    assert _value(lookups, **verified_cache, **{"keycard.cache.result": "miss"}) >= 2

    skills = points["keycard.skill.duration"]
    completed = {"keycard.task.state": "TASK_STATE_COMPLETED"}
    assert _value(skills, **{"keycard.skill": "plan"}, **completed) == 2
    assert _value(skills, **{"keycard.skill": "free_slots"}, **completed) == 2
    failed = {"keycard.skill": "broken", "keycard.task.state": "TASK_STATE_FAILED"}
    assert _value(skills, **failed) == 1
    assert all(p.sum >= 0 for p in skills)

    stored = points["keycard.tasks.stored"]
    assert _value(stored, **{"keycard.agent": planner.agent_name}) == 3
    assert _value(stored, **{"keycard.agent": calendar.agent_name}) == 2
    # durations in seconds, in buckets made for them
    assert skills[0].explicit_bounds[0] < 0.01


def test_without_an_sdk_recording_is_a_no_op() -> None:
    saved = metrics._internal._METER_PROVIDER
    install_meter_provider(None)
    try:
        _metrics.record_skill("any", "TASK_STATE_COMPLETED", 0.1)
        _metrics.record_cache_lookup("hit")
    finally:
        install_meter_provider(saved)
