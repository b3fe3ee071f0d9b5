"""Our agents against an OAuth server we did not write: npm ``oidc-provider`` 9.13.3.

The provider runs in a node subprocess on a free loopback port with JWT access tokens
(RFC 9068) for resource indicators and a small RFC 8693 grant of ours (see
``tests/interop_oidc/issuer.mjs``). A user signs in with the authorization code flow and
PKCE through its own pages; the token then crosses three of our agents under uvicorn:
Front (client secret), Middle (``private_key_jwt``, keys at its ``/.well-known/jwks.json``)
and Collector. Each shape of issuer identifier is exercised: at the root of its host,
mounted under a path, and ending in ``/`` (configured the Keycard way, ``zone_url=``).
The provider serves only OpenID Connect discovery, so our agents must fall back to it.
"""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from delegation_support import Chain, chain_agents
from oidc_issuer import SHAPES, RegisteredAgent, RunningIssuer, requires_node, run_issuer, sign_in

from keycard_agents import (
    ApplicationCredential,
    ClientSecret,
    DelegationDeniedError,
    WebIdentity,
    open_agent_client,
    resolve_issuer,
)
from keycard_agents._conformance import add_conformance_arguments, run_conformance
from keycard_agents._jose._subjects import subject_is_client
from keycard_agents.auth import TokenExchangeClient, TokenVerifier
from keycard_agents.testing import free_loopback_socket, serve_on_loopback

pytestmark = [pytest.mark.slow, requires_node]

RESOURCE_SCOPES = ("a.use b.call c.read", "b.call c.read", "c.read")


@dataclass
class Deployment:
    shape: str
    issuer: RunningIssuer
    agents: Chain
    configured_issuer: str
    secrets: dict[str, str]


@pytest.fixture(scope="module", params=sorted(SHAPES))
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    shape: str = request.param
    sockets = [free_loopback_socket() for _ in range(3)]
    (a_sock, a_url), (b_sock, b_url), (c_sock, c_url) = sockets
    front_secret = secrets.token_urlsafe(32)
    collector_secret = secrets.token_urlsafe(32)
    registered = [
        RegisteredAgent("front", a_url, (b_url, c_url), client_secret=front_secret),
        RegisteredAgent("middle", b_url, (c_url,), jwks_uri=b_url + "/.well-known/jwks.json"),
        RegisteredAgent("collector", c_url, (), client_secret=collector_secret),
    ]
    resources = dict(zip((a_url, b_url, c_url), RESOURCE_SCOPES, strict=True))
    try:
        with (
            run_issuer(shape=shape, agents=registered, resources=resources) as issuer,
            ExitStack() as stack,
        ):
            # A trailing-slash issuer is configured the way Keycard users do, by zone URL.
            configured = resolve_issuer(zone_url=issuer.issuer, env={})
            agents = chain_agents(a_url, b_url, c_url)
            keys: Path = tmp_path_factory.mktemp(f"middle-keys-{shape}")
            credentials: list[ApplicationCredential] = [
                ClientSecret("front", front_secret),
                WebIdentity("middle", storage_dir=keys / "middle"),
                ClientSecret("collector", collector_secret),
            ]
            for agent, credential in zip(agents.all, credentials, strict=True):
                agent.issuer = configured
                agent.token_endpoint = issuer.token_endpoint
                agent.credential = credential
            for agent, sock in zip(agents.all, (a_sock, b_sock, c_sock), strict=True):
                stack.enter_context(serve_on_loopback(agent.asgi_app(), sock))
            yield Deployment(
                shape,
                issuer,
                agents,
                configured,
                {"front": front_secret, "collector": collector_secret},
            )
    finally:
        # If the provider did not start, the sockets were never served: close them here,
        # or their ResourceWarning fails whatever test runs when they are collected.
        for sock, _ in sockets:
            sock.close()


def test_issuer_identifier_is_kept_exactly(deployment: Deployment) -> None:
    assert deployment.configured_issuer == deployment.issuer.issuer
    assert deployment.issuer.issuer.endswith("/") == (deployment.shape == "slash")


@pytest.mark.anyio
async def test_user_sign_in_then_three_hops(deployment: Deployment) -> None:
    agents = deployment.agents
    signed_in = await anyio.to_thread.run_sync(
        lambda: sign_in(
            deployment.issuer,
            user="alice",
            resource=str(agents.front.url),
            scopes=["a.use", "b.call", "c.read"],
        )
    )
    assert sorted(signed_in["scope"].split()) == ["a.use", "b.call", "c.read"]
    try:
        with anyio.fail_after(60):
            async with open_agent_client(
                str(agents.front.url), token=signed_in["access_token"]
            ) as client:
                result = await client.call("start")
    except Exception as exc:
        raise AssertionError(f"{exc}\nissuer log:\n{deployment.issuer.log()}") from exc
    front, middle, collector = result["here"], result["below"]["here"], result["below"]["below"]
    assert front["sub"] == middle["sub"] == collector["sub"] == "alice"
    assert front["actors"] == []
    assert front["client_id"] == "app"
    assert middle["actors"] == ["front"]
    assert middle["client_id"] == "front"
    assert middle["scopes"] == ["b.call", "c.read"]
    assert collector["actors"] == ["middle", "front"]
    assert collector["client_id"] == "middle"
    assert collector["aud"] == [agents.collector.url]
    assert collector["scopes"] == ["c.read"]


