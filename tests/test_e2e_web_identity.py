"""An agent authenticating with a key pair (WebIdentity, RFC 7523 private_key_jwt) whose
public keys the token service fetches from the agent itself, over real loopback sockets."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import anyio
import httpx
import pytest

from keycard_agents import (
    Agent,
    AgentDependency,
    Context,
    WebIdentity,
    create_app,
    open_agent_client,
    skill,
)
from keycard_agents.testing import LocalTokenService, free_loopback_socket, serve_on_loopback

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


class Back(Agent):
    name = "back"
    description = "Reports who called it"

    @skill(scopes=["back.read"])
    async def whoami(self, ctx: Context) -> dict[str, object]:
        return {"user": ctx.user, "actors": list(ctx.actors.subjects())}


def make_front(back_url: str) -> type[Agent]:
    class Front(Agent):
        name = "front"
        description = "Calls back on behalf of the user"
        dependencies = (AgentDependency("back", url=back_url, scopes=["back.read"]),)

        @skill
        async def relay(self, ctx: Context) -> object:
            return await ctx.dependency("back").call("whoami")

    return Front


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    (sts_sock, sts_url), (f_sock, f_url), (b_sock, b_url) = (
        free_loopback_socket() for _ in range(3)
    )
    key_dir = tmp_path_factory.mktemp("front-keys") / "keys"
    front = make_front(b_url)(url=f_url, credential=WebIdentity("front", storage_dir=key_dir))
    back = Back(url=b_url)
    sts = LocalTokenService(agents=[front, back], issuer=sts_url)
    token = sts.mint_user_token("dana", audience=front, scopes=["back.read"])
    with ExitStack() as stack:
        stack.enter_context(serve_on_loopback(sts.app, sts_sock))
        stack.enter_context(serve_on_loopback(create_app(front), f_sock))
        stack.enter_context(serve_on_loopback(create_app(back), b_sock))
        yield f_url, token, key_dir


async def test_agent_serves_its_public_keys_and_exchanges_with_private_key_jwt(
    deployment: tuple[str, str, Path],
) -> None:
    front_url, token, key_dir = deployment
    async with httpx.AsyncClient() as http:
        jwks = (await http.get(front_url + "/.well-known/jwks.json")).json()
    assert [k["kty"] for k in jwks["keys"]] == ["EC"]
    assert all("d" not in k for k in jwks["keys"])  # never a private member
    assert stat.S_IMODE(os.stat(key_dir).st_mode) == 0o700
    with anyio.fail_after(30):
        async with open_agent_client(front_url, token=token) as client:
            seen = await client.call("relay")
    assert seen == {"user": "dana", "actors": ["front"]}
