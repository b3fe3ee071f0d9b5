"""Code written for Keycard's SDK (keycardai-oauth, -starlette, -fastmcp, -a2a) runs against
keycard-agents unchanged, apart from the import line.

Each ``keycard_style`` block below is a snippet from Keycard's documentation and
docstrings; the asserts around it check that it means here what it means there. Where
Keycard's real wheel is installed (the dev extra pins keycardai-oauth and
keycardai-starlette), the same inputs go through it too and the answers are compared.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest
from delegation_support import MAIL, PLANNER, WEATHER, Planner
from keycardai.oauth.server import AccessContext as KeycardAccessContext
from keycardai.starlette import AuthProvider
from server_support import ISSUER, EchoAgent, TokenMinter

from keycard_agents import (
    AccessContext,
    Agent,
    ClientSecret,
    ConfigurationError,
    Context,
    EKSWorkloadIdentity,
    HttpDependency,
    ResourceAccessError,
    WebIdentity,
    WorkloadIdentity,
    create_app,
    credential_from_env,
    grant,
    resolve_issuer,
    skill,
)
from keycard_agents.testing import make_context, mock_access_context

ZONE1, ZONE2 = "https://zone1.keycard.cloud", "https://zone2.keycard.cloud"
KEYCARD_ENV = (
    "KEYCARD_ZONE_ID",
    "KEYCARD_ZONE_URL",
    "KEYCARD_BASE_URL",
    "KEYCARD_CLIENT_ID",
    "KEYCARD_CLIENT_SECRET",
    "KEYCARD_APPLICATION_CREDENTIAL_TYPE",
    "KEYCARD_WEB_IDENTITY_DIR",
    "KEYCARD_WEB_IDENTITY_KEY_STORAGE_DIR",
    "KEYCARD_WORKLOAD_TOKEN_FILE",
    "KEYCARD_EKS_WORKLOAD_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AZURE_FEDERATED_TOKEN_FILE",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KEYCARD_ENV:
        monkeypatch.delenv(name, raising=False)


# ------------------------------------------------------------------ credentials


@pytest.mark.anyio
async def test_client_secret_shapes() -> None:
    # keycard_style: keycardai.oauth.server.ClientSecret docstring
    provider = ClientSecret(("client_id_from_keycard", "client_secret_from_keycard"))
    multi = ClientSecret(
        {
            "https://zone1.keycard.cloud": ("client_id_1", "client_secret_1"),
            "https://zone2.keycard.cloud": ("client_id_2", "client_secret_2"),
        }
    )
    # end keycard_style
    assert provider.client_id == "client_id_from_keycard"
    assert not provider.is_multi_zone
    assert multi.is_multi_zone
    one = await multi.authenticate(token_endpoint=ZONE1 + "/oauth/token", issuer=ZONE1)
    two = await multi.authenticate(token_endpoint=ZONE2 + "/oauth/token", issuer=ZONE2 + "/")
    assert one.headers["Authorization"] != two.headers["Authorization"]
    assert multi.client_id_for(ZONE2) == "client_id_2"
    with pytest.raises(ConfigurationError, match="no client credentials for issuer"):
        await multi.authenticate(token_endpoint="x", issuer="https://zone3.keycard.cloud")
    assert "client_secret_1" not in repr(multi)


def test_web_identity_keycard_shape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    # keycard_style: keycardai.oauth.server.WebIdentity docstring and keycardai-mcp's README
    provider = WebIdentity(mcp_server_name="My Server", storage_dir="./server_keys")
    default_dir = WebIdentity(server_name="My Server")
    # end keycard_style
    assert (tmp_path / "server_keys").is_dir()
    assert default_dir.kid == provider.kid  # the same directory, ./server_keys, the same key
    assert provider.get_jwks() == provider.public_jwks()
    assert not provider.has_client_id
    # As in Keycard, the client id is the URL of what it serves.
    agent = EchoAgent(
        url="https://echo.example.com/", issuer=ISSUER, token_endpoint=ISSUER + "/token"
    )
    agent.credential = provider
    create_app(agent, verifier=TokenMinter().verifier())
    assert provider.client_id == "https://echo.example.com/"


def test_keycard_key_files_are_refused_with_a_migration(tmp_path: Path) -> None:
    keys = tmp_path / "server_keys"
    keys.mkdir()
    (keys / "My_Server.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    (keys / "My_Server.json").write_text("{}")
    with pytest.raises(ConfigurationError, match="keys of Keycard's SDK") as info:
        WebIdentity(mcp_server_name="My Server", storage_dir=str(keys))
    assert "new, empty storage_dir" in str(info.value)


def test_eks_workload_identity_discovers_its_token_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = tmp_path / "eks-token"
    token.write_text("header.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YXBwIn0.sig\n")
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", str(token))
    # keycard_style: keycardai.oauth.server.EKSWorkloadIdentity docstring
    provider = EKSWorkloadIdentity()
    explicit = EKSWorkloadIdentity(token_file_path=str(token))
    # end keycard_style
    assert provider.token_file == token == explicit.token_file
    assert isinstance(provider, WorkloadIdentity)
    assert provider.client_id == "system:serviceaccount:app"  # a label: the token's sub
    monkeypatch.delenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
    with pytest.raises(ConfigurationError, match="KEYCARD_EKS_WORKLOAD_IDENTITY_TOKEN_FILE"):
        EKSWorkloadIdentity()


@pytest.mark.anyio
async def test_workload_identity_without_client_id_sends_none(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("a.b.c")
    auth = await WorkloadIdentity(token_file=token).authenticate(
        token_endpoint=ISSUER + "/token", issuer=ISSUER
    )
    assert "client_id" not in auth.form
    assert auth.form["client_assertion"] == "a.b.c"


# ------------------------------------------------------------------ environment


def test_keycard_environment_names(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("a.b.c")
    keys = tmp_path / "keys"
    web = credential_from_env({"KEYCARD_WEB_IDENTITY_KEY_STORAGE_DIR": str(keys)})
    assert isinstance(web, WebIdentity)
    assert web.storage_dir == keys
    eks = credential_from_env(
        {
            "KEYCARD_APPLICATION_CREDENTIAL_TYPE": "eks_workload_identity",
            "KEYCARD_EKS_WORKLOAD_IDENTITY_TOKEN_FILE": str(token),
        }
    )
    assert isinstance(eks, WorkloadIdentity)
    assert eks.token_file == token
    secret = credential_from_env({"KEYCARD_CLIENT_ID": "id", "KEYCARD_CLIENT_SECRET": "s"})
    assert isinstance(secret, ClientSecret)


def _keycard_zone_url(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], **kwargs: str) -> str:
    """What keycardai-starlette's AuthProvider resolves, with ``env`` as the environment."""
    with monkeypatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its deprecation notices about KEYCARD_ZONE_ID
            provider = AuthProvider(**kwargs)  # type: ignore[arg-type]
    assert provider.zone_url is not None
    return provider.zone_url


