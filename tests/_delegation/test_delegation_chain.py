"""The delegation chain user → Front → Middle → Collector, in process, on asyncio and trio.

Every hop is a real A2A JSON-RPC call through ``httpx.ASGITransport`` and a real RFC 8693
exchange at the embedded token service; nothing is mocked except where a test needs a
broken component (a token service that is down).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from delegation_support import USER_SCOPES, Chain, chain_agents

from keycard_agents import RemoteTaskError, task_result
from keycard_agents.a2a import Task, TaskState
from keycard_agents.testing import LocalAgents, LocalTokenService, open_local_agents

pytestmark = pytest.mark.anyio


@pytest.fixture
async def chain() -> AsyncIterator[tuple[Chain, LocalTokenService, LocalAgents]]:
    agents = chain_agents()
    sts = LocalTokenService(agents=agents.all)
    async with open_local_agents(sts, agents.all) as net:
        yield agents, sts, net


def user_token(sts: LocalTokenService, agents: Chain, user: str = "alice") -> str:
    return sts.mint_user_token(user, audience=agents.front, scopes=USER_SCOPES)


async def run(net: LocalAgents, agents: Chain, token: str, skill: str) -> Task:
    async with net.client(agents.front, token=token) as client:
        result = await client.send(_call(skill))
    assert isinstance(result, Task)
    return result


def _call(skill: str) -> Any:
    from keycard_agents import call_message

    return call_message(skill)


def reason(task: Task) -> str:
    assert task.status.message is not None
    return " ".join(p.text or "" for p in task.status.message.parts)


async def test_chain_keeps_user_records_actors_and_narrows_scopes(
    chain: tuple[Chain, LocalTokenService, LocalAgents],
) -> None:
    agents, sts, net = chain
    token = user_token(sts, agents)
    async with net.client(agents.front, token=token) as client:
        result = await client.call("start")
    front, middle, collector = result["here"], result["below"]["here"], result["below"]["below"]

    assert [front["sub"], middle["sub"], collector["sub"]] == ["alice"] * 3
    assert front["actors"] == []
    assert middle["actors"] == ["front"]
    assert collector["actors"] == ["middle", "front"]  # current actor first
    assert collector["aud"] == [agents.collector.url]
    assert middle["aud"] == [agents.middle.url]
    assert front["scopes"] == sorted(USER_SCOPES)
    assert middle["scopes"] == ["b.call", "c.read"]
    assert collector["scopes"] == ["c.read"]
    assert len({front["txn"], middle["txn"], collector["txn"]}) == 1
    assert collector["client_id"] == "middle"

    records = await sts.audit(txn=front["txn"])
    issued = [r for r in records if r.decision == "issued"]
    assert [r.target for r in issued] == [agents.middle.url, agents.collector.url]


async def test_second_identical_call_uses_cached_tokens(
    chain: tuple[Chain, LocalTokenService, LocalAgents],
) -> None:
    agents, sts, net = chain
    token = user_token(sts, agents)
    async with net.client(agents.front, token=token) as client:
        first = await client.call("start")
        exchanges = sts.stats.exchanges
        second = await client.call("start")
    assert exchanges == 2  # Front → Middle, Middle → Collector
    assert sts.stats.exchanges == exchanges  # nothing new at the token service
    assert net.exchange_client(agents.front).stats.cache_hits == 1
    assert net.exchange_client(agents.middle).stats.cache_hits == 1
    assert first["below"]["below"]["txn"] == second["below"]["below"]["txn"]


async def test_other_user_gets_own_exchange(
    chain: tuple[Chain, LocalTokenService, LocalAgents],
) -> None:
    agents, sts, net = chain
    seen = []
    for user in ("alice", "bob"):
        async with net.client(agents.front, token=user_token(sts, agents, user)) as client:
            seen.append((await client.call("start"))["below"]["below"]["sub"])
    assert seen == ["alice", "bob"]
    assert sts.stats.exchanges == 4


async def test_skill_streams_from_a_dependency(
    chain: tuple[Chain, LocalTokenService, LocalAgents],
) -> None:
    agents, sts, net = chain
    async with net.client(agents.front, token=user_token(sts, agents)) as client:
        value = await client.call("peek")
    assert value["states"] == ["TASK_STATE_WORKING", "TASK_STATE_COMPLETED"]
    assert value["data"]["actors"] == ["front"]
    assert value["data"]["scopes"] == ["c.read"]


async def test_undeclared_dependency_fails_before_any_exchange(
    chain: tuple[Chain, LocalTokenService, LocalAgents],
) -> None:
    agents, sts, net = chain
    task = await run(net, agents, user_token(sts, agents), "undeclared")
    assert task.status.state is TaskState.FAILED
    assert "unknown dependency 'billing'" in reason(task)
    assert "declared: collector, middle" in reason(task)
    assert sts.stats.requests == 0


async def test_replayed_token_is_refused_for_wrong_audience(
    chain: tuple[Chain, LocalTokenService, LocalAgents],
) -> None:
    agents, sts, net = chain
    task = await run(net, agents, user_token(sts, agents), "replay")
    assert task.status.state is TaskState.FAILED
    text = reason(task)
    assert "HTTP 401" in text
    assert "invalid_token" in text
    assert "audience" in text


async def test_scope_not_given_is_denied_by_token_service() -> None:
    agents = chain_agents(c_scopes=("c.read", "c.admin"))
    sts = LocalTokenService(agents=agents.all)
    async with open_local_agents(sts, agents.all) as net:
        task = await run(net, agents, user_token(sts, agents), "start")
    assert task.status.state is TaskState.FAILED
    text = reason(task)
    assert "middle" in text
    assert "invalid_scope" in text
    assert "c.admin" in text
    denied = [r for r in await sts.audit() if r.decision == "denied"]
    assert [r.error for r in denied] == ["invalid_scope"]


async def test_chain_longer_than_limit_is_refused() -> None:
    agents = chain_agents()
    sts = LocalTokenService(agents=agents.all, max_chain_depth=1)
    async with open_local_agents(sts, agents.all) as net:
        task = await run(net, agents, user_token(sts, agents), "start")
    assert task.status.state is TaskState.FAILED
    assert "max_chain_depth is 1" in reason(task)


async def test_cycle_is_refused() -> None:
    agents = chain_agents(middle_calls_front=True)
    sts = LocalTokenService(agents=agents.all)
    async with open_local_agents(sts, agents.all) as net:
        task = await run(net, agents, user_token(sts, agents), "start")
    assert task.status.state is TaskState.FAILED
    # A → B → A is refused when B asks for a token back to A, not one hop later.
    assert "front → middle → front comes back to agent 'front'" in reason(task)
    denied = [r for r in await sts.audit() if r.decision == "denied"]
    assert [(r.client_id, r.error) for r in denied] == [("middle", "invalid_target")]
    issued = [r.actors for r in await sts.audit() if r.decision == "issued"]
    assert issued == [("front",)]


async def test_token_service_down_fails_task_after_bounded_retries() -> None:
    agents = chain_agents()
    sts = LocalTokenService(agents=agents.all)
    attempts = []

    def down(request: httpx.Request) -> httpx.Response:
        attempts.append(request.url.path)
        raise httpx.ConnectError("connection refused", request=request)

    async with open_local_agents(
        sts,
        agents.all,
        transports={sts.issuer: httpx.MockTransport(down)},
        exchange_options={"retries": 2, "backoff": 0.001, "max_backoff": 0.001},
    ) as net:
        task = await run(net, agents, user_token(sts, agents), "start")
        async with net.client(agents.front, token=user_token(sts, agents)) as client:
            with pytest.raises(RemoteTaskError) as caught:
                await client.call("start")
    assert task.status.state is TaskState.FAILED
    assert "unreachable after 3 attempts" in reason(task)
    assert "ConnectError" in reason(task)
    assert caught.value.state == TaskState.FAILED.value
    assert "unreachable" in str(caught.value)
    assert len(attempts) == 6  # two calls, three attempts each


async def test_interaction_required_moves_task_to_auth_required() -> None:
    agents = chain_agents()
    sts = LocalTokenService(agents=agents.all)
    asgi = httpx.ASGITransport(app=sts.app)

    async def consent(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            return httpx.Response(
                400,
                json={
                    "error": "consent_required",
                    "error_description": "the user has not approved calendar access",
                },
            )
        return await asgi.handle_async_request(request)

    async with open_local_agents(
        sts, agents.all, transports={sts.issuer: httpx.MockTransport(consent)}
    ) as net:
        task = await run(net, agents, user_token(sts, agents), "start")
    assert task.status.state is TaskState.AUTH_REQUIRED
    text = reason(task)
    assert "consent_required" in text
    assert "the user has not approved calendar access" in text
    assert str(agents.middle.url) in text
    with pytest.raises(RemoteTaskError) as caught:
        task_result(task)
    assert caught.value.state == TaskState.AUTH_REQUIRED.value


async def test_auth_required_downstream_propagates_to_the_caller() -> None:
    agents = chain_agents()
    sts = LocalTokenService(agents=agents.all)
    asgi = httpx.ASGITransport(app=sts.app)
    collector = quote(str(agents.collector.url), safe="").encode()

    async def consent_for_collector(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token" and collector in request.content:
            return httpx.Response(
                400, json={"error": "interaction_required", "error_description": "step up"}
            )
        return await asgi.handle_async_request(request)

    async with open_local_agents(
        sts, agents.all, transports={sts.issuer: httpx.MockTransport(consent_for_collector)}
    ) as net:
        task = await run(net, agents, user_token(sts, agents), "start")
    assert task.status.state is TaskState.AUTH_REQUIRED
    text = reason(task)
    assert text.startswith("middle needs authorization:")
    assert "interaction_required (step up)" in text
