"""The demo user's sign-in: authorization code with PKCE, driven over real HTTP.

RFC 6749 §4.1 (authorization code grant) with RFC 7636 PKCE (``S256``) and an RFC 8707
``resource`` parameter, against the token service's ``/authorize`` and ``/token``
endpoints. The demo plays both the browser (it posts the sign-in form) and the client
app (it redeems the code). Returns the access token; never prints it.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from urllib.parse import parse_qs, urlsplit

import httpx

from keycard_agents._errors import KeycardError
from keycard_agents._oauth._pkce import pkce_challenge

__all__ = ["DemoStepError", "sign_in"]


class DemoStepError(KeycardError):
    """A step of the demo got an answer it did not expect."""


def _expect(reply: httpx.Response, status: int, step: str) -> httpx.Response:
    if reply.status_code != status:
        try:
            body = reply.json()
            detail = f"{body.get('error')}: {body.get('error_description')}"
        except ValueError:
            detail = f"HTTP {reply.status_code}"
        raise DemoStepError(f"demo step '{step}' failed with HTTP {reply.status_code} ({detail})")
    return reply


async def sign_in(
    http: httpx.AsyncClient,
    *,
    issuer: str,
    client_id: str,
    redirect_uri: str,
    username: str,
    password: str,
    resource: str,
    scopes: Sequence[str],
) -> str:
    """Sign ``username`` in for ``resource``; returns the user's access token."""
    base = issuer.rstrip("/")
    code_verifier = secrets.token_urlsafe(48)
    state = secrets.token_urlsafe(12)
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "code_challenge": pkce_challenge(code_verifier),
        "code_challenge_method": "S256",
        "resource": resource,
        "scope": " ".join(scopes),
        "state": state,
    }
    _expect(await http.get(f"{base}/authorize", params=params), 200, "open the sign-in page")
    login = await http.post(
        f"{base}/authorize", data={**params, "username": username, "password": password}
    )
    location = _expect(login, 303, "sign in").headers.get("location", "")
    query = parse_qs(urlsplit(location).query)
    if query.get("state") != [state] or "code" not in query:
        raise DemoStepError("the sign-in redirect carried no code or the wrong state")
    reply = await http.post(
        f"{base}/token",
        data={
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": redirect_uri,
            "client_id": client_id,
            "code_verifier": code_verifier,
        },
    )
    token = _expect(reply, 200, "redeem the code").json().get("access_token")
    if not isinstance(token, str) or not token:
        raise DemoStepError("the token endpoint answered without an access_token")
    return token