@pytest.mark.parametrize(
    ("env", "kwargs"),
    [
        ({}, {"zone_id": "acme"}),
        ({}, {"zone_url": "https://acme.keycard.cloud/"}),
        ({}, {"zone_id": "acme", "zone_url": "https://other.example.com"}),
        ({"KEYCARD_ZONE_URL": "https://env.example.com"}, {"zone_id": "acme"}),
        ({"KEYCARD_ZONE_ID": "envzone"}, {}),
        ({"KEYCARD_ZONE_ID": "envzone", "KEYCARD_ZONE_URL": "https://u.example.com/"}, {}),
        ({"KEYCARD_ZONE_ID": "envzone"}, {"zone_url": "https://arg.example.com"}),
        ({"KEYCARD_ZONE_ID": "envzone", "KEYCARD_BASE_URL": "https://kc.example.com"}, {}),
        ({"KEYCARD_ZONE_URL": "https://env.example.com"}, {"zone_url": "https://arg.example"}),
    ],
)
def test_zone_precedence_is_keycards(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], kwargs: dict[str, str]
) -> None:
    # Pinned against the real keycardai-starlette wheel: a zone URL beats a zone id, an
    # argument beats its variable, and the URL is kept exactly (a trailing "/" included).
    assert resolve_issuer(env=env, **kwargs) == _keycard_zone_url(monkeypatch, env, **kwargs)


# ------------------------------------------------------------------ grant and AccessContext


