"""A trio-native client: calls an agent from ``trio.run``, no asyncio in the client.

The agent runs under uvicorn in a thread (servers are not the point here); the client
side is trio all the way: ``open_agent_client`` (anyio underneath) in a trio nursery,
two users at the same time, one of them streaming the task's events over SSE.

    python examples/trio_client/main.py      # needs trio (keycard-agents[trio])
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import trio

from keycard_agents import Agent, Context, open_agent_client, skill
from keycard_agents.testing import LocalTokenService, free_loopback_socket, serve_on_loopback


class Counter(Agent):
    """Counts words, reporting progress."""

    name = "counter"

    @skill(scopes=["count"])
    async def count_words(self, ctx: Context, text: str) -> dict[str, Any]:
        """How many words a text has."""
        await ctx.update(f"counting for {ctx.user}")
        return {"user": ctx.user, "words": len(text.split())}


async def call_for(url: str, token: str, text: str, results: dict[str, Any]) -> None:
    async with open_agent_client(url, token=token) as client:
        result = await client.call("count_words", text=text)
        results[result["user"]] = result["words"]


async def stream_for(url: str, token: str, text: str, states: list[str]) -> None:
    async with open_agent_client(url, token=token) as client:
        async for event in client.stream_call("count_words", text=text):
            if event.status_update is not None:
                states.append(event.status_update.status.state.value)


async def main_trio(url: str, tokens: dict[str, str]) -> None:
    print(f"client running on trio {trio.__version__}")
    results: dict[str, Any] = {}
    states: list[str] = []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call_for, url, tokens["alice"], "the quick brown fox", results)
            nursery.start_soon(call_for, url, tokens["bob"], "hello trio", results)
            nursery.start_soon(stream_for, url, tokens["alice"], "streamed words", states)
    for user in sorted(results):
        print(f"{user}: {results[user]} words")
    print(f"streamed states: {' → '.join(states)}")


def main() -> None:
    (sts_sock, sts_url), (sock, url) = (free_loopback_socket() for _ in range(2))
    counter = Counter(url=url)
    sts = LocalTokenService(agents=[counter], issuer=sts_url)
    with ExitStack() as stack:
        stack.enter_context(serve_on_loopback(sts.app, sts_sock))
        stack.enter_context(serve_on_loopback(counter.asgi_app(), sock))
        tokens = {
            u: sts.mint_user_token(u, audience=counter, scopes=["count"]) for u in ("alice", "bob")
        }
        trio.run(main_trio, url, tokens)


if __name__ == "__main__":
    main()
