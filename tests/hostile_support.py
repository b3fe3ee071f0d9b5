"""A small world to attack: a token service, a trusted identity provider and agent beta.

Used by ``test_hostile_agents.py`` (the table of hostile inputs) and the property-based
fuzzing in ``test_fuzz_parsers.py``. Everything is real: the embedded token service
issues every delegated token by RFC 8693 exchange over HTTP, agent beta is the ASGI app
``create_app`` builds, and requests travel through ``httpx.ASGITransport``.

Agents registered at the token service (all with client secrets, except delta):

- alpha and gamma call beta; beta calls alpha (so A → B → A can be attempted) and
  epsilon (a legitimate second hop);
- delta authenticates with ``private_key_jwt`` (client assertions).

Beta's skills: ``ask`` (scope ``notes.read``) waits for input, ``write`` (scope
``notes.write``) completes, ``whoami`` (``notes.read``) tells the user it sees, and
``ping`` is anonymous.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from joserfc import jws

from keycard_agents import Agent, Context, create_app, skill
from keycard_agents.auth import SigningKey, TokenVerifier
from keycard_agents.sts import TokenService, hash_client_secret, parse_config

STS = "https://sts.hostile.test"
IDP = "https://idp.hostile.test"
ALPHA = "https://alpha.hostile.test"
BETA = "https://beta.hostile.test"
GAMMA = "https://gamma.hostile.test"
DELTA = "https://delta.hostile.test"
EPSILON = "https://epsilon.hostile.test"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
A2A = {"A2A-Version": "1.0"}
SCOPES = ("notes.read", "notes.write")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def secret_of(client_id: str) -> str:
    # A generated-strength secret (256 bits), so the service logs no weak-secret warning
    # next to the one line each refusal may log.
    return b64(hashlib.sha256(f"{client_id}-secret-for-hostile-tests".encode()).digest())


def nested(depth: int, opener: str = "[", closer: str = "]", inner: str = "1") -> str:
    """JSON text nested ``depth`` levels deep (built as text: json.dumps would recurse)."""
    return opener * depth + inner + closer * depth


class Beta(Agent):
    name = "beta"
    description = "A notes agent that hostile callers attack."

    @skill(scopes=["notes.read"])
    async def ask(self, ctx: Context, topic: str) -> str:
        """Waits for the user's answer (INPUT_REQUIRED)."""
        answer = await ctx.ask_input(f"What about {topic}?")
        return f"{topic}: {answer}"

    @skill(scopes=["notes.write"])
    async def write(self, ctx: Context, text: str) -> str:
        """Stores a note."""
        return f"noted: {text}"

    @skill(scopes=["notes.read"])
    async def whoami(self, ctx: Context) -> dict[str, Any]:
        """The user as this agent sees it."""
        assert ctx.user is not None
        return {"sub": ctx.user.sub, "origin": ctx.user.issuer}

    @skill(anonymous=True)
    async def ping(self, ctx: Context) -> str:
        """Anonymous."""
        return "pong"


def _config(delta_key: SigningKey) -> Any:
    def agent(client_id: str, resource: str, deps: list[str], **more: Any) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "client_id": client_id,
            "resource": resource,
            "scopes": list(SCOPES),
            "dependencies": deps,
        }
        if "jwks" not in more:
            entry.update(auth="client_secret", secret_hash=hash_client_secret(secret_of(client_id)))
        entry.update(more)
        return entry

    return parse_config(
        {
            "issuer": STS,
            "allow_repeated_agents": False,
            "trusted_issuers": [{"issuer": IDP, "jwks_uri": f"{IDP}/jwks.json"}],
            "agents": [
                agent("alpha", ALPHA, [BETA]),
                agent("beta", BETA, [ALPHA, EPSILON]),
                agent("epsilon", EPSILON, []),
                agent("gamma", GAMMA, [BETA]),
                agent(
                    "delta",
                    DELTA,
                    [BETA],
                    auth="private_key_jwt",
                    jwks={"keys": [delta_key.public_jwk()]},
                ),
            ],
        }
    )