class KeycardStyle(Agent):
    name = "keycard-style"
    dependencies = (
        HttpDependency("api", resource="https://api.example.com"),
        HttpDependency("other", resource="https://other.example.com"),
    )

    # keycard_style: the grant pattern of keycardai-starlette / -fastmcp
    @skill
    @grant(["https://api.example.com", "https://other.example.com"])
    async def both(self, ctx: Context, access: AccessContext) -> dict[str, Any]:
        if access.has_errors():
            return {"error": access.get_errors(), "status": access.get_status()}
        token = access.access("https://api.example.com").access_token
        return {"token": token, "status": access.get_status()}

    @skill
    @grant("https://api.example.com")  # type: ignore[arg-type]  # a sync tool, Keycard-style
    def sync_tool(self, access: AccessContext) -> str:
        if access.has_error():
            return f"Error: {access.get_error()}"
        response = access.access("https://api.example.com")
        return f"{response.access_token} {response.expires_in} {response.scope}"

    # end keycard_style


@pytest.mark.anyio
async def test_grant_list_form_and_sync_tools() -> None:
    agent = KeycardStyle(url="http://127.0.0.1:9600")
    ctx, _ = make_context(agent=agent)
    # keycard_style: keycardai-fastmcp's testing docstring
    with mock_access_context(access_token="my_token"):
        assert await agent.both(ctx) == {"token": "my_token", "status": "success"}
        assert (await agent.sync_tool(ctx)).startswith("my_token 30")  # expires_in ~300 s
    with mock_access_context(resource_tokens={"https://api.example.com": "token_123"}):
        result = await agent.both(ctx)
    with mock_access_context(has_errors=True, error_message="Auth failed"):
        failed = await agent.sync_tool(ctx)
    # end keycard_style
    # resource_tokens names the only resources granted, as in Keycard's mock.
    assert result["status"] == "partial_error"
    assert list(result["error"]["resources"]) == ["https://other.example.com"]
    assert result["error"]["error"] is None
    assert failed.startswith("Error: ")
    assert "Auth failed" in failed
    assert set(agent.skills) == {"both", "sync_tool"}
    assert agent.skills["sync_tool"].parameters == ()


@pytest.mark.anyio
async def test_access_context_means_what_keycards_does() -> None:
    planner = Planner(url=PLANNER)
    ctx, _ = make_context(agent=planner)
    seen: list[AccessContext] = []

    @grant("weather", MAIL)
    async def probe(self: Any, access: AccessContext) -> None:
        seen.append(access)

    with mock_access_context(resource_tokens={WEATHER: "w"}):
        await probe(planner, ctx)
    with mock_access_context(has_errors=True, error_message="zone unreachable"):
        await probe(planner, ctx)
    partial, broken = seen
    # The same situations in Keycard's own AccessContext.
    theirs_partial = KeycardAccessContext()
    theirs_partial.set_resource_error(MAIL, {"message": "not granted"})
    theirs_broken = KeycardAccessContext()
    theirs_broken.set_error({"message": "zone unreachable"})
    for ours, theirs in ((partial, theirs_partial), (broken, theirs_broken)):
        assert ours.get_status() == theirs.get_status()
        assert ours.has_error() == theirs.has_error()
        assert ours.has_errors() == theirs.has_errors()
        assert set(ours.get_errors()) == set(theirs.get_errors()) == {"resources", "error"}
        assert set(ours.get_errors()["resources"]) == set(theirs.get_errors()["resources"])
    assert broken.get_error() is not None
    error = broken.get_error()
    assert error is not None
    assert error["message"] == "zone unreachable"
    with pytest.raises(ResourceAccessError):
        broken.access("weather")


@pytest.mark.anyio
async def test_exchanged_token_has_keycards_fields() -> None:
    from keycard_agents.auth import TokenExchangeClient

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"issuer": ISSUER, "token_endpoint": ISSUER + "/t"})
        body = {
            "access_token": "a.b.c",
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "token_type": "Bearer",
            "expires_in": 120,
            "scope": "read write",
        }
        return httpx.Response(200, json=body)

    async with TokenExchangeClient(
        issuer=ISSUER,
        credential=ClientSecret(("a", "b")),
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(answer)),
    ) as client:
        token = await client.exchange("x.y.z", resource="https://api.example.com")
    assert token.expires_in == 120
    assert token.scope == ["read", "write"]
    assert token.scopes == ("read", "write")
