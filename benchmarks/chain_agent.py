"""One agent of the delegation-chain benchmark (figure 4), run as its own uvicorn process.

    python benchmarks/chain_agent.py --port P [--next URL] (--issuer URL --identity DIR | --open)

With ``--issuer``, the agent verifies inbound tokens against the token service's JWKS (its
production default) and calls ``--next`` with ``ctx.dependency("next")``: a token exchanged
for it (RFC 8693, ``private_key_jwt`` with the key in DIR), cached by the agent.
With ``--open``, the skill is anonymous and the next agent is called without any token: the
unauthenticated baseline. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from keycard_agents import (
    Agent,
    AgentClient,
    AgentDependency,
    CardCache,
    Context,
    InvalidTokenError,
    Principal,
    WebIdentity,
    create_app,
    skill,
)

HOST = "127.0.0.1"


class _NoTokens:
    """The open hops accept no token at all (none is ever sent to them)."""

    async def verify(
        self, token: str, *, audience: str, required_scopes: Sequence[str] = ()
    ) -> Principal:
        raise InvalidTokenError("the open benchmark hops accept no tokens", check="issuer")


def build(args: argparse.Namespace) -> Any:
    url = f"http://{HOST}:{args.port}"
    next_url: str | None = args.next

    if args.open:
        shared: dict[str, httpx.AsyncClient] = {}
        cards = CardCache()  # as the delegated hops share one (cards fetched once, revalidated)

        class OpenHop(Agent):
            name = f"open-hop-{args.port}"
            description = "Relays to the next hop without any token."

            @skill(id="relay", anonymous=True)
            async def relay(self, ctx: Context) -> int:
                """Call the next hop (if any); returns the number of hops below and here."""
                if next_url is None:
                    return 1
                http = shared.get("http")
                if http is None:
                    http = shared["http"] = httpx.AsyncClient()
                async with AgentClient(next_url, http_client=http, card_cache=cards) as client:
                    below = await client.call("relay")
                return int(below) + 1

        return create_app(OpenHop(url=url), verifier=_NoTokens())

    declared = (AgentDependency("next", url=next_url, scopes=["relay"]),) if next_url else ()

    class Hop(Agent):
        name = f"hop-{args.port}"
        description = "Relays to the next hop with a delegated token."
        dependencies = declared

        @skill(id="relay", scopes=["relay"])
        async def relay(self, ctx: Context) -> int:
            """Call the next hop (if any); returns the number of hops below and here."""
            if next_url is None:
                return 1
            below = await ctx.dependency("next").call("relay")
            return int(below) + 1

    issuer = args.issuer.rstrip("/")
    agent = Hop(
        url=url,
        issuer=issuer,
        token_endpoint=issuer + "/token",
        credential=WebIdentity(args.client_id, storage_dir=args.identity),
    )
    return create_app(agent)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--next", default=None)
    parser.add_argument("--issuer", default=None)
    parser.add_argument("--identity", type=Path, default=None)
    parser.add_argument("--client-id", default=None)
    parser.add_argument("--open", action="store_true")
    args = parser.parse_args(argv)
    if not args.open and (args.issuer is None or args.identity is None or not args.client_id):
        parser.error("--issuer, --identity and --client-id are required unless --open")
    import uvicorn

    app = build(args)
    uvicorn.run(app, host=HOST, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
