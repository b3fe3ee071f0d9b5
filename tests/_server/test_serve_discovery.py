"""``keycard-agents serve`` reads the token endpoint from the issuer's metadata, and its
errors name command-line options."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from keycard_agents import ConfigurationError
from keycard_agents._server import add_serve_arguments, run_serve
from keycard_agents._server._command import discover_token_endpoint
from keycard_agents.sts import TokenService, parse_config
from keycard_agents.testing import free_loopback_socket, serve_on_loopback

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def issuer() -> Iterator[str]:
    sock, url = free_loopback_socket()
    service = TokenService(parse_config({"issuer": url}))
    with serve_on_loopback(service.app, sock):
        yield url


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(list(argv))


def test_the_token_endpoint_comes_from_the_metadata(issuer: str) -> None:
    assert discover_token_endpoint(issuer) == f"{issuer}/token"


def test_an_issuer_with_a_different_slash_is_named_with_the_flag(issuer: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        discover_token_endpoint(issuer + "/")
    message = str(info.value)
    assert message.startswith(f"--issuer {issuer}/: ")
    assert "differ only by a trailing '/'" in message


def test_an_unreachable_issuer_says_to_start_it_or_pass_the_endpoint() -> None:
    sock, url = free_loopback_socket()
    sock.close()  # nothing listens there
    with pytest.raises(ConfigurationError, match="pass --token-endpoint URL") as info:
        discover_token_endpoint(url, timeout=5)
    assert f"cannot reach --issuer {url}" in str(info.value)


def test_serve_errors_name_options_not_python_arguments(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.syspath_prepend(str(TESTS))
    assert run_serve(parse("server_support:EchoAgent", "--port", "0")) == 2
    err = capsys.readouterr().err
    assert "pass --issuer URL" in err, err
    assert "Agent(issuer=" not in err
    assert "token_endpoint" not in err
