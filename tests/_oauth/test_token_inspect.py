"""``keycard-agents token inspect``: decode from stdin or a file, show the chain, verify."""

from __future__ import annotations

import base64
import io
import json
import sys
from pathlib import Path
from typing import Any, cast

import anyio
import httpx
import pytest
from sts_support import ISSUER, T0, A, B, C, make_config, open_world

from keycard_agents import InvalidTokenError
from keycard_agents._cli import main
from keycard_agents._oauth._inspect import decode_unverified, looks_like_jwt
from keycard_agents.auth import inspect_token
from keycard_agents.sts import TokenService


@pytest.fixture(scope="module")
def tokens() -> dict[str, object]:
    """A user token and a two-hop delegated token from a real token service, and its JWKS."""

    async def go() -> dict[str, object]:
        async with open_world() as w:
            user = await w.user_token(scope="read write")
            r1 = await w.exchange("a", user, B)
            r2 = await w.exchange("b", r1.json()["access_token"], C, scope="read")
            return {
                "user": user,
                "delegated": r2.json()["access_token"],
                "jwks": w.service.keys.public_jwks(),
            }

    return anyio.run(go)


def _rows(out: str) -> dict[str, str]:
    """The labelled rows of the text report: ``{label: value}``."""
    rows = {}
    for line in out.split("\n\n")[0].splitlines():
        label, _, value = line.partition("  ")
        rows[label] = value.strip()
    return rows