async def _user_token(deployment: Deployment) -> str:
    signed_in = await anyio.to_thread.run_sync(
        lambda: sign_in(
            deployment.issuer,
            user="bob",
            resource=str(deployment.agents.front.url),
            scopes=["a.use", "b.call"],
        )
    )
    return str(signed_in["access_token"])


@pytest.mark.anyio
async def test_actor_token_needs_a_resource_at_this_issuer(deployment: Deployment) -> None:
    # Without a resource, oidc-provider issues an opaque client-credentials token, which
    # its token exchange cannot use as actor_token; with one it issues a JWT.
    agents, issuer = deployment.agents, deployment.issuer
    user = await _user_token(deployment)
    front = ClientSecret("front", deployment.secrets["front"])
    middle = str(agents.middle.url)

    def client(**options: Any) -> TokenExchangeClient:
        return TokenExchangeClient(
            issuer=issuer.issuer, credential=front, use_actor_token=True, **options
        )

    async with client() as plain:
        with pytest.raises(DelegationDeniedError) as info:
            await plain.exchange(user, resource=middle)
    assert info.value.error == "invalid_request"  # RFC 8693 §2.2.2
    assert "actor_token" in info.value.error_description
    async with client(actor_token_resource=issuer.issuer) as configured:
        token = await configured.exchange(user, resource=middle)
    assert token.scopes == ("b.call",)


@pytest.mark.anyio
async def test_client_credentials_token_is_recognized_as_no_user(deployment: Deployment) -> None:
    front = str(deployment.agents.front.url)
    async with httpx.AsyncClient() as http:
        reply = await http.post(
            deployment.issuer.token_endpoint,
            data={"grant_type": "client_credentials", "resource": front},
            auth=("collector", deployment.secrets["collector"]),
        )
    assert reply.status_code == 200, reply.text
    verifier = TokenVerifier(issuers=[deployment.configured_issuer])
    try:
        machine = await verifier.verify(reply.json()["access_token"], audience=front)
        user = await verifier.verify(await _user_token(deployment), audience=front)
    finally:
        await verifier.aclose()
    assert machine.user == machine.client_id == "collector"  # RFC 9068 §2.2
    assert subject_is_client(machine)
    assert not subject_is_client(user)


# The vectors an RFC 8693 service with our grant can be held to without trusting our test
# user issuer: each starts from the user token signed in at the provider, from a literal,
# or from nothing (client authentication and request shape).
PORTABLE_VECTORS = [
    "X-01",
    "X-07",
    "X-14",
    "X-15",
    "X-16",
    "X-18",
    "X-21",
    "X-38",
    "X-46",
    "X-47",
    "X-48",
    "X-51",
    "X-57",
    "X-58",
    "X-59",
    "X-60",
]


def test_conformance_command_against_the_independent_issuer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The issuer is mounted under a path and serves only OpenID Connect discovery; its
    # grant answers invalid_request for a bad subject token (RFC 8693 §2.2.2).
    alpha, beta = "https://alpha.conformance.test/", "https://beta.conformance.test/"
    alpha_secret, beta_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    registered = [
        RegisteredAgent("conformance-alpha", alpha, (beta,), client_secret=alpha_secret),
        RegisteredAgent("conformance-beta", beta, (alpha,), client_secret=beta_secret),
    ]
    resources = {alpha: "read write", beta: "read"}
    with run_issuer(shape="path", agents=registered, resources=resources) as issuer:
        user = sign_in(issuer, user="dana", resource=alpha, scopes=["read", "write"])
        (tmp_path / "user.jwt").write_text(user["access_token"])
        (tmp_path / "creds.toml").write_text(
            'user_token_file = "user.jwt"\n'
            f'[agents.alpha]\nclient_id = "conformance-alpha"\nresource = "{alpha}"\n'
            f'client_secret = "{alpha_secret}"\n'
            f'[agents.beta]\nclient_id = "conformance-beta"\nresource = "{beta}"\n'
            f'client_secret = "{beta_secret}"\n'
        )
        parser = argparse.ArgumentParser()
        add_conformance_arguments(parser)
        only = [arg for vid in PORTABLE_VECTORS for arg in ("--only", vid)]
        args = parser.parse_args([issuer.issuer, "--config", str(tmp_path / "creds.toml"), *only])
        status = run_conformance(args)
        out = capsys.readouterr().out
        assert status == 0, f"{out}\nissuer log:\n{issuer.log()}"
    assert f"{len(PORTABLE_VECTORS)} passed, 0 failed, 0 skipped" in out
    assert alpha_secret not in out
