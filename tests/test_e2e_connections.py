"""A user's own third-party token through two agents, over real sockets on loopback.

The token service, Front, Middle and the third-party API each run under uvicorn on their
own port; the upstream provider is npm ``oidc-provider`` (``tests/interop_oidc/
upstream.mjs``). Front calls Middle, Middle calls the API through the ``github``
connection. The first call ends ``TASK_STATE_AUTH_REQUIRED`` with the connect page; the
user connects in the browser; a follow-up message to the same task resumes it. A refresh
of the upstream token is transparent; after a disconnect (which revokes upstream) the
next call asks to connect again, and the resumed task completes.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import pytest
from upstream_support import (
    CLIENT_ID,
    Upstream,
    api_app,
    connect,
    requires_node,
    run_upstream,
    sign_in_connections,
)

from keycard_agents import (
    Agent,
    AgentDependency,
    ClientSecret,
    Context,
    HttpDependency,
    RemoteTaskError,
    call_message,
    create_app,
    open_agent_client,
    skill,
    task_result,
)
from keycard_agents.a2a import TaskState, auth_required
from keycard_agents.audit import render_text
from keycard_agents.sts import TokenService, hash_secret, parse_config
from keycard_agents.testing import free_loopback_socket, serve_on_loopback

pytestmark = [pytest.mark.anyio, pytest.mark.slow, requires_node]

SECRET_ENV = "KEYCARD_TEST_E2E_UPSTREAM_SECRET"
PASSWORD = "alice-e2e-password"


def _agents(front_url: str, middle_url: str, api: str) -> tuple[Agent, Agent]:
    class Middle(Agent):
        name = "middle"
        dependencies = (HttpDependency("github", resource=api, scopes=["read:user"]),)

        @skill(scopes=["b.call"])
        async def fetch(self, ctx: Context) -> dict[str, Any]:
            """Read the user's profile at the third-party API, as the user."""
            reply = await ctx.dependency("github").get("user")
            reply.raise_for_status()
            return dict(reply.json())

    class Front(Agent):
        name = "front"
        dependencies = (AgentDependency("middle", url=middle_url, scopes=["b.call"]),)

        @skill(scopes=["a.use"])
        async def profile(self, ctx: Context) -> dict[str, Any]:
            """Ask Middle for the user's profile."""
            return dict(await ctx.dependency("middle").call("fetch"))

    return Front(url=front_url), Middle(url=middle_url)


@dataclass
class Deployment:
    sts: TokenService
    sts_url: str
    front: Agent
    middle: Agent
    upstream: Upstream
    api: str


@pytest.fixture(scope="module")
def deployment(monkeypatch_module: pytest.MonkeyPatch) -> Iterator[Deployment]:
    (sts_sock, sts_url), (f_sock, f_url), (m_sock, m_url), (api_sock, api_url) = (
        free_loopback_socket() for _ in range(4)
    )
    api = api_url + "/"
    secrets_ = {"front": secrets.token_urlsafe(16), "middle": secrets.token_urlsafe(16)}
    front, middle = _agents(f_url, m_url, api)
    with ExitStack() as stack:
        upstream = stack.enter_context(
            run_upstream(redirect_uri=sts_url + "/connections/callback", api=api)
        )
        monkeypatch_module.setenv(SECRET_ENV, upstream.client_secret)
        config = parse_config(
            {
                "issuer": sts_url,
                "limits": {"throttle_delay": 0},
                "agents": [
                    {
                        "client_id": name,
                        "resource": url,
                        "auth": "client_secret",
                        "secret_hash": hash_secret(secrets_[name], cost=2**4),
                        "scopes": scopes,
                        "dependencies": deps,
                    }
                    for name, url, scopes, deps in (
                        ("front", f_url, ["a.use"], [m_url]),
                        ("middle", m_url, ["b.call"], [api]),
                    )
                ],
                "users": [{"username": "alice", "password": PASSWORD}],
                "connections": [
                    {
                        "name": "github",
                        "issuer": upstream.issuer,
                        "client_id": CLIENT_ID,
                        "client_secret_env": SECRET_ENV,
                        "scopes": ["repo", "read:user"],
                        "resources": [api],
                    }
                ],
            }
        )
        sts = TokenService(config)
        for agent in (front, middle):
            agent.issuer = sts_url
            agent.token_endpoint = sts_url + "/token"
            agent.credential = ClientSecret(agent.name, secrets_[agent.name])
        stack.enter_context(serve_on_loopback(sts.app, sts_sock))
        stack.enter_context(serve_on_loopback(create_app(front), f_sock))
        stack.enter_context(serve_on_loopback(create_app(middle), m_sock))
        app = api_app(issuer=upstream.issuer, audience=api, jwks=upstream.jwks())
        stack.enter_context(serve_on_loopback(app, api_sock))
        yield Deployment(sts, sts_url, front, middle, upstream, api)


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