def _pipe(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    class _In(io.StringIO):
        def isatty(self) -> bool:
            return False

    monkeypatch.setattr(sys, "stdin", _In(text))


def test_decodes_from_stdin_and_shows_the_chain(
    tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tokens["delegated"]
    _pipe(monkeypatch, token + "\n")
    assert main(["token", "inspect"]) == 0
    out = capsys.readouterr().out
    assert token not in out
    assert token.split(".")[2] not in out  # not even the signature
    rows = _rows(out)
    assert rows["type"] == "at+jwt  alg ES256"
    assert rows["issuer"] == ISSUER
    assert rows["subject"] == "alice"
    assert rows["audience"] == C
    assert rows["client"] == "b"
    assert rows["scopes"] == "read"
    assert rows["chain"] == "alice → a → b"
    assert rows["acting"] == "b (current actor, outermost act)"
    assert rows["expires"].startswith("2027-01-15 ")
    assert "not verified: pass --issuer URL" in out
    assert '"act": {' in out


def test_user_token_from_a_file(
    tokens: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "token.txt"
    path.write_text(tokens["user"], encoding="utf-8")
    assert main(["token", "inspect", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["chain"] == ["alice"]
    assert report["claims"]["may_act"] == {"sub": "a"}
    assert report["verified"] is None
    assert main(["token", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert _rows(out)["may act"] == "a"
    assert _rows(out)["chain"] == "alice (no act claim: nobody acts for them)"


def test_verifies_with_a_local_jwks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = make_config()
    service = TokenService(config)  # the real clock, as the command uses
    token = service.issue_user_token("alice", audience=A, scopes=["read"])
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(service.keys.public_jwks()), encoding="utf-8")
    base = ["token", "inspect", "--issuer", ISSUER, "--jwks", str(jwks)]
    _pipe(monkeypatch, token)
    assert main([*base, "--audience", A]) == 0
    out = capsys.readouterr().out
    assert f"✔ valid: signature, issuer, type, lifetime, audience {A}" in out
    _pipe(monkeypatch, token)
    assert main([*base, "--audience", B]) == 1
    out = capsys.readouterr().out
    assert "✘ NOT valid (audience)" in out
    _pipe(monkeypatch, token)
    assert main([*base, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verified"] is True
    assert report["checked_audience"] == A
    other = TokenService(make_config()[0])  # same issuer, different key
    _pipe(monkeypatch, other.issue_user_token("alice", audience=A, scopes=["read"]))
    assert main([*base, "--audience", A]) == 1
    assert "✘ NOT valid (unknown_key)" in capsys.readouterr().out


@pytest.mark.anyio
async def test_inspect_function_verifies_against_the_running_service(
    tokens: dict[str, object],
) -> None:
    token = str(tokens["delegated"])
    async with open_world() as w:
        transport = httpx.ASGITransport(app=w.service.app)
        async with httpx.AsyncClient(transport=transport) as http:
            # keys discovered through the service's RFC 8414 metadata: a different key
            report = await inspect_token(
                token, issuer=ISSUER, audience=C, http_client=http, clock=lambda: T0 + 1
            )
            assert report.verified is False
            assert report.failed_check == "unknown_key"
            fresh = await w.user_token(scope="read")
            ok = await inspect_token(fresh, issuer=ISSUER, http_client=http, clock=w.clock)
            assert ok.verified is True
            assert ok.checked_audience == A
            assert ok.notes == ["audience not checked against a resource: pass --audience URL"]
            wrong_issuer = await inspect_token(
                fresh, issuer="https://other.example", http_client=http, clock=w.clock
            )
            assert wrong_issuer.verified is False
            assert wrong_issuer.failed_check == "issuer"
    late = await inspect_token(
        token,
        issuer=ISSUER,
        jwks=cast("dict[str, Any]", tokens["jwks"]),
        audience=C,
        clock=lambda: T0 + 10_000,
    )
    assert late.verified is False
    assert late.failed_check == "expired"
    good = await inspect_token(
        token,
        issuer=ISSUER,
        jwks=cast("dict[str, Any]", tokens["jwks"]),
        audience=C,
        clock=lambda: T0 + 1,
    )
    assert good.verified is True


def test_refuses_a_token_on_the_command_line(
    tokens: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    token = tokens["user"]
    assert main(["token", "inspect", token]) == 2
    err = capsys.readouterr().err
    assert "do not pass a token as an argument" in err
    assert token not in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no token: the input is empty"),
        ("not a token", "expected a JWT"),
        ("a.b.c.d.e", "encrypted token (JWE"),
        ("!!!.e30.sig", "expected a JWT"),
        ("e30.bm90IGpzb24.sig", "payload is not base64url-encoded JSON"),
        ("W10.e30.sig", "header is not a JSON object"),
    ],
)
def test_malformed_tokens_get_a_clear_message(
    text: str, message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _pipe(monkeypatch, text)
    assert main(["token", "inspect"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err


def test_other_bad_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", "inspect", str(tmp_path / "missing")]) == 2
    assert "no such file" in capsys.readouterr().err
    huge = "e30." + "A" * 70_000 + ".sig"
    _pipe(monkeypatch, huge)
    assert main(["token", "inspect"]) == 2
    assert "larger than any token" in capsys.readouterr().err
    _pipe(monkeypatch, "e30.e30.sig")
    assert main(["token", "inspect", "--audience", A]) == 2
    assert "need --issuer" in capsys.readouterr().err
    bad_jwks = tmp_path / "jwks.json"
    bad_jwks.write_text("[1]", encoding="utf-8")
    _pipe(monkeypatch, "e30.e30.sig")
    assert main(["token", "inspect", "--issuer", ISSUER, "--jwks", str(bad_jwks)]) == 2
    assert "is not a JWK Set" in capsys.readouterr().err

    class _Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", _Tty(""))
    assert main(["token", "inspect"]) == 2
    assert "pipe it in" in capsys.readouterr().err
    assert main(["token"]) == 2
    assert "inspect" in capsys.readouterr().out


def test_helpers() -> None:
    assert looks_like_jwt("eyJh.eyJz.c2ln")
    assert not looks_like_jwt("token.txt")
    header, claims = decode_unverified(
        ".".join(
            base64.urlsafe_b64encode(json.dumps(x).encode()).decode().rstrip("=")
            for x in ({"alg": "none"}, {"sub": "x"})
        )
        + "."
    )
    assert header == {"alg": "none"}
    assert claims == {"sub": "x"}
    with pytest.raises(InvalidTokenError) as info:
        decode_unverified("a.b")
    assert info.value.check == "malformed"
