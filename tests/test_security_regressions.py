"""Security regressions an outside mutation audit showed could ship unnoticed (issue 21).

Each test here fails when the named bug is put back; the docstring says which.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from delegation_support import USER_SCOPES, chain_agents
from joserfc.jwk import ECKey
from server_support import (
    AGENT_URL,
    ISSUER,
    EchoAgent,
    TokenMinter,
    bearer,
    call_message,
    rpc,
    text_message,
)
from starlette.applications import Starlette
from sts_support import AT, JWT_BEARER, SECRET_B, A, B, World, open_world
from sts_support import ISSUER as STS_ISSUER

from keycard_agents import (
    Agent,
    AgentMount,
    AuthenticationError,
    Context,
    InvalidTokenError,
    IssuerUnreachableError,
    Principal,
    create_app,
    skill,
)
from keycard_agents._sts._clientauth import ReplayCache  # internal: not a public name
from keycard_agents.auth import JWKSCache, StaticKeys, TrustedIssuer
from keycard_agents.runtime import MemoryTaskStore, TaskRuntime
from keycard_agents.testing import LocalTokenService, open_local_agents

pytestmark = pytest.mark.anyio


# -- client-assertion replay --------------------------------------------------------------


async def _post_assertion(w: World, assertion: str) -> httpx.Response:
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
    }
    return await w.post_token(form)


async def test_an_assertion_replayed_after_exp_but_inside_the_leeway_is_refused() -> None:
    """Mutant: the jti is remembered only until ``exp - leeway`` (or ``exp``) while the
    assertion itself is accepted until ``exp + leeway``: a replay window."""
    async with open_world() as w:
        assertion = w.assertion("a", lifetime=60, jti="late-replay")
        assert (await _post_assertion(w, assertion)).status_code == 200
        w.clock.advance(75)  # 15 s past exp: still inside the 30 s leeway
        replay = await _post_assertion(w, assertion)
        assert replay.status_code == 401, replay.text
        assert replay.json()["error"] == "invalid_client"
        records = await w.service.audit.query()
        assert "client_assertion jti 'late-replay' was already used" in (records[-1].reason or "")
        w.clock.advance(30)  # now past exp + leeway: refused as expired, not as a replay
        expired = await _post_assertion(w, assertion)
        assert expired.status_code == 401
        records = await w.service.audit.query()
        assert "already used" not in (records[-1].reason or "")


async def test_a_live_assertion_is_still_refused_after_the_replay_sweep() -> None:
    """Mutant: the periodic sweep (every 30 s) drops live entries."""
    async with open_world() as w:
        assertion = w.assertion("a", lifetime=120, jti="swept")
        assert (await _post_assertion(w, assertion)).status_code == 200
        w.clock.advance(31)  # the next request sweeps the cache first
        replay = await _post_assertion(w, assertion)
        assert replay.status_code == 401, replay.text
        records = await w.service.audit.query()
        assert "client_assertion jti 'swept' was already used" in (records[-1].reason or "")


def test_the_replay_sweep_drops_expired_entries_and_keeps_live_ones() -> None:
    """Mutant: the periodic sweep inverted (drops live entries, keeps expired ones)."""
    now = [1_000_000.0]
    cache = ReplayCache(clock=lambda: now[0], max_entries=3)
    assert cache.check_and_remember("a", "live", now[0] + 600)
    assert cache.check_and_remember("a", "short-1", now[0] + 10)
    assert cache.check_and_remember("a", "short-2", now[0] + 10)
    now[0] += 31  # past the sweep interval: the two short entries have expired
    # a live entry survives the sweep: replaying it is still refused
    assert not cache.check_and_remember("a", "live", now[0] + 600)
    # the expired ones were dropped: the cache (3 at most) has room again
    assert cache.check_and_remember("a", "new-1", now[0] + 600)
    assert cache.check_and_remember("a", "new-2", now[0] + 600)


# -- a verifier's plain AuthenticationError is never an anonymous call ---------------------


class _RefusingVerifier:
    """A custom verifier that refuses with the root authentication error."""

    async def verify(self, token: str, *, audience: str, required_scopes: Any = ()) -> Principal:
        raise AuthenticationError("this verifier refuses every token")


@pytest.fixture
async def refusing_app() -> AsyncIterator[Starlette]:
    agent = EchoAgent(url=AGENT_URL, issuer=ISSUER, token_endpoint=ISSUER + "/token")
    app = create_app(agent, verifier=_RefusingVerifier())
    async with app.router.lifespan_context(app):
        yield app


async def test_any_authentication_failure_is_401_never_anonymous(
    refusing_app: Starlette,
) -> None:
    """Mutant: a verifier raising a plain ``AuthenticationError`` makes the caller
    anonymous, so the agent's anonymous skill runs for a refused token."""
    transport = httpx.ASGITransport(app=refusing_app)
    async with httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as client:
        message = call_message("ping", {"count": 1})
        jsonrpc = await client.post(
            "/", json=rpc("SendMessage", {"message": message}), headers=bearer("a.b.c")
        )
        rest = await client.post(
            "/message:send", json={"message": message}, headers=bearer("a.b.c")
        )
        # without a token at all, the anonymous skill does run
        anonymous = await client.post(
            "/message:send",
            json={"message": message},
            headers={"A2A-Version": "1.0"},
        )
    for response in (jsonrpc, rest):
        assert response.status_code == 401, response.text
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
        assert "pong" not in response.text
    assert anonymous.status_code == 200, anonymous.text
    assert "pong 1" in anonymous.text


