"""`keycard-agents conformance URL` against our own token service on a loopback port."""

from __future__ import annotations

import argparse
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from leak_support import assert_no_token
from test_protocols_vectors import VECTORS, conformance_service, open_service

from keycard_agents import ConfigurationError
from keycard_agents._conformance import (
    add_conformance_arguments,
    format_table,
    load_settings,
    load_vectors,
    run_conformance,
    run_exchange_vectors,
)
from keycard_agents.sts import TokenService


@pytest.fixture
def loopback_service() -> Iterator[TokenService]:
    """Our token service served by uvicorn on a free 127.0.0.1 port, in a thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    service = conformance_service(time.time, issuer=f"http://127.0.0.1:{port}")
    config = uvicorn.Config(service.app, log_level="warning", lifespan="on", ws="none", http="h11")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            time.sleep(0.01)
        assert server.started, "uvicorn did not start within 5 s"
        yield service
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        assert not thread.is_alive()


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="keycard-agents conformance")
    add_conformance_arguments(parser)
    return parser.parse_args(list(argv))


def creds_copy(tmp_path: Path, *, replace: tuple[str, str] | None = None) -> Path:
    shutil.copytree(VECTORS / "keys", tmp_path / "keys")
    text = (VECTORS / "conformance.toml").read_text(encoding="utf-8")
    if replace is not None:
        assert replace[0] in text
        text = text.replace(*replace)
    path = tmp_path / "creds.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_conformance_command_passes_against_our_token_service(
    loopback_service: TokenService, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse(loopback_service.issuer, "--config", str(VECTORS / "conformance.toml"))
    assert run_conformance(args) == 0
    out = capsys.readouterr().out
    vectors = load_vectors(VECTORS, "exchanges.json")["vectors"]
    rows = [line.split()[0] for line in out.splitlines() if line.startswith("X-")]
    assert rows == [v["id"] for v in vectors]
    assert f"{len(vectors)} passed, 0 failed, 0 skipped" in out
    assert " FAIL" not in out
    assert "TEST-ONLY" not in out  # the beta secret never reaches the output
    assert loopback_service.stats.exchanges >= len(vectors)


def test_conformance_command_fails_on_a_wrong_credential(
    loopback_service: TokenService, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    creds = creds_copy(tmp_path, replace=("TEST-ONLY-not-for-production", "changed"))
    args = parse(
        loopback_service.issuer, "--config", str(creds), "--only", "X-08", "--only", "X-20"
    )
    assert run_conformance(args) == 1
    out = capsys.readouterr().out
    (x08,) = [line for line in out.splitlines() if line.startswith("X-08")]
    assert "FAIL" in x08
    assert "invalid_client (401)" in x08
    (x20,) = [line for line in out.splitlines() if line.startswith("X-20")]
    assert "PASS" in x20  # a wrong secret made wronger is still wrong


def test_conformance_command_refuses_an_issuer_its_metadata_does_not_state(
    loopback_service: TokenService,
) -> None:
    args = parse(loopback_service.issuer + "/other", "--config", str(VECTORS / "conformance.toml"))
    with pytest.raises(ConfigurationError, match="metadata"):
        run_conformance(args)


@pytest.mark.anyio
async def test_vectors_needing_a_missing_credential_are_skipped(tmp_path: Path) -> None:
    creds = creds_copy(tmp_path, replace=('[public_client]\nclient_id = "conformance-app"\n', ""))
    vectors = load_vectors(VECTORS, "exchanges.json")["vectors"]
    async with open_service() as (service, client, clock):
        settings = load_settings(creds, issuer=service.issuer)
        results = await run_exchange_vectors(settings, vectors, http=client, clock=clock)
    skipped = [r.id for r in results if r.outcome == "SKIP"]
    assert skipped == ["X-30"]
    assert all(r.outcome == "PASS" for r in results if r.id != "X-30"), format_table(results)
    assert "1 skipped" in format_table(results)


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        (("[agents.beta]", "[agents.gamma]"), "agents.beta|beta"),
        (
            (
                'client_secret = "',
                'private_key_file = "keys/alpha.private.jwk.json"\nclient_secret = "',
            ),
            "exactly one",
        ),
        (("keys/user-issuer.private.jwks.json", "keys/missing.json"), "cannot read"),
        (('client_id = "conformance-alpha"', "client_id = 3"), "non-empty string"),
    ],
)
def test_bad_credentials_files_are_configuration_errors(
    tmp_path: Path, replace: tuple[str, str], message: str
) -> None:
    creds = creds_copy(tmp_path, replace=replace)
    with pytest.raises(ConfigurationError, match=message) as info:
        load_settings(creds, issuer="https://sts.conformance.test")
    assert "TEST-ONLY" not in str(info.value)


def test_unknown_vector_filter_and_missing_vectors_dir(tmp_path: Path) -> None:
    args = parse(
        "https://sts.conformance.test",
        "--config",
        str(VECTORS / "conformance.toml"),
        "--only",
        "X-999",
    )
    with pytest.raises(ConfigurationError, match="--only"):
        run_conformance(args)
    args = parse(
        "https://sts.conformance.test",
        "--config",
        str(VECTORS / "conformance.toml"),
        "--vectors",
        str(tmp_path),
    )
    with pytest.raises(ConfigurationError, match="cannot read vectors"):
        run_conformance(args)


def test_settings_repr_hides_the_secret() -> None:
    settings = load_settings(VECTORS / "conformance.toml", issuer="https://sts.conformance.test")
    assert settings.agents["beta"].secret is not None
    assert settings.agents["beta"].secret in (VECTORS / "conformance.toml").read_text()
    assert "TEST-ONLY" not in repr(settings)


# ------------------------------------------------------------------ discovery and user tokens


def _hiding_rfc8414(service: TokenService) -> httpx.MockTransport:
    """The service as an OpenID provider: 404 at the RFC 8414 URL, the same metadata at
    /.well-known/openid-configuration (Keycloak, node oidc-provider)."""
    asgi = httpx.ASGITransport(app=service.app)

    async def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.startswith("/.well-known/oauth-authorization-server"):
            return httpx.Response(404, text="<html>not found</html>")
        if path == "/.well-known/openid-configuration":
            request = httpx.Request(
                "GET",
                request.url.copy_with(
                    path=path.replace("openid-configuration", "oauth-authorization-server")
                ),
            )
        response = await asgi.handle_async_request(request)
        await response.aread()
        return httpx.Response(
            response.status_code, headers=response.headers, content=response.content
        )

    return httpx.MockTransport(handler)


@pytest.mark.anyio
async def test_conformance_falls_back_to_openid_discovery() -> None:
    vectors = [v for v in load_vectors(VECTORS, "exchanges.json")["vectors"] if v["id"] == "X-01"]
    async with open_service() as (service, _, clock):
        settings = load_settings(VECTORS / "conformance.toml", issuer=service.issuer)
        async with httpx.AsyncClient(transport=_hiding_rfc8414(service)) as http:
            results = await run_exchange_vectors(settings, vectors, http=http, clock=clock)
    assert [r.outcome for r in results] == ["PASS"], format_table(results)


@pytest.mark.anyio
async def test_conformance_reports_the_http_status_of_missing_metadata() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, text="<html>not found</html>")  # not JSON

    vectors = load_vectors(VECTORS, "exchanges.json")["vectors"][:1]
    settings = load_settings(VECTORS / "conformance.toml", issuer="https://idp.example/oidc")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(ConfigurationError) as info:
            await run_exchange_vectors(settings, vectors, http=http)
    message = str(info.value)
    assert "HTTP 404" in message
    assert "/.well-known/oauth-authorization-server/oidc" in message
    assert "/oidc/.well-known/openid-configuration" in message


@pytest.mark.anyio
async def test_conformance_starts_from_a_user_token_of_the_service_under_test(
    tmp_path: Path,
) -> None:
    # A hosted issuer will not trust our test user issuer: the operator signs in at the
    # issuer under test for alpha and hands the runner that token instead.
    creds = creds_copy(
        tmp_path,
        replace=(
            '[user_issuer]\nissuer = "https://users.conformance.test"\n'
            'private_jwks_file = "keys/user-issuer.private.jwks.json"\n',
            'user_token_file = "user-token.jwt"\n',
        ),
    )
    vectors = load_vectors(VECTORS, "exchanges.json")["vectors"]
    async with open_service() as (service, client, clock):
        alpha = load_settings(VECTORS / "conformance.toml", issuer=service.issuer).agents["alpha"]
        token = service.issue_user_token(
            "carol", audience=alpha.resource, scopes=["read", "write"], may_act=alpha.client_id
        )
        (tmp_path / "user-token.jwt").write_text(token + "\n")
        settings = load_settings(creds, issuer=service.issuer)
        assert settings.user_keys == {}
        assert_no_token(repr(settings))
        results = await run_exchange_vectors(settings, vectors, http=client, clock=clock)
    outcomes = {r.id: r.outcome for r in results}
    assert outcomes["X-01"] == "PASS"  # sub = carol, the txn of her token
    assert outcomes["X-02"] == "SKIP"  # sub_id names the user issuer: needs its keys
    assert outcomes["X-35"] == "SKIP"  # an expired user token needs the user issuer's keys
    assert not [r for r in results if r.outcome == "FAIL"], format_table(results)