@dataclass
class World:
    """The running world, and tokens and tasks made for the attacks."""

    service: TokenService
    idp_key: SigningKey
    delta_key: SigningKey
    sts: httpx.AsyncClient
    beta: httpx.AsyncClient
    mcp: httpx.AsyncClient
    tokens: dict[str, str] = field(default_factory=dict)
    tasks: dict[str, str] = field(default_factory=dict)
    started: dict[str, set[str]] = field(default_factory=dict)  # task ids by who started them
    recorder: Any = None  # beta's own audit trail (an AuditRecorder)

    # -- tokens ---------------------------------------------------------------------

    def user_token(self, user: str, *, audience: str, scopes: tuple[str, ...] = SCOPES) -> str:
        return self.service.issue_user_token(user, audience=audience, scopes=scopes)

    def idp_claims(self, **over: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": IDP,
            "sub": "alice",
            "aud": ALPHA,
            "scope": " ".join(SCOPES),
            "iat": now,
            "exp": now + 600,
            "jti": uuid.uuid4().hex,
        }
        claims.update(over)
        return {k: v for k, v in claims.items() if v is not None}

    def idp_token(self, **over: Any) -> str:
        return str(self.idp_key.sign(self.idp_claims(**over), typ="at+jwt"))

    def sts_claims(self, **over: Any) -> dict[str, Any]:
        """Claims of a delegated token for beta, as if alpha had exchanged for alice."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": STS,
            "sub": "alice",
            "aud": BETA,
            "scope": " ".join(SCOPES),
            "client_id": "alpha",
            "act": {"sub": "alpha", "iss": STS},
            "sub_id": {"format": "iss_sub", "iss": STS, "sub": "alice"},
            "txn": uuid.uuid4().hex,
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
        }
        claims.update(over)
        return {k: v for k, v in claims.items() if v is not None}

    def sts_signed(self, typ: str = "at+jwt", **over: Any) -> str:
        """Signed with the token service's real key: only the claims are hostile."""
        return self.service.keys.current.sign(self.sts_claims(**over), typ=typ)

    def sts_signed_raw(self, payload: bytes, header: Mapping[str, Any] | None = None) -> str:
        """A real signature over arbitrary payload bytes (JSON json.dumps cannot write)."""
        key = self.service.keys.current
        head = {"alg": key.alg, "kid": key.kid, "typ": "at+jwt", **(header or {})}
        return jws.serialize_compact(head, payload, key.key, algorithms=[key.alg])

    def idp_signed_raw(self, payload: bytes) -> str:
        key = self.idp_key
        head = {"alg": key.alg, "kid": key.kid, "typ": "at+jwt"}
        return jws.serialize_compact(head, payload, key.key, algorithms=[key.alg])

    def assertion(self, **over: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": "delta",
            "sub": "delta",
            "aud": STS,
            "iat": now,
            "exp": now + 60,
            "jti": uuid.uuid4().hex,
        }
        claims.update(over)
        return str(self.delta_key.sign(claims, typ="client-authentication+jwt"))

    def delta_signed_raw(self, payload: bytes) -> str:
        key = self.delta_key
        head = {"alg": key.alg, "kid": key.kid, "typ": "client-authentication+jwt"}
        return jws.serialize_compact(head, payload, key.key, algorithms=[key.alg])

    async def exchange(
        self, client_id: str, subject: str, resource: str, **more: str
    ) -> httpx.Response:
        form = {
            "grant_type": EXCHANGE,
            "subject_token": subject,
            "subject_token_type": ACCESS,
            "resource": resource,
            **more,
        }
        if "client_assertion" not in more:
            form.update(client_id=client_id, client_secret=secret_of(client_id))
        return await self.sts.post("/token", data=form)

    async def delegated(self, client_id: str, subject: str, resource: str, **more: str) -> str:
        reply = await self.exchange(client_id, subject, resource, **more)
        assert reply.status_code == 200, reply.text
        return str(reply.json()["access_token"])

    # -- calling beta ---------------------------------------------------------------

    def headers(self, who: str | None, **more: str) -> dict[str, str]:
        headers = {**A2A, **more}
        if who is not None:
            headers["Authorization"] = f"Bearer {self.tokens.get(who, who)}"
        return headers

    async def rpc(
        self, method: str, params: Any, *, who: str | None = "alice", body: bytes | None = None
    ) -> httpx.Response:
        content = body
        if content is None:
            request = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
            content = json.dumps(request).encode()
        headers = self.headers(who, **{"Content-Type": "application/json"})
        return await self.beta.post("/", content=content, headers=headers)

    async def rest(
        self,
        method: str,
        path: str,
        *,
        who: str | None = "alice",
        json_body: Any = None,
        body: bytes | None = None,
        content_type: str = "application/a2a+json",
    ) -> httpx.Response:
        content = body
        if content is None and json_body is not None:
            content = json.dumps(json_body).encode()
        headers = self.headers(who)
        if content is not None:
            headers["Content-Type"] = content_type
        return await self.beta.request(method, path, content=content, headers=headers)

    async def start(self, skill_id: str, who: str | None, **arguments: Any) -> dict[str, Any]:
        reply = await self.rpc("SendMessage", send_params(skill_id, **arguments), who=who)
        body = reply.json()
        assert "result" in body, body
        task = dict(body["result"]["task"])
        self.started.setdefault(str(who), set()).add(task["id"])
        return task