# -- a task resumed by a reply is authorized again ------------------------------------------


async def _booking(ctx: Context, city: str) -> str:
    who = await ctx.ask_input(f"Who travels to {city}?")
    return f"booked {city} for {who}"


class _Booker(Agent):
    """A skill that needs a scope and asks a question before it finishes."""

    @skill(scopes=("book",))
    async def book(self, ctx: Context, city: str) -> str:
        return await _booking(ctx, city)


class _StricterBooker(Agent):
    """The same skill, redeployed to need one more scope."""

    @skill(scopes=("book", "pay"))
    async def book(self, ctx: Context, city: str) -> str:
        return await _booking(ctx, city)


@asynccontextmanager
async def _agent_client(
    agent_type: type[Agent], minter: TokenMinter, store: MemoryTaskStore
) -> AsyncIterator[httpx.AsyncClient]:
    agent = agent_type(url=AGENT_URL, issuer=ISSUER, token_endpoint=ISSUER + "/token")
    runtime = TaskRuntime(agent, store=store)  # one store, as two deployments share it
    app = create_app(agent, verifier=minter.verifier(), runtime=runtime)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as client,
    ):
        yield client


async def _start_booking(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    start = {"message": call_message("book", {"city": "Oslo"})}
    started = await client.post("/message:send", json=start, headers=headers)
    assert started.status_code == 200, started.text
    task = started.json()["task"]
    assert task["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"
    return str(task["id"])


def _answer(task_id: str) -> dict[str, Any]:
    return {"message": text_message("alice", taskId=task_id)}


async def test_a_task_resumed_with_a_token_lacking_the_skills_scope_is_refused() -> None:
    """Mutant: a reply resuming an input-required task is not checked against the scopes
    its skill required, so the same user's token without them continues the task."""
    minter = TokenMinter()
    scoped = bearer(minter.token(scopes=("book",)))
    unscoped = bearer(minter.token(scopes=("read",)))  # the same user, without "book"
    async with _agent_client(_Booker, minter, MemoryTaskStore()) as client:
        task_id = await _start_booking(client, scoped)
        rest = await client.post("/message:send", json=_answer(task_id), headers=unscoped)
        jsonrpc = await client.post(
            "/", json=rpc("SendMessage", _answer(task_id)), headers=unscoped
        )
        waiting = await client.get(f"/tasks/{task_id}", headers=scoped)
        done = await client.post("/message:send", json=_answer(task_id), headers=scoped)
    # without the scope its skill required, the task is not even visible (TaskViewer)
    assert rest.status_code == 404, rest.text
    assert rest.json()["error"]["status"] == "NOT_FOUND"
    assert jsonrpc.json()["error"]["code"] == -32001, jsonrpc.text
    # the refused replies changed nothing: the task still waits for an authorized answer
    assert waiting.json()["status"]["state"] == "TASK_STATE_INPUT_REQUIRED", waiting.text
    assert done.json()["task"]["status"]["state"] == "TASK_STATE_COMPLETED", done.text
    assert "booked Oslo for alice" in done.text


async def test_a_task_resumed_after_its_skill_needs_more_scopes_is_refused() -> None:
    """Mutant: the resumed task's skill is not authorized again, so a task started before
    the skill was redeployed to need another scope is resumed without it (the task's
    visibility only checks the scopes the skill needed when the task started)."""
    minter = TokenMinter()
    headers = bearer(minter.token(scopes=("book",)))
    store = MemoryTaskStore()
    async with _agent_client(_Booker, minter, store) as client:
        task_id = await _start_booking(client, headers)
    async with _agent_client(_StricterBooker, minter, store) as client:
        still = await client.get(f"/tasks/{task_id}", headers=headers)
        refused = await client.post("/message:send", json=_answer(task_id), headers=headers)
        waiting = await client.get(f"/tasks/{task_id}", headers=headers)
        full = bearer(minter.token(scopes=("book", "pay")))
        done = await client.post("/message:send", json=_answer(task_id), headers=full)
    assert still.status_code == 200, still.text
    assert still.json()["status"]["state"] == "TASK_STATE_INPUT_REQUIRED", still.text
    assert refused.status_code == 403, refused.text
    challenge = refused.headers["www-authenticate"]
    assert challenge.startswith('Bearer error="insufficient_scope", scope="book pay"')
    assert waiting.json()["status"]["state"] == "TASK_STATE_INPUT_REQUIRED", waiting.text
    assert done.json()["task"]["status"]["state"] == "TASK_STATE_COMPLETED", done.text


# -- client authentication ----------------------------------------------------------------


async def test_an_unknown_client_id_without_credentials_is_invalid_client() -> None:
    """Mutant: an unknown ``client_id`` with no credentials is taken for a public client
    (400 ``unauthorized_client``, and the caller-chosen id lands in the audit)."""
    async with open_world() as w:
        reply = await w.post_token({"grant_type": "client_credentials", "client_id": "nobody"})
        assert reply.status_code == 401, reply.text
        assert reply.json()["error"] == "invalid_client"
        records = await w.service.audit.query()
        assert records[-1].client_id is None  # the unauthenticated id is not recorded


async def test_basic_credentials_and_another_form_client_id_are_refused() -> None:
    """Mutant: HTTP Basic credentials of one client with a form ``client_id`` of another
    are accepted (as either client)."""
    async with open_world() as w:
        basic = base64.b64encode(f"b:{SECRET_B}".encode()).decode()
        reply = await w.post_token(
            {"grant_type": "client_credentials", "client_id": "a"},
            headers={"authorization": f"Basic {basic}"},
        )
        assert reply.status_code == 400, reply.text
        assert reply.json() == {
            "error": "invalid_request",
            "error_description": "client_id differs from the Basic credentials",
        }


# -- keys -------------------------------------------------------------------------------


def test_static_keys_know_a_key_only_by_its_own_kid() -> None:
    """Mutant: ``StaticKeys.known`` ignores the ``kid`` (a withdrawn key stays trusted in
    the verifier's cache)."""
    key = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)
    keys = StaticKeys({ISSUER: {"keys": [key.as_dict(private=False)]}})
    assert keys.known(issuer=ISSUER, kid="k1")
    assert not keys.known(issuer=ISSUER, kid="k2")
    assert not keys.known(issuer=ISSUER, kid=None)
    assert not keys.known(issuer="https://other.test", kid="k1")


@pytest.mark.parametrize("status", [203, 204, 301, 302])
async def test_a_jwks_answer_other_than_200_is_not_a_key_set(status: int) -> None:
    """Mutant: any 2xx or 3xx answer is read as the JWK Set."""
    key = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)
    jwks = {"keys": [key.as_dict(private=False)]}

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=jwks, headers={"location": "https://elsewhere.test/"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        cache = JWKSCache(
            issuers=[TrustedIssuer(ISSUER, jwks_uri=ISSUER + "/jwks.json")],
            http_client=http,
            retries=0,
        )
        with pytest.raises((IssuerUnreachableError, InvalidTokenError)):
            await cache.resolve(issuer=ISSUER, kid="k1", alg="ES256")


# -- subject and actor tokens at the token service ------------------------------------------


def _service_token(w: World, **claims: Any) -> str:
    """A token signed with the service's own key: only its claims are hostile."""
    now = int(w.clock())
    base: dict[str, Any] = {
        "iss": STS_ISSUER,
        "sub": "alice",
        "aud": A,
        "scope": "read write",
        "iat": now - 60,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }
    base.update(claims)
    kept = {name: value for name, value in base.items() if value is not None}
    return str(w.service.keys.current.sign(kept, typ="at+jwt"))


async def test_a_subject_expiring_this_very_second_is_refused() -> None:
    """Mutant: the service's own expiry check ``exp <= now`` weakened to ``exp < now``
    (a token whose last second has come would still be delegated)."""
    async with open_world() as w:
        now = int(w.clock())
        w.clock.now = float(now)
        live = await w.exchange("a", _service_token(w, exp=now + 1), B)
        assert live.status_code == 200, live.text
        ending = await w.exchange("a", _service_token(w, exp=now), B)
        assert ending.status_code == 400, ending.text
        assert ending.json()["error"] == "invalid_request"
        assert "subject_token rejected (expired)" in ending.json()["error_description"]


def _actor_claims(w: World, **over: Any) -> dict[str, Any]:
    return {"aud": STS_ISSUER, "sub": "a", "client_id": "a", "scope": None, **over}


async def test_an_actor_token_must_name_the_client_in_sub_and_client_id() -> None:
    """Mutant: the actor-token binding checks ``sub`` only, not ``client_id``."""
    async with open_world() as w:
        subject = _service_token(w)
        own = _service_token(w, **_actor_claims(w))
        ok = await w.exchange("a", subject, B, actor_token=own, actor_token_type=AT)
        assert ok.status_code == 200, ok.text
        borrowed = _service_token(w, **_actor_claims(w, client_id="c"))
        refused = await w.exchange("a", subject, B, actor_token=borrowed, actor_token_type=AT)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"] == "invalid_request"
        assert "actor_token names agent 'a'" in refused.json()["error_description"]


async def test_an_actor_token_may_not_bring_an_act_chain_of_its_own() -> None:
    """Mutant: the actor token's own ``act`` claim is accepted (actors it names would
    enter the chain unchecked)."""
    async with open_world() as w:
        chained = _service_token(w, **_actor_claims(w, act={"sub": "c"}))
        refused = await w.exchange(
            "a", _service_token(w), B, actor_token=chained, actor_token_type=AT
        )
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"] == "invalid_request"
        assert "actor_token rejected" in refused.json()["error_description"]


# -- the token is asked for the target's RFC 9728 resource, not its URL --------------------


async def test_a_dependency_token_is_asked_for_the_targets_resource_not_its_url() -> None:
    """Mutant: ``AgentHandle`` requests the token for the dependency's URL instead of the
    ``resource`` its RFC 9728 metadata names. Collector is mounted under a path and its
    resource (the URL it was configured with) ends in ``/``; the dependency handle strips
    that ``/`` from the URL it calls, so only the metadata's ``resource`` is registered at
    the token service and accepted as the audience."""
    collector_url = "http://127.0.0.1:9103/agents/collector/"
    agents = chain_agents(c_url=collector_url)
    sts = LocalTokenService(agents=agents.all)
    async with open_local_agents(sts, agents.all) as net:
        # Serve Collector's app under its mount path, as a parent application would.
        parent = Starlette()
        parent.router.routes.append(AgentMount("/agents/collector", net.apps[collector_url]))
        net.router.add(collector_url, httpx.ASGITransport(app=parent))
        token = sts.mint_user_token("alice", audience=agents.front, scopes=USER_SCOPES)
        async with net.client(agents.front, token=token) as client:
            result = await client.call("start")
        collector = result["below"]["below"]
        assert collector["aud"] == [collector_url]
        assert collector["actors"] == ["middle", "front"]
        records = await sts.audit(txn=collector["txn"])
        assert [r.target for r in records if r.decision == "issued"][-1] == collector_url
