"""An agent mounted inside an existing FastAPI application.

The shop below already has its own routes (``/health``, ``/orders/{id}``). The support
agent is mounted at ``/agents/support`` with :class:`AgentMount`; the app's lifespan runs
the agent's lifespan (its task runtime). The agent's URL, and so the audience of the
tokens it accepts, includes the mount path.

    python examples/fastapi_mount/main.py
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager

import anyio
import httpx
from fastapi import FastAPI, HTTPException

from keycard_agents import Agent, AgentMount, Context, create_app, open_agent_client, skill
from keycard_agents.testing import LocalTokenService, free_loopback_socket, serve_on_loopback

ORDERS = {"1001": {"item": "espresso machine", "status": "shipped"}}


class Support(Agent):
    """Answers questions about orders, for the signed-in customer."""

    name = "support"

    @skill(scopes=["orders.read"])
    async def order_status(self, ctx: Context, order_id: str) -> str:
        """Where is my order?"""
        order = ORDERS.get(order_id)
        if order is None:
            return f"There is no order {order_id}."
        return f"{ctx.user}, your {order['item']} (order {order_id}) is {order['status']}."


def build_shop(support: Support) -> FastAPI:
    """The existing application, with the agent mounted into it."""
    agent_app = create_app(support)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with agent_app.router.lifespan_context(agent_app):
            yield

    shop = FastAPI(title="shop", lifespan=lifespan)

    @shop.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @shop.get("/orders/{order_id}")
    async def order(order_id: str) -> dict[str, str]:
        if order_id not in ORDERS:
            raise HTTPException(404, "no such order")
        return ORDERS[order_id]

    shop.router.routes.append(AgentMount("/agents/support", agent_app))
    return shop


async def visit(base: str, agent_url: str, token: str) -> None:
    async with httpx.AsyncClient() as http:
        health = (await http.get(f"{base}/health")).json()
        print(f"GET /health -> {health}")
        call = {"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "x"}}
        anonymous = await http.post(agent_url, json=call, headers={"A2A-Version": "1.0"})
        challenge = anonymous.headers.get("www-authenticate", "")
        print(f"POST /agents/support without a token -> {anonymous.status_code} {challenge}")
        async with open_agent_client(agent_url, token=token, http_client=http) as client:
            card = await client.card()
            print(f"agent card at {agent_url}/.well-known/agent-card.json: {card.name}")
            print(await client.call("order_status", order_id="1001"))


def main() -> None:
    (sts_sock, sts_url), (shop_sock, shop_url) = (free_loopback_socket() for _ in range(2))
    support = Support(url=f"{shop_url}/agents/support")
    sts = LocalTokenService(agents=[support], issuer=sts_url)
    with ExitStack() as stack:
        stack.enter_context(serve_on_loopback(sts.app, sts_sock))
        stack.enter_context(serve_on_loopback(build_shop(support), shop_sock))
        token = sts.mint_user_token("alice", audience=support, scopes=["orders.read"])
        anyio.run(visit, shop_url, f"{shop_url}/agents/support", token)


if __name__ == "__main__":
    main()
