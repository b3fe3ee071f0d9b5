"""End to end over real sockets: the token service and three agents, each under uvicorn on its
own loopback port. A user token calls Front, Front calls Middle, Middle calls Collector.

Agents use their production defaults here: tokens verified against the token service's
JWKS fetched over HTTP, exchanges through their own ``TokenExchangeClient``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import anyio
import httpx
import pytest
from delegation_support import USER_SCOPES, Chain, chain_agents

from keycard_agents import create_app, open_agent_client
from keycard_agents.testing import LocalTokenService, free_loopback_socket, serve_on_loopback

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@dataclass
class Deployment:
    agents: Chain
    sts: LocalTokenService


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    sockets = [free_loopback_socket() for _ in range(4)]
    (sts_sock, sts_url), (a_sock, a_url), (b_sock, b_url), (c_sock, c_url) = sockets
    agents = chain_agents(a_url, b_url, c_url)
    sts = LocalTokenService(agents=agents.all, issuer=sts_url)
    with ExitStack() as stack:
        stack.enter_context(serve_on_loopback(sts.app, sts_sock))
        for agent, sock in zip(agents.all, (a_sock, b_sock, c_sock), strict=True):
            stack.enter_context(serve_on_loopback(create_app(agent), sock))
        yield Deployment(agents, sts)


async def test_three_hops_over_real_sockets(deployment: Deployment) -> None:
    agents, sts = deployment.agents, deployment.sts
    token = sts.mint_user_token("carol", audience=agents.front, scopes=USER_SCOPES)
    before = sts.stats.exchanges
    with anyio.fail_after(30):
        async with open_agent_client(str(agents.front.url), token=token) as client:
            card = await client.card()
            first = await client.call("start")
            after_first = sts.stats.exchanges
            second = await client.call("start")
    assert card.name == "front"
    collector = first["below"]["below"]
    middle = first["below"]["here"]
    assert collector["sub"] == "carol"
    assert collector["actors"] == ["middle", "front"]
    assert collector["aud"] == [agents.collector.url]
    assert collector["scopes"] == ["c.read"]
    assert middle["scopes"] == ["b.call", "c.read"]
    assert first["here"]["scopes"] == sorted(USER_SCOPES)
    assert len({first["here"]["txn"], middle["txn"], collector["txn"]}) == 1
    assert after_first - before == 2
    assert sts.stats.exchanges == after_first  # the second call was served from caches
    assert second["below"]["below"] == collector


async def test_card_is_revalidated_with_etag(deployment: Deployment) -> None:
    url = str(deployment.agents.collector.url)
    async with httpx.AsyncClient() as http:
        first = await http.get(url + "/.well-known/agent-card.json")
        again = await http.get(
            url + "/.well-known/agent-card.json", headers={"If-None-Match": first.headers["etag"]}
        )
    assert first.status_code == 200
    assert "max-age" in first.headers["cache-control"]
    assert again.status_code == 304
    assert json.loads(first.content)["name"] == "collector"


# Sized for a loaded 2-core machine: 200 chains take about 2 s idle and 10-20 s beside a CPU
# hog; the deadline only catches a hang, and a failure says how far the run got.
LOAD_DEADLINE = 240.0


@pytest.mark.timeout(LOAD_DEADLINE + 60)
async def test_many_users_concurrently_never_mix_tokens(deployment: Deployment) -> None:
    agents, sts = deployment.agents, deployment.sts
    users = [f"user{i:02d}" for i in range(20)]
    tokens = {u: sts.mint_user_token(u, audience=agents.front, scopes=USER_SCOPES) for u in users}
    requests = [users[i % len(users)] for i in range(200)]
    results: dict[int, tuple[str, dict[str, object]]] = {}
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    started = anyio.current_time()
    async with httpx.AsyncClient(limits=limits) as http:

        async def one(index: int, user: str) -> None:
            async with open_agent_client(
                str(agents.front.url), token=tokens[user], http_client=http
            ) as client:
                results[index] = (user, await client.call("start"))

        with anyio.move_on_after(LOAD_DEADLINE):
            async with anyio.create_task_group() as group:
                for index, user in enumerate(requests):
                    group.start_soon(one, index, user)
    elapsed = anyio.current_time() - started
    assert len(results) == 200, (
        f"{len(results)} of 200 chains completed in {elapsed:.1f} s "
        f"({sts.stats.exchanges} exchanges at the token service)"
    )
    for user, result in results.values():
        here = result["here"]
        below = result["below"]
        assert isinstance(here, dict)
        assert isinstance(below, dict)
        assert here["sub"] == below["here"]["sub"] == below["below"]["sub"] == user
        assert below["below"]["actors"] == ["middle", "front"]
