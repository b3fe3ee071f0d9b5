"""RFC 7591 dynamic client registration at the token service: the policy (open on a
loopback issuer, an initial access token or a redirect-URI allow-list otherwise), the
field-by-field checks with their RFC 7591 §3.2.2 errors, a registered client signing a user
in with PKCE, and the stores (memory, file) behind the ``ClientStore`` Protocol."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sts_support import PASSWORD, VERIFIER, A, claims_of, make_config, open_world

from keycard_agents import ConfigurationError
from keycard_agents.sts import (
    ClientStore,
    JsonlClientStore,
    MemoryClientStore,
    RegisteredClient,
    TokenService,
    hash_secret,
    load_config,
    pkce_challenge,
)

pytestmark = pytest.mark.anyio

IAT = "initial-access-token-for-tests"
CALLBACK = "http://127.0.0.1:45123/callback"


def _policy(**registration: Any) -> dict[str, Any]:
    return {"registration": registration}


async def _register(client: httpx.AsyncClient, body: Any, **headers: str) -> httpx.Response:
    return await client.post(
        "/register",
        content=json.dumps(body),
        headers={"content-type": "application/json", **headers},
    )


async def test_registered_client_signs_a_user_in_with_pkce() -> None:
    async with open_world(**_policy(allowed_redirect_uris=["http://127.0.0.1/callback"])) as w:
        metadata = (await w.client.get("/.well-known/oauth-authorization-server")).json()
        assert metadata["registration_endpoint"] == "https://sts.example/register"
        reply = await _register(
            w.client,
            {
                "redirect_uris": [CALLBACK],  # any loopback port (RFC 8252 §7.3)
                "client_name": "Inspector",
                "grant_types": ["authorization_code", "refresh_token"],
                "token_endpoint_auth_method": "none",
                "scope": "read write",
                "unknown_member": {"is": "ignored"},
            },
        )
        assert reply.status_code == 201, reply.text
        assert reply.headers["cache-control"] == "no-store"
        registered = reply.json()
        client_id = registered["client_id"]
        assert registered["redirect_uris"] == [CALLBACK]
        assert registered["token_endpoint_auth_method"] == "none"
        assert registered["grant_types"] == ["authorization_code"]  # replaced, §3.2.1
        assert "client_secret" not in registered
        assert "unknown_member" not in registered

        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": CALLBACK,
            "code_challenge": pkce_challenge(VERIFIER),
            "code_challenge_method": "S256",
            "resource": A,
            "scope": "read",
            "state": "s1",
        }
        assert (await w.client.get("/authorize", params=params)).status_code == 200
        login = await w.client.post(
            "/authorize", data={**params, "username": "alice", "password": PASSWORD}
        )
        assert login.status_code == 303, login.text
        code = parse_qs(urlsplit(login.headers["location"]).query)["code"][0]
        token = await w.post_token(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": CALLBACK,
                "client_id": client_id,
                "code_verifier": VERIFIER,
            }
        )
        assert token.status_code == 200, token.text
        claims = claims_of(token.json()["access_token"])
        assert claims["client_id"] == client_id
        assert claims["aud"] == A

        # Another redirect URI than the registered one is refused on the page, no redirect.
        wrong = await w.client.get(
            "/authorize", params={**params, "redirect_uri": "http://127.0.0.1:1/other"}
        )
        assert wrong.status_code == 400
        assert "location" not in wrong.headers


HOSTILE: list[tuple[str, Any, str]] = [
    ("http non-loopback", {"redirect_uris": ["http://evil.example/cb"]}, "invalid_redirect_uri"),
    ("javascript", {"redirect_uris": ["javascript:alert(1)"]}, "invalid_redirect_uri"),
    ("data", {"redirect_uris": ["data:text/html,hi"]}, "invalid_redirect_uri"),
    ("fragment", {"redirect_uris": ["https://app.test/cb#x"]}, "invalid_redirect_uri"),
    ("userinfo", {"redirect_uris": ["https://u:p@app.test/cb"]}, "invalid_redirect_uri"),
    ("relative", {"redirect_uris": ["/cb"]}, "invalid_redirect_uri"),
    ("no uris", {"client_name": "x"}, "invalid_redirect_uri"),
    ("empty list", {"redirect_uris": []}, "invalid_redirect_uri"),
    ("not a list", {"redirect_uris": "https://app.test/cb"}, "invalid_redirect_uri"),
    ("a number", {"redirect_uris": [42]}, "invalid_redirect_uri"),
    (
        "10 kB of uris",
        {"redirect_uris": [f"https://app.test/{i:04d}/" + "a" * 80 for i in range(120)]},
        "invalid_redirect_uri",
    ),
    (
        "one 10 kB uri",
        {"redirect_uris": ["https://app.test/" + "a" * 10_000]},
        "invalid_redirect_uri",
    ),
    (
        "unknown grant",
        {"redirect_uris": ["https://app.test/cb"], "grant_types": ["urn:x:evil"]},
        "invalid_client_metadata",
    ),
    (
        "password grant",
        {"redirect_uris": ["https://app.test/cb"], "grant_types": ["password"]},
        "invalid_client_metadata",
    ),
    (
        "client credentials",
        {
            "redirect_uris": ["https://app.test/cb"],
            "grant_types": ["authorization_code", "client_credentials"],
        },
        "invalid_client_metadata",
    ),
    (
        "implicit",
        {"redirect_uris": ["https://app.test/cb"], "response_types": ["token"]},
        "invalid_client_metadata",
    ),
    (
        "confidential",
        {
            "redirect_uris": ["https://app.test/cb"],
            "token_endpoint_auth_method": "client_secret_basic",
        },
        "invalid_client_metadata",
    ),
    (
        "keys",
        {"redirect_uris": ["https://app.test/cb"], "jwks": {"keys": []}},
        "invalid_client_metadata",
    ),
    (
        "bad scope",
        {"redirect_uris": ["https://app.test/cb"], "scope": 'read "write"'},
        "invalid_client_metadata",
    ),
    (
        "control in name",
        {"redirect_uris": ["https://app.test/cb"], "client_name": "a\nb"},
        "invalid_client_metadata",
    ),
    (
        "javascript logo",
        {"redirect_uris": ["https://app.test/cb"], "logo_uri": "javascript:x"},
        "invalid_client_metadata",
    ),
    ("array body", [1, 2], "invalid_client_metadata"),
    ("deep body", json.loads("[" * 50 + "]" * 50), "invalid_client_metadata"),
]


@pytest.mark.parametrize(("case", "body", "error"), HOSTILE, ids=[c[0] for c in HOSTILE])
async def test_hostile_registrations_get_the_rfc_7591_error(
    case: str, body: Any, error: str
) -> None:
    async with open_world(**_policy(enabled=True, initial_access_token_hash=_IAT_HASH)) as w:
        reply = await _register(w.client, body, authorization=f"Bearer {IAT}")
        assert reply.status_code == 400, (case, reply.text)
        assert reply.json()["error"] == error, (case, reply.text)
        assert reply.json()["error_description"]


async def test_malformed_requests_are_refused_without_a_5xx() -> None:
    async with open_world(**_policy(allowed_redirect_uris=["https://app.test/cb"])) as w:
        not_json = await w.client.post(
            "/register", content=b"{", headers={"content-type": "application/json"}
        )
        assert not_json.status_code == 400
        assert not_json.json()["error"] == "invalid_client_metadata"
        form = await w.client.post("/register", data={"redirect_uris": "https://app.test/cb"})
        assert form.status_code == 400
        huge = await w.client.post(
            "/register", content=b" " * 40_000, headers={"content-type": "application/json"}
        )
        assert huge.status_code == 413
        listed = await _register(w.client, {"redirect_uris": ["https://other.test/cb"]})
        assert listed.status_code == 400
        assert listed.json()["error"] == "invalid_redirect_uri"
        assert "allowed_redirect_uris" in listed.json()["error_description"]
        ok = await _register(w.client, {"redirect_uris": ["https://app.test/cb"]})
        assert ok.status_code == 201


_IAT_HASH = hash_secret(IAT, cost=2**4)


async def test_initial_access_token_is_required_when_configured() -> None:
    async with open_world(**_policy(initial_access_token_hash=_IAT_HASH)) as w:
        body = {"redirect_uris": ["https://app.test/cb"]}
        missing = await _register(w.client, body)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"  # RFC 6750 §3.1: no error
        wrong = await _register(w.client, body, authorization="Bearer not-the-token")
        assert wrong.status_code == 401
        assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
        malformed = await _register(w.client, body, authorization="Bearer a b c")
        assert malformed.status_code == 401
        right = await _register(w.client, body, authorization=f"Bearer {IAT}")
        assert right.status_code == 201, right.text


async def test_policy_defaults() -> None:
    # A non-loopback issuer without a policy offers no registration at all.
    async with open_world() as w:
        metadata = (await w.client.get("/.well-known/oauth-authorization-server")).json()
        assert "registration_endpoint" not in metadata
        assert (await _register(w.client, {"redirect_uris": [CALLBACK]})).status_code == 404
    # Opening it there is a configuration mistake, explained.
    with pytest.raises(ConfigurationError, match="loopback"):
        make_config(registration={"enabled": True})
    # A loopback issuer (development) is open by default.
    config, _ = make_config(issuer="http://127.0.0.1:8900")
    service = TokenService(config)
    assert service.metadata()["registration_endpoint"] == "http://127.0.0.1:8900/register"
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8900") as http:
        reply = await _register(http, {"redirect_uris": [CALLBACK]})
        assert reply.status_code == 201, reply.text
        assert await service.client_store.get(reply.json()["client_id"]) is not None
    off, _ = make_config(issuer="http://127.0.0.1:8900", registration={"enabled": False})
    assert "registration_endpoint" not in TokenService(off).metadata()


async def test_file_store_keeps_clients_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "clients.jsonl"
    store = JsonlClientStore(path)
    assert isinstance(store, ClientStore)
    client = RegisteredClient(
        client_id="dcr-1", redirect_uris=(CALLBACK,), issued_at=1, client_name="x", scope="read"
    )
    await store.add(client)
    with path.open("a", encoding="utf-8") as handle:
        handle.write("not json\n" + json.dumps({"client_id": "no-uris"}) + "\n")
    reopened = JsonlClientStore(path)
    assert await reopened.get("dcr-1") == client
    assert await reopened.get("no-uris") is None
    assert path.stat().st_mode & 0o077 == 0

    # The token service uses the file named in [registration], relative to the config.
    config_file = tmp_path / "sts.toml"
    config_file.write_text(
        'issuer = "http://127.0.0.1:8900"\n[registration]\nclients_file = "clients.jsonl"\n',
        encoding="utf-8",
    )
    service = TokenService(load_config(config_file))
    assert await service.client_store.get("dcr-1") == client


async def test_memory_store_keeps_the_newest() -> None:
    store = MemoryClientStore(max_clients=2)
    for i in range(3):
        await store.add(RegisteredClient(client_id=f"c{i}", redirect_uris=(CALLBACK,), issued_at=i))
    assert await store.get("c0") is None
    assert await store.get("c2") is not None
    assert len(store) == 2
    with pytest.raises(ConfigurationError):
        MemoryClientStore(max_clients=0)
