"""Helpers for the server tests: a token minter, a verifier and a small test agent.

Tokens are minted here with joserfc (ES256, ``typ`` ``at+jwt``) and verified by the real
token layer (``TokenVerifier`` over static keys), so the server is exercised end to end.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import anyio
from joserfc import jwt
from joserfc.jwk import ECKey

from keycard_agents import Agent, Context, skill
from keycard_agents.auth import StaticKeys, TokenVerifier

ISSUER = "https://issuer.test"
AGENT_URL = "http://agent.test"
A2A_HEADERS = {"A2A-Version": "1.0"}


class TokenMinter:
    """Signs access tokens for the test issuer."""

    def __init__(self, issuer: str = ISSUER, *, kid: str = "test-key") -> None:
        self.issuer = issuer
        self.kid = kid
        self.key = ECKey.generate_key("P-256", parameters={"kid": kid}, private=True)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.key.as_dict(private=False)]}

    def verifier(self) -> TokenVerifier:
        return TokenVerifier(issuers=[self.issuer], keys=StaticKeys({self.issuer: self.jwks()}))

    def token(
        self,
        *,
        sub: str = "alice",
        aud: str = AGENT_URL,
        scopes: tuple[str, ...] = (),
        lifetime: int = 300,
        typ: str = "at+jwt",
        **extra: Any,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": sub,
            "aud": aud,
            "iat": now,
            "exp": now + lifetime,
            "jti": uuid.uuid4().hex,
            "scope": " ".join(scopes),
            **extra,
        }
        header = {"alg": "ES256", "kid": self.kid, "typ": typ}
        return jwt.encode(header, claims, self.key, algorithms=["ES256"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **A2A_HEADERS}


class EchoAgent(Agent):
    """Echoes text back; a few extra skills exercise the server's paths."""

    name = "Echo"
    description = "Echoes what you say."
    version = "1.2.3"

    release: anyio.Event | None = None

    @skill(tags=("text",), examples=("hello",))
    async def echo(self, text: str) -> str:
        """Say it back."""
        return f"echo: {text}"

    @skill(id="wait")
    async def wait(self, ctx: Context, label: int) -> str:
        """Work until cancelled (or released)."""
        await ctx.update(f"waiting {label}")
        await anyio.sleep_forever()
        return "never"

    @skill(id="admin", scopes=("admin",))
    async def admin(self, action: int) -> str:
        """Needs the admin scope."""
        return f"done {action}"

    @skill(id="ping", anonymous=True)
    async def ping(self, count: int) -> str:
        """Anyone may ping."""
        return f"pong {count}"

    @skill(id="explode")
    async def explode(self, code: int) -> str:
        """A bug in a skill."""
        raise RuntimeError(f"internal detail {code} /etc/secret-path")


def text_message(text: str, **fields: Any) -> dict[str, Any]:
    return {
        "messageId": uuid.uuid4().hex,
        "role": "ROLE_USER",
        "parts": [{"text": text}],
        **fields,
    }


def call_message(skill_id: str, arguments: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "messageId": uuid.uuid4().hex,
        "role": "ROLE_USER",
        "parts": [{"data": {"skill": skill_id, "arguments": arguments}}],
        **fields,
    }


def rpc(method: str, params: dict[str, Any] | None = None, *, id: Any = 1) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        body["params"] = params
    return body
