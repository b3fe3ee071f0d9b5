"""Two agents, one delegation: alice → concierge → greeter.

The concierge's skill calls the greeter's skill. The framework exchanges alice's token
for one meant for the greeter (RFC 8693), so the greeter sees alice as the user and the
concierge as the agent acting for her. Everything runs on this machine: a local token
service and both agents on free 127.0.0.1 ports.

    python examples/two_agents/main.py
"""

from __future__ import annotations

from contextlib import ExitStack

import anyio

from keycard_agents import Agent, AgentDependency, Context, open_agent_client, skill
from keycard_agents.testing import LocalTokenService, free_loopback_socket, serve_on_loopback


class Greeter(Agent):
    """Greets people, and says who asked."""

    name = "greeter"

    @skill(scopes=["greet"])
    async def greet(self, ctx: Context, name: str) -> str:
        """Greet someone."""
        chain = ctx.principal.render_chain(receiver="greeter") if ctx.principal else "?"
        return f"Hello, {name}! (request path: {chain})"


def concierge_class(greeter_url: str) -> type[Agent]:
    class Concierge(Agent):
        """Takes requests and hands greetings to the greeter."""

        name = "concierge"
        dependencies = (AgentDependency("greeter", url=greeter_url, scopes=["greet"]),)

        @skill(scopes=["concierge"])
        async def welcome(self, ctx: Context, guest: str) -> str:
            """Welcome a guest (asks the greeter)."""
            greeting = await ctx.dependency("greeter").call("greet", name=guest)
            return f"The concierge relays: {greeting}"

    return Concierge


async def ask(url: str, token: str) -> str:
    async with open_agent_client(url, token=token) as client:
        card = await client.card()
        print(f"concierge card: {card.name}, skills {[s.id for s in card.skills]}")
        return str(await client.call("welcome", guest="Bob"))


def main() -> None:
    (sts_sock, sts_url), (g_sock, g_url), (c_sock, c_url) = (
        free_loopback_socket() for _ in range(3)
    )
    greeter = Greeter(url=g_url)
    concierge = concierge_class(g_url)(url=c_url)
    # The token service registers both agents (client id, resource URL, allowed targets)
    # and gives each a credential; in production they come from your issuer.
    sts = LocalTokenService(agents=[concierge, greeter], issuer=sts_url)
    with ExitStack() as stack:
        stack.enter_context(serve_on_loopback(sts.app, sts_sock))
        stack.enter_context(serve_on_loopback(greeter.asgi_app(), g_sock))
        stack.enter_context(serve_on_loopback(concierge.asgi_app(), c_sock))
        # A signed-in user's token for the concierge (see `keycard-agents demo` for a real
        # sign-in); it carries the scopes the whole chain needs.
        token = sts.mint_user_token("alice", audience=concierge, scopes=["concierge", "greet"])
        answer = anyio.run(ask, c_url, token)
    print(answer)
    print(f"token exchanges: {sts.stats.exchanges}")


if __name__ == "__main__":
    main()
