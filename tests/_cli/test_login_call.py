"""``keycard-agents login`` and ``call`` against a real token service and agent on loopback.

The browser step is scripted: it opens the sign-in page, posts alice's password and
follows the redirect to the loopback address the command listens on (RFC 8252 §7.3).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from leak_support import assert_no_token

from keycard_agents import Agent, Context, create_app, skill
from keycard_agents._cli import main
from keycard_agents._cli._call import parse_arguments
from keycard_agents._cli._login import LoginError, TokenCache, login
from keycard_agents.sts import TokenService, hash_secret, parse_config
from keycard_agents.testing import free_loopback_socket, serve_on_loopback

PASSWORD = "correct horse battery staple"


class Calendar(Agent):
    """Knows when the user is free."""

    @skill(scopes=["calendar.read"])
    async def free_slots(self, ctx: Context, day: str, count: int = 2) -> list[str]:
        return [f"{day} {h:02d}:00 for {ctx.user}" for h in (9, 14, 16)[:count]]


@dataclass
class World:
    issuer: str
    agent: str


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    sts_sock, issuer = free_loopback_socket()
    agent_sock, agent_url = free_loopback_socket()
    agent_url += "/"
    config = parse_config(
        {
            "issuer": issuer,
            "agents": [
                {
                    "client_id": "calendar",
                    "resource": agent_url,
                    "auth": "client_secret",
                    "secret_hash": hash_secret("calendar-secret-" + "x" * 40, cost=2**4),
                    "scopes": ["calendar.read"],
                }
            ],
            "users": [
                {
                    "username": "alice",
                    "password_hash": hash_secret(PASSWORD, cost=2**4),
                    "scopes": ["calendar.read"],
                }
            ],
            "clients": [
                {"client_id": "keycard-cli", "redirect_uris": ["http://127.0.0.1/callback"]}
            ],
        }
    )
    service = TokenService(config)
    agent = Calendar(url=agent_url, issuer=issuer, token_endpoint=f"{issuer}/token")
    with serve_on_loopback(service.app, sts_sock), serve_on_loopback(create_app(agent), agent_sock):
        yield World(issuer=issuer, agent=agent_url)


def browser(password: str = PASSWORD) -> object:
    """What a person does in the browser: open the page, sign in, get redirected."""

    def open_url(url: str) -> bool:
        with httpx.Client(timeout=10) as http:
            page = http.get(url)
            assert page.status_code == 200, page.text
            assert "password" in page.text
            query = dict(httpx.URL(url).params)
            reply = http.post(
                url.split("?")[0], data={**query, "username": "alice", "password": password}
            )
            if reply.status_code != 303:
                return True  # refused: nothing comes back to the loopback address
            location = reply.headers["location"]
            assert location.startswith("http://127.0.0.1:")
            assert http.get(location).status_code == 200  # the loopback listener
        return True

    return open_url


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache" / "tokens.json"
    monkeypatch.setenv("KEYCARD_TOKEN_CACHE", str(path))
    return path


def test_login_caches_the_token_owner_only_and_call_uses_it(
    world: World,
    cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("webbrowser.open", browser())
    argv = ["login", "--issuer", world.issuer, "--resource", world.agent]
    assert main([*argv, "--scope", "calendar.read", "--timeout", "30"]) == 0
    out, err = capsys.readouterr()
    assert out == ""  # the token is never shown unless asked
    assert f"signed in for {world.agent} (scopes: calendar.read" in err
    assert_no_token(err)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.parent.stat().st_mode) == 0o700
    cached = TokenCache(cache).find(world.agent)
    assert cached is not None
    assert cached.issuer == world.issuer
    assert_no_token(repr(cached))

    assert main(["call", world.agent, "free_slots", "--arg", "day=Monday", "--arg", "count=1"]) == 0
    out, err = capsys.readouterr()
    assert out == '[\n  "Monday 09:00 for alice"\n]\n', err

    assert main([*argv, "--print", "--timeout", "30"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.count(".") == 2
    assert token.startswith("eyJ")


def test_login_without_a_browser_prints_the_url(
    world: World, cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url))
    assert main(["login", "--issuer", world.issuer, "--resource", world.agent, "--no-browser",
                 "--timeout", "1"]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert opened == []
    assert "Open this URL in a browser to sign in:" in err
    assert f"{world.issuer}/authorize?response_type=code&client_id=keycard-cli" in err
    assert "code_challenge_method=S256" in err
    assert "redirect_uri=http%3A%2F%2F127.0.0.1%3A" in err
    assert "no sign-in came back within 1 s" in err


def test_a_refused_sign_in_is_a_clear_error(world: World) -> None:
    with pytest.raises(LoginError, match="no sign-in came back"):
        login(
            issuer=world.issuer,
            resource=world.agent,
            open_url=browser(password="wrong"),  # type: ignore[arg-type]
            timeout=1,
        )
    with pytest.raises(LoginError, match=r"invalid_target.*only by a trailing '/'"):
        login(issuer=world.issuer, resource=world.agent.rstrip("/"),
              open_url=_follow_error, timeout=5)  # fmt: skip


def _follow_error(url: str) -> None:
    """A browser on a sign-in page that redirects an error back (unknown resource)."""
    with httpx.Client(timeout=10) as http:
        reply = http.get(url)
        assert reply.status_code == 303, reply.text
        http.get(reply.headers["location"])


def test_call_without_login_says_what_to_run(
    world: World, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["call", world.agent, "free_slots"]) == 2
    err = capsys.readouterr().err
    assert f"keycard-agents login --issuer ISSUER --resource {world.agent}" in err


def test_arguments_parse_as_json_or_text() -> None:
    assert parse_arguments(["day=Monday", "n=3", 'tags=["a"]', "note=a=b"]) == {
        "day": "Monday",
        "n": 3,
        "tags": ["a"],
        "note": "a=b",
    }
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_arguments(["nothing"])


def test_the_cache_file_is_not_world_readable_even_with_a_lax_umask(tmp_path: Path) -> None:
    from keycard_agents._cli._login import CachedToken

    previous = os.umask(0)
    try:
        cache = TokenCache(tmp_path / "t.json")
        cache.save(CachedToken("https://i.example", "https://a.example/", "tok", 4e9))
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "t.json").stat().st_mode) == 0o600


def person_on_another_device(uri: str, user_code: str, complete: str) -> None:
    """What the person does: open the page on any device, enter the code, sign in."""
    assert complete.startswith(uri + "?user_code=")
    with httpx.Client(timeout=10) as http:
        form = {"user_code": user_code, "username": "alice", "password": PASSWORD}
        page = http.post(uri, data={**form, "action": "allow"})
        assert "Device signed in" in page.text, page.text


def test_device_login_for_a_machine_without_a_browser(
    world: World,
    cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from keycard_agents._cli import _login

    token = _login.login_device(
        issuer=world.issuer,
        resource=world.agent,
        scopes=["calendar.read"],
        show=person_on_another_device,
        sleep=lambda seconds: None,
    )
    assert token.scope == "calendar.read"

    # the command: it prints where to go and the code, then waits
    shown: list[str] = []

    def sleep_and_act(seconds: float) -> None:
        assert seconds == 5
        if not shown:
            err = capsys.readouterr().err
            found = re.search(r"open (\S+)\nand enter the code (\S+) \(or open (\S+)\)", err)
            assert found, err
            shown.append(found.group(2))
            person_on_another_device(found.group(1), found.group(2), found.group(3))

    monkeypatch.setattr("time.sleep", sleep_and_act)
    argv = ["login", "--device", "--issuer", world.issuer, "--resource", world.agent]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert f"signed in for {world.agent}" in err
    assert shown
    assert main(["call", world.agent, "free_slots", "--arg", "day=Friday"]) == 0
    assert "Friday 09:00 for alice" in capsys.readouterr().out
