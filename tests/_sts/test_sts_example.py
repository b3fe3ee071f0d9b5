"""The curl session of docs/token-service.md, same forms, against examples/sts.toml."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sts_support import claims_of

from keycard_agents.sts import TokenService, load_config

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
ISS = "http://127.0.0.1:8900"
TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_docs_show_the_values_this_test_sends() -> None:
    docs = (ROOT / "docs" / "token-service.md").read_text(encoding="utf-8")
    for needle in (
        "-u planner:planner-dev-secret -d grant_type=client_credentials",
        "-u calendar:calendar-dev-secret",
        f"VERIFIER={VERIFIER}",
        f"CHALLENGE={CHALLENGE}",
        "-d username=alice -d password=alice-dev-password",
        "redirect_uri=http://127.0.0.1:8765/callback",
        "resource=http://127.0.0.1:8901/",
        "resource=http://127.0.0.1:8902/",
        "resource=http://127.0.0.1:8903/mcp -d scope=calendar.read",
        "add it to agents[planner].dependencies",
    ):
        assert needle in docs, needle


async def test_curl_session_from_the_docs() -> None:
    config = load_config(ROOT / "examples" / "sts.toml")
    assert config.issuer == ISS
    service = TokenService(config)
    async with service.app.router.lifespan_context(service.app):
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url=ISS) as http:
            # 1. client credentials with HTTP Basic
            r = await http.post(
                "/token",
                data={"grant_type": "client_credentials"},
                auth=("planner", "planner-dev-secret"),
            )
            assert r.status_code == 200, r.text
            assert set(r.json()) == {"access_token", "token_type", "expires_in"}
            assert r.json()["token_type"] == "Bearer"
            assert r.json()["expires_in"] == 300

            # 2. sign-in form, then the code
            r = await http.post(
                "/authorize",
                data={
                    "response_type": "code",
                    "client_id": "cli",
                    "redirect_uri": "http://127.0.0.1:8765/callback",
                    "code_challenge": CHALLENGE,
                    "code_challenge_method": "S256",
                    "resource": "http://127.0.0.1:8901/",
                    "scope": "calendar.read calendar.write",
                    "state": "s1",
                    "username": "alice",
                    "password": "alice-dev-password",
                },
            )
            assert r.status_code == 303, r.text
            location = r.headers["location"]
            assert location.startswith("http://127.0.0.1:8765/callback?code=")
            query = parse_qs(urlsplit(location).query)
            assert query["state"] == ["s1"]
            assert query["iss"] == [ISS]
            r = await http.post(
                "/token",
                data={
                    "grant_type": "authorization_code",
                    "client_id": "cli",
                    "code": query["code"][0],
                    "redirect_uri": "http://127.0.0.1:8765/callback",
                    "code_verifier": VERIFIER,
                },
            )
            assert r.status_code == 200, r.text
            assert set(r.json()) == {"access_token", "token_type", "expires_in", "scope"}
            assert r.json()["expires_in"] == 3600
            assert r.json()["scope"] == "calendar.read calendar.write"
            user_token = r.json()["access_token"]
            user = claims_of(user_token)
            assert set(user) == {
                "iss", "sub", "aud", "client_id", "scope", "txn", "may_act",
                "iat", "nbf", "exp", "jti",
            }  # fmt: skip
            assert user["may_act"] == {"sub": "planner"}

            # 3. planner -> calendar
            r = await http.post(
                "/token",
                data={
                    "grant_type": EXCHANGE,
                    "subject_token": user_token,
                    "subject_token_type": TOKEN_TYPE,
                    "resource": "http://127.0.0.1:8902/",
                },
                auth=("planner", "planner-dev-secret"),
            )
            assert r.status_code == 200, r.text
            expected_keys = {
                "access_token",
                "issued_token_type",
                "token_type",
                "expires_in",
                "scope",
            }
            assert set(r.json()) == expected_keys
            assert r.json()["issued_token_type"] == TOKEN_TYPE
            assert r.json()["scope"] == "calendar.read calendar.write"
            cal_token = r.json()["access_token"]
            cal = claims_of(cal_token)
            assert (cal["sub"], cal["client_id"], cal["aud"]) == (
                "alice",
                "planner",
                "http://127.0.0.1:8902/",
            )
            assert cal["act"] == {"sub": "planner", "iss": ISS}
            assert cal["txn"] == user["txn"]

            # 4. calendar -> MCP server, read only
            r = await http.post(
                "/token",
                data={
                    "grant_type": EXCHANGE,
                    "subject_token": cal_token,
                    "subject_token_type": TOKEN_TYPE,
                    "resource": "http://127.0.0.1:8903/mcp",
                    "scope": "calendar.read",
                },
                auth=("calendar", "calendar-dev-secret"),
            )
            assert r.status_code == 200, r.text
            assert set(r.json()) == expected_keys
            assert r.json()["scope"] == "calendar.read"
            mcp = claims_of(r.json()["access_token"])
            assert mcp["act"] == {
                "sub": "calendar",
                "iss": ISS,
                "act": {"sub": "planner", "iss": ISS},
            }

            # 5. the documented denial
            r = await http.post(
                "/token",
                data={
                    "grant_type": EXCHANGE,
                    "subject_token": user_token,
                    "subject_token_type": TOKEN_TYPE,
                    "resource": "http://127.0.0.1:8903/mcp",
                },
                auth=("planner", "planner-dev-secret"),
            )
            assert r.status_code == 400
            assert r.json() == {
                "error": "invalid_target",
                "error_description": "agent 'planner' may not call 'http://127.0.0.1:8903/mcp': "
                "add it to agents[planner].dependencies",
            }