def send_params(skill_id: str, *, task_id: str | None = None, **arguments: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "messageId": uuid.uuid4().hex,
        "role": "ROLE_USER",
        "parts": [{"data": {"skill": skill_id, "arguments": arguments}}],
    }
    if task_id is not None:
        message = {**message, "taskId": task_id, "parts": [{"text": "an answer"}]}
    return {"message": message}


@asynccontextmanager
async def _open_mcp(agent: Agent, verifier: TokenVerifier) -> AsyncIterator[httpx.AsyncClient]:
    """Beta's skills as MCP tools at ``BETA/mcp`` (streamable HTTP, the ``mcp`` SDK)."""
    from keycard_agents.mcp import create_mcp_server, mcp_app

    server = create_mcp_server(agent, resource=f"{BETA}/mcp", verifier=verifier, issuer=STS)
    app = mcp_app(server, json_response=True, stateless_http=True)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BETA) as client:
            yield client


@asynccontextmanager
async def open_world() -> AsyncIterator[World]:
    """Start the world and make the tokens and tasks the attacks aim at.

    Tokens (``world.tokens``): ``alice`` (local alice through alpha, both scopes),
    ``alice_idp`` (alice of the identity provider through alpha), ``alice_gamma``
    (local alice through gamma), ``alice_direct`` (local alice calling beta herself),
    ``alice_narrow`` (local alice through alpha with ``notes.read`` only), ``bob``
    (local bob through alpha). Tasks (``world.tasks``): alice's ``ask`` (waiting for
    input), ``write`` (completed), and an anonymous ``ping``.
    """
    idp_key = SigningKey.generate("ES256")
    delta_key = SigningKey.generate("ES256")

    def idp(request: httpx.Request) -> httpx.Response:
        if str(request.url) == f"{IDP}/jwks.json":
            return httpx.Response(200, json={"keys": [idp_key.public_jwk()]})
        return httpx.Response(404)

    async with AsyncExitStack() as stack:
        idp_http = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.MockTransport(idp))
        )
        service = TokenService(_config(delta_key), http_client=idp_http)
        await stack.enter_async_context(service.app.router.lifespan_context(service.app))
        sts = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app), base_url=STS)
        )
        agent = Beta(url=BETA, issuer=STS, token_endpoint=f"{STS}/token")
        verifier = TokenVerifier(issuers=[STS], keys=service.keys.resolver(STS))
        app = create_app(agent, verifier=verifier)
        await stack.enter_async_context(app.router.lifespan_context(app))
        beta = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BETA)
        )
        mcp = await stack.enter_async_context(_open_mcp(agent, verifier))
        world = World(
            service=service, idp_key=idp_key, delta_key=delta_key, sts=sts, beta=beta, mcp=mcp
        )
        world.recorder = app.state.keycard_recorder
        user = world.user_token
        world.tokens.update(
            alice=await world.delegated("alpha", user("alice", audience=ALPHA), BETA),
            alice_idp=await world.delegated("alpha", world.idp_token(), BETA),
            alice_gamma=await world.delegated("gamma", user("alice", audience=GAMMA), BETA),
            alice_direct=user("alice", audience=BETA),
            alice_narrow=await world.delegated(
                "alpha", user("alice", audience=ALPHA), BETA, scope="notes.read"
            ),
            bob=await world.delegated("alpha", user("bob", audience=ALPHA), BETA),
        )
        world.tasks["ask"] = (await world.start("ask", "alice", topic="rent"))["id"]
        world.tasks["write"] = (await world.start("write", "alice", text="secret"))["id"]
        world.tasks["ping"] = (await world.start("ping", None))["id"]
        yield world
