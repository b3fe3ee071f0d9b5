"""The demo's third-party hop: alice's calendar, reached through a connection.

A calendar provider (a second embedded token service, playing a third-party OAuth
provider: authorization code + PKCE, RFC 8414 metadata) issues tokens for a calendar API
that accepts only its tokens. The demo's token service has a ``calendar`` connection to
it; the weather agent reads alice's calendar with her own calendar token. :func:`connect`
is alice's browser connecting her calendar, each step printed as it happens.
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from keycard_agents._demo._signin import DemoStepError
from keycard_agents._errors import AuthenticationError
from keycard_agents._oauth._verifier import TokenVerifier
from keycard_agents._sts._app import TokenService
from keycard_agents._sts._config import (
    ConnectionConfig,
    DevUser,
    PublicClient,
    RegisteredAgent,
    TokenServiceConfig,
)
from keycard_agents._sts._secrets import hash_client_secret, hash_secret, new_client_secret

__all__ = ["CALENDAR_SCOPES", "calendar_api", "calendar_connection", "calendar_provider", "connect"]

CALENDAR_SCOPES = ("calendar.read",)
_CLIENT_ID = "demo-token-service"  # our token service, as a client of the provider
_BUSY = ["Tue 10:00 dentist", "Thu 18:30 book club"]


def calendar_provider(*, issuer: str, api: str, callback: str, password: str) -> TokenService:
    """The provider: alice has an account; our token service is a public PKCE client."""
    config = TokenServiceConfig(
        issuer=issuer,
        agents=(
            RegisteredAgent(
                client_id="calendar-api",
                resource=api,
                auth="client_secret",
                secret_hash=hash_client_secret(new_client_secret()),
                scopes=CALENDAR_SCOPES,
            ),
        ),
        users=(
            DevUser(
                username="alice",
                password_hash=hash_secret(password, cost=2**12),
                scopes=CALENDAR_SCOPES,
            ),
        ),
        clients=(PublicClient(client_id=_CLIENT_ID, redirect_uris=(callback,)),),
    )
    return TokenService(config)


def calendar_connection(*, provider: str, api: str) -> ConnectionConfig:
    """The demo token service's connection to the provider (found by RFC 8414 discovery)."""
    return ConnectionConfig(
        name="calendar",
        display_name="Calendar",
        issuer=provider,
        client_id=_CLIENT_ID,
        client_auth="none",
        scopes=CALENDAR_SCOPES,
        resources=(api,),
        upstream_resource=api,
    )


def calendar_api(*, api: str, provider: str) -> Starlette:
    """``GET /busy``: the caller's busy slots, for a provider token addressed to this API."""
    verifier = TokenVerifier(issuers=[provider])

    async def busy(request: Request) -> JSONResponse:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        try:
            principal = await verifier.verify(
                header[7:], audience=api, required_scopes=["calendar.read"]
            )
        except AuthenticationError:
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        return JSONResponse({"owner": principal.user, "busy": _BUSY})

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await verifier.aclose()  # its HTTP client for the provider's keys

    return Starlette(routes=[Route("/busy", busy)], lifespan=lifespan)


def _expect(reply: httpx.Response, status: int, step: str) -> httpx.Response:
    if reply.status_code != status:
        raise DemoStepError(f"connecting the calendar: {step} answered HTTP {reply.status_code}")
    return reply


async def connect(
    *,
    url: str,
    issuer: str,
    password: str,
    provider_password: str,
    say: Callable[[str], Any],
) -> None:
    """alice follows ``url`` (the connect page the task handed out) in a fresh browser."""
    base = issuer.rstrip("/")
    async with httpx.AsyncClient(timeout=10.0) as browser:
        say("  1. she opens the link and signs in to the token service")
        page = _expect(await browser.get(url), 200, "opening the link")
        found = re.findall(r"name='(next|login_csrf)' value='([^']*)'", page.text)
        form = {name: html.unescape(value) for name, value in found}
        signin = await browser.post(
            f"{base}/connections/signin",
            data={"username": "alice", "password": password, **form},
        )
        _expect(signin, 303, "signing in to the token service")
        start = _expect(await browser.get(url), 303, "opening the connect page")
        location = start.headers["location"]
        say(
            "  2. the token service sends her to the calendar provider: authorization code, "
            "PKCE S256, state bound to her sign-in"
        )
        _expect(await browser.get(location), 200, "opening the provider's sign-in page")
        params = dict(parse_qsl(urlsplit(location).query))
        provider = location.split("?", 1)[0]
        say("  3. she signs in at the calendar provider and approves calendar.read")
        approved = await browser.post(
            provider, data={**params, "username": "alice", "password": provider_password}
        )
        callback = _expect(approved, 303, "signing in at the provider").headers["location"]
        done = await browser.get(callback)
        _expect(done, 200, "returning to the token service")
        say(
            "  4. back at the token service: code redeemed with the PKCE verifier, her "
            "calendar token sealed in the vault (AES-256-GCM)"
        )
