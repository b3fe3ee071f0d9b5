"""A third-party provider and API for the connections tests, all real and on loopback.

:func:`run_upstream` starts npm ``oidc-provider`` (``tests/interop_oidc/upstream.mjs``)
as the upstream OAuth server: authorization code + PKCE, JWT access tokens for one API,
rotating refresh tokens, RFC 7009 revocation. :func:`api_app` is the API: it accepts
only that provider's access tokens for itself. :func:`connect` plays the user's browser
through our connections pages and the provider's own sign-in and consent pages.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from oidc_issuer import NODE, START_TIMEOUT, ensure_installed, requires_node, run_node_script
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

__all__ = [
    "Upstream",
    "api_app",
    "connect",
    "requires_node",
    "run_upstream",
    "sign_in_connections",
    "start_connect",
]

CLIENT_ID = "keycard-sts"
UPSTREAM_SCOPE = "repo read:user"


@dataclass
class Upstream:
    issuer: str
    client_secret: str = field(repr=False)
    process: subprocess.Popen[str] = field(repr=False)
    log_path: Path = field(repr=False)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def refreshes(self) -> int:
        """Refresh grants the provider completed (counted by the provider itself)."""
        return int(httpx.get(self.issuer + "/test/refreshes", timeout=10).json()["refreshes"])

    def jwks(self) -> dict[str, Any]:
        return dict(httpx.get(self.issuer + "/jwks", timeout=10).json())


@contextlib.contextmanager
def run_upstream(
    *, redirect_uri: str, api: str, access_ttl: int = 600, start_timeout: float = START_TIMEOUT
) -> Iterator[Upstream]:
    assert NODE is not None
    ensure_installed()
    secret = os.urandom(24).hex()
    config = {
        "client": {"client_id": CLIENT_ID, "client_secret": secret, "redirect_uri": redirect_uri},
        "api": api,
        "scope": UPSTREAM_SCOPE,
        "access_ttl": access_ttl,
    }
    with run_node_script("upstream.mjs", config, start_timeout) as (started, process, log_path):
        yield Upstream(started["issuer"], secret, process, log_path)


def api_app(*, issuer: str, audience: str, jwks: dict[str, Any]) -> Starlette:
    """``GET /user``: 200 with the token's subject and scopes for a valid provider token
    addressed to this API; 401 for anything else (no token, another issuer's, expired)."""
    keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    calls: list[str] = []

    async def user(request: Request) -> JSONResponse:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        try:
            token = jwt.decode(header[7:], keys, algorithms=["ES256"])
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": issuer},
                aud={"essential": True, "value": audience},
                exp={"essential": True},
            ).validate(token.claims)
        except (JoseError, ValueError):
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        if token.header.get("typ") != "at+jwt":
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        calls.append(str(token.claims["sub"]))
        return JSONResponse({"login": token.claims["sub"], "scope": token.claims.get("scope")})

    app = Starlette(routes=[Route("/user", user)])
    app.state.calls = calls
    return app


async def sign_in_connections(
    browser: httpx.AsyncClient, sts: str, *, user: str, password: str
) -> httpx.Response:
    """Open the connections page (its sign-in form sets the login CSRF cookie), sign in."""
    page = await browser.get(f"{sts}/connections")
    assert page.status_code == 200, page.text
    token = re.search(r"name='login_csrf' value='([^']+)'", page.text)
    assert token is not None, page.text
    return await browser.post(
        f"{sts}/connections/signin",
        data={"username": user, "password": password, "login_csrf": token.group(1)},
    )


async def start_connect(
    browser: httpx.AsyncClient,
    sts: str,
    connection: str,
    *,
    user: str,
    password: str,
    url: str | None = None,
) -> str:
    """Sign in on our connections page and start connecting (at ``url`` when given: the
    link an agent or the token service handed out); returns the provider URL."""
    signin = await sign_in_connections(browser, sts, user=user, password=password)
    assert signin.status_code == 303, signin.text
    started = await browser.get(url or f"{sts}/connections/{connection}/connect")
    assert started.status_code == 303, started.text
    return str(started.headers["location"])


async def through_provider(browser: httpx.AsyncClient, location: str, *, user: str) -> str:
    """Sign in and consent at the provider; returns our callback URL with code and state."""
    pages = 0
    while "/connections/callback" not in location:
        pages += 1
        assert pages <= 8, "the provider's sign-in did not finish within eight pages"
        page = await browser.get(location)
        if page.status_code in (302, 303):
            location = str(page.url.join(page.headers["location"]))
            continue
        assert page.status_code == 200, page.text[:500]
        action = re.search(r'<form[^>]*action="([^"]+)"', page.text)
        prompt = re.search(r'name="prompt" value="([^"]+)"', page.text)
        assert action is not None, page.text[:500]
        assert prompt is not None, page.text[:500]
        form = {"prompt": prompt.group(1)}
        if prompt.group(1) == "login":
            form.update(login=user, password="any password")
        reply = await browser.post(str(page.url.join(action.group(1))), data=form)
        assert reply.status_code in (302, 303), reply.text[:500]
        location = str(reply.url.join(reply.headers["location"]))
    return location


async def connect(
    browser: httpx.AsyncClient,
    sts: str,
    connection: str,
    *,
    user: str,
    password: str,
    url: str | None = None,
) -> httpx.Response:
    """The whole connect flow as a browser; returns our final page."""
    location = await start_connect(browser, sts, connection, user=user, password=password, url=url)
    callback = await through_provider(browser, location, user=user)
    return await browser.get(callback)
