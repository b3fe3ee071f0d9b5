"""``keycard-agents demo``: one delegation chain, end to end, over real HTTP.

Starts the token service on a free loopback port, signs the demo user in through
the authorization endpoint with PKCE (RFC 6749 §4.1, RFC 7636), gets the planner's
own token (client credentials, RFC 7523 client assertion), exchanges twice
(RFC 8693, ``act`` nesting) and verifies each token as its receiver would. Prints
claims and chains, never a raw token.
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import uvicorn

from keycard_agents._errors import KeycardError
from keycard_agents._keys import SigningKey
from keycard_agents._principal import Principal
from keycard_agents._tokens import CLIENT_ASSERTION_TYPE, TokenVerifier, TrustedIssuer

from ._app import TokenService
from ._authorize import pkce_challenge
from ._config import parse_config
from ._secrets import hash_secret

__all__ = ["run_demo"]

PLANNER = "https://planner.demo.example/"
CALENDAR = "https://calendar.demo.example/"
CALENDAR_API = "https://calendar-api.demo.example/"
_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
_ACCESS = "urn:ietf:params:oauth:token-type:access_token"
_JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class _DemoFailed(KeycardError):
    pass


def _demo_service(issuer: str, planner_key: SigningKey, calendar_secret: str) -> TokenService:
    config = parse_config(
        {
            "issuer": issuer,
            "agents": [
                {
                    "client_id": "planner",
                    "resource": PLANNER,
                    "auth": "private_key_jwt",
                    "jwks": {"keys": [planner_key.public_jwk()]},
                    "scopes": ["calendar.read", "calendar.write", "mail.send"],
                    "dependencies": [CALENDAR],
                },
                {
                    "client_id": "calendar",
                    "resource": CALENDAR,
                    "auth": "client_secret",
                    "secret_hash": hash_secret(calendar_secret),
                    "scopes": ["calendar.read", "calendar.write"],
                    "dependencies": [CALENDAR_API],
                    "may_act_first": False,
                },
            ],
            "resources": [{"resource": CALENDAR_API, "scopes": ["calendar.read"]}],
            "users": [
                {
                    "username": "alice",
                    "password": "demo-password",
                    "scopes": ["calendar.read", "calendar.write"],
                }
            ],
            "clients": [{"client_id": "demo-app", "redirect_uris": [f"{issuer}/callback"]}],
        },
        source="demo",
    )
    return TokenService(config)


def _expect(reply: httpx.Response, status: int, what: str) -> httpx.Response:
    if reply.status_code != status:
        detail = reply.text[:300]
        raise _DemoFailed(f"demo step '{what}' got HTTP {reply.status_code}: {detail}")
    return reply


def _show(title: str, principal: Principal, receiver: str) -> None:
    print(f"\n== {title}")
    print(f"   chain : {principal.render_chain(receiver=receiver)}")
    print(f"   scopes: {' '.join(sorted(principal.scopes))}")
    claims = json.dumps(dict(principal.claims), indent=2, sort_keys=True)
    print("   claims: " + claims.replace("\n", "\n   "))


async def _drive(
    issuer: str, service: TokenService, planner_key: SigningKey, calendar_secret: str
) -> None:
    async with httpx.AsyncClient(base_url=issuer, timeout=10.0) as http:
        meta = _expect(await http.get("/.well-known/oauth-authorization-server"), 200, "metadata")
        print(f"token service: {meta.json()['issuer']}")
        verifier_for = TokenVerifier(
            issuers=[TrustedIssuer(issuer, jwks_uri=meta.json()["jwks_uri"])], http_client=http
        )

        # 1. alice signs in to the demo app, for the planner (authorization code + PKCE)
        code_verifier = secrets.token_urlsafe(48)
        state = secrets.token_urlsafe(8)
        params = {
            "response_type": "code",
            "client_id": "demo-app",
            "redirect_uri": f"{issuer}/callback",
            "code_challenge": pkce_challenge(code_verifier),
            "code_challenge_method": "S256",
            "resource": PLANNER,
            "scope": "calendar.read calendar.write",
            "state": state,
        }
        _expect(await http.get("/authorize", params=params), 200, "login page")
        login = await http.post(
            "/authorize", data={**params, "username": "alice", "password": "demo-password"}
        )
        query = parse_qs(urlsplit(_expect(login, 303, "sign in").headers["location"]).query)
        if query.get("state") != [state] or "code" not in query:
            raise _DemoFailed("sign-in redirect carried no code or the wrong state")
        reply = await http.post(
            "/token",
            data={
                "grant_type": "authorization_code",
                "code": query["code"][0],
                "redirect_uri": f"{issuer}/callback",
                "client_id": "demo-app",
                "code_verifier": code_verifier,
            },
        )
        user_token = _expect(reply, 200, "redeem code").json()["access_token"]
        _show(
            "alice's token, received by planner",
            await verifier_for.verify(user_token, audience=PLANNER),
            "planner",
        )

        # 2. the planner proves who it is: its own token (client credentials)
        def assertion() -> str:
            now = int(time.time())
            claims = {
                "iss": "planner",
                "sub": "planner",
                "aud": issuer,
                "iat": now,
                "exp": now + 60,
                "jti": uuid.uuid4().hex,
            }
            return planner_key.sign(claims, typ=CLIENT_ASSERTION_TYPE)

        reply = await http.post(
            "/token",
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": _JWT_BEARER,
                "client_assertion": assertion(),
            },
        )
        actor_token = _expect(reply, 200, "planner client credentials").json()["access_token"]

        # 3. hop 1: planner -> calendar (token exchange with an actor token)
        reply = await http.post(
            "/token",
            data={
                "grant_type": _EXCHANGE,
                "subject_token": user_token,
                "subject_token_type": _ACCESS,
                "actor_token": actor_token,
                "actor_token_type": _ACCESS,
                "resource": CALENDAR,
                "client_assertion_type": _JWT_BEARER,
                "client_assertion": assertion(),
            },
        )
        calendar_token = _expect(reply, 200, "exchange planner -> calendar").json()["access_token"]
        at_calendar = await verifier_for.verify(calendar_token, audience=CALENDAR)
        _show("delegated token, received by calendar", at_calendar, "calendar")

        # 4. hop 2: calendar -> calendar API (client secret), narrowed to read
        reply = await http.post(
            "/token",
            data={
                "grant_type": _EXCHANGE,
                "subject_token": calendar_token,
                "subject_token_type": _ACCESS,
                "resource": CALENDAR_API,
                "scope": "calendar.read",
            },
            auth=("calendar", calendar_secret),
        )
        api_token = _expect(reply, 200, "exchange calendar -> API").json()["access_token"]
        at_api = await verifier_for.verify(api_token, audience=CALENDAR_API)
        _show("delegated token, received by the calendar API", at_api, "calendar-api")

        print(f"\ndelegation chain: {at_calendar.render_chain(receiver='calendar')}")
        print(f"full path:        {at_api.render_chain(receiver='calendar-api')}")
        print(f"\naudit trail (txn {at_api.txn}):")
        for record in await service.audit.query(txn=at_api.txn):
            actors = " ← ".join(record.actors or ()) or "-"
            scopes = " ".join(record.scopes_granted or ())
            grant = (record.grant_type or "-").rsplit(":", 1)[-1]
            print(
                f"  {record.decision:6} {grant:18} actors={actors:18} "
                f"target={record.target} scopes={scopes}"
            )


def run_demo() -> int:
    """Run the demo; returns the exit code (0 on success)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    issuer = f"http://127.0.0.1:{port}"
    planner_key = SigningKey.generate("ES256")
    calendar_secret = secrets.token_urlsafe(24)
    service = _demo_service(issuer, planner_key, calendar_secret)
    server = uvicorn.Server(
        uvicorn.Config(service.app, log_level="warning", access_log=False, lifespan="on")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15.0
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise _DemoFailed("the demo token service did not start")
            time.sleep(0.02)
        anyio.run(_drive, issuer, service, planner_key, calendar_secret)
    finally:
        server.should_exit = True
        thread.join(timeout=10.0)
        sock.close()
    print("\ndemo finished: token service stopped")
    return 0