async def _connect(d: Deployment, url: str) -> None:
    """The user opens the connect page from the task's status message."""
    assert urlsplit(url).path == "/connections/github/connect"
    async with httpx.AsyncClient(timeout=20) as browser:
        page = await connect(browser, d.sts_url, "github", user="alice", password=PASSWORD, url=url)
    assert page.status_code == 200, page.text


async def _disconnect(d: Deployment) -> None:
    async with httpx.AsyncClient(timeout=20) as browser:
        await sign_in_connections(browser, d.sts_url, user="alice", password=PASSWORD)
        listing = await browser.get(d.sts_url + "/connections")
        csrf = listing.text.split("name='csrf' value='")[1].split("'")[0]
        done = await browser.post(d.sts_url + "/connections/github/disconnect", data={"csrf": csrf})
    assert "revoked at the provider" in done.text


async def test_connect_resume_refresh_disconnect_reconnect(deployment: Deployment) -> None:
    d = deployment
    assert d.sts.vault is not None
    await d.sts.vault.delete(d.sts_url, "alice", "github")  # the other backend's run connected
    seen = len(await d.sts.audit.query(user="alice"))

    def user() -> str:
        """A new sign-in: the agents' caches (keyed by the subject token) start empty."""
        return d.sts.issue_user_token(
            "alice", audience=str(d.front.url), scopes=["a.use", "b.call"]
        )

    with anyio.fail_after(90):
        async with open_agent_client(str(d.front.url), token=user()) as client:
            # 1. Not connected: the task stops for authorization, with the connect page.
            task = await client.send(call_message("profile"))
            assert task.status.state == TaskState.AUTH_REQUIRED  # type: ignore[union-attr]
            needed = auth_required(task)
            assert needed is not None
            assert needed.url is not None
            assert needed.url.startswith(d.sts_url + "/connections/github/connect?txn=")
            assert "github" in (needed.reason or "")
            # 2. The user connects; a follow-up message resumes the same task.
            await _connect(d, needed.url)
            resumed = await client.send("connected", task_id=needed.task_id)
            assert resumed.status.state == TaskState.COMPLETED, resumed  # type: ignore[union-attr]
            assert resumed.id == needed.task_id  # type: ignore[union-attr]
            profile = await client.call("profile")
            assert profile["login"] == "alice"  # the API saw the user's own upstream token

            # 3. The upstream token nears its expiry: refreshed transparently.
            grant = await d.sts.vault.get(d.sts_url, "alice", "github")
            assert grant is not None
            await d.sts.vault.put(
                d.sts_url, "alice", "github", replace(grant, expires_at=grant.connected_at + 1)
            )
            refreshes = d.upstream.refreshes()
            async with open_agent_client(str(d.front.url), token=user()) as later:
                assert (await later.call("profile"))["login"] == "alice"
            assert d.upstream.refreshes() == refreshes + 1
            fresh = await d.sts.vault.get(d.sts_url, "alice", "github")
            assert fresh is not None
            assert fresh.refresh_token != grant.refresh_token

            # 4. Disconnect revokes; the next call asks to connect again ...
            await _disconnect(d)
            async with open_agent_client(str(d.front.url), token=user()) as client:
                with pytest.raises(RemoteTaskError) as info:
                    await client.call("profile")
                assert info.value.state == TaskState.AUTH_REQUIRED.value
                assert info.value.url is not None
                assert info.value.task_id is not None
                # ... and after re-connecting, that same task resumes and completes.
                await _connect(d, info.value.url)
                again = await client.send("reconnected", task_id=info.value.task_id)
                assert again.status.state == TaskState.COMPLETED  # type: ignore[union-attr]
                assert task_result(again)["login"] == "alice"
    records = (await d.sts.audit.query(user="alice"))[seen:]
    events = [r.grant_type for r in records]
    assert events.count("connection:connect") == 2
    assert "connection:refresh" in events
    assert "connection:disconnect" in events
    txn = {r.txn for r in records if r.grant_type == "connection:connect"}
    assert None not in txn  # the connect records join the chains that needed them
    # The delegation tree shows the third-party hop as such.
    chains = [r.txn for r in records if r.connection == "github" and r.decision == "issued"]
    chain = chains[0]
    assert chain is not None
    tree = await d.sts.trail.tree(chain)
    hops = [h for h in tree.walk() if h.connection == "github"]
    assert [h.path[1:] for h in hops] == [("front", "middle", d.api)]
    assert hops[0].jti is not None
    assert hops[0].jti.startswith("sha256:")
    assert "[third-party API, connection github]" in render_text(tree)
