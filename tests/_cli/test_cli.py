"""The keycard-agents command line: sts, rotate-key, hash-secret (the demo: test_demo.py)."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from leak_support import assert_no_token

from keycard_agents._cli import COMMANDS, build_parser, main
from keycard_agents.sts import new_client_secret, verify_secret

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "sts.toml"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli() -> list[str]:
    return [
        sys.executable,
        "-c",
        "import sys; from keycard_agents._cli import main; sys.exit(main())",
    ]


def test_parser_lists_the_commands() -> None:
    parser = build_parser()
    help_text = parser.format_help()
    assert "sts" in help_text
    assert "demo" in help_text
    assert len(COMMANDS) >= 2


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: keycard-agents" in capsys.readouterr().out


def test_hash_secret_hashes_a_generated_client_secret_fast(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = new_client_secret()
    monkeypatch.setattr(sys, "stdin", io.StringIO(secret + "\n"))
    assert main(["sts", "hash-secret"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("sha256$")
    assert secret not in out
    assert verify_secret(secret, out)


@pytest.mark.parametrize("weak", ["correct horse", "a" * 80, "0123456789" * 3, "Ab1-" * 20])
def test_hash_secret_refuses_a_guessable_client_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], weak: str
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(weak + "\n"))
    assert main(["sts", "hash-secret"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "bits of entropy" in captured.err
    assert "at least 256" in captured.err
    assert "--generate FILE" in captured.err
    assert "--password" in captured.err
    assert weak not in captured.err


def test_hash_secret_password_uses_scrypt(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("correct horse\n"))
    assert main(["sts", "hash-secret", "--password"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("scrypt$")
    assert "correct horse" not in out
    assert verify_secret("correct horse", out)


def test_hash_secret_generates_a_secret_into_an_owner_only_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "agent.secret"
    assert main(["sts", "hash-secret", "--generate", str(target)]) == 0
    captured = capsys.readouterr()
    stored = captured.out.strip()
    secret = target.read_text(encoding="ascii").strip()
    assert target.stat().st_mode & 0o777 == 0o600
    assert len(secret) == 43
    assert stored.startswith("sha256$")
    assert verify_secret(secret, stored)
    assert secret not in captured.out + captured.err
    # Never overwrites a secret already handed out.
    assert main(["sts", "hash-secret", "--generate", str(target)]) == 2
    assert "exists" in capsys.readouterr().err
    assert target.read_text(encoding="ascii").strip() == secret


def test_hash_secret_refuses_empty_input(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["sts", "hash-secret"]) == 2
    assert "no secret" in capsys.readouterr().err


def test_rotate_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "sts.toml"
    config.write_text('issuer = "http://127.0.0.1:8900"\nkey_dir = "keys"\n', encoding="utf-8")
    assert main(["sts", "rotate-key", "--config", str(config)]) == 0
    first = {p.stem for p in (tmp_path / "keys").glob("*.json")}
    assert len(first) == 1
    assert main(["sts", "rotate-key", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "still published" in out
    both = {p.stem for p in (tmp_path / "keys").glob("*.json")}
    assert len(both) == 2
    assert first < both
    assert (tmp_path / "keys").stat().st_mode & 0o777 == 0o700


def test_config_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sts", "rotate-key", "--config", str(EXAMPLE)]) == 2
    assert "key_dir" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("max_chain_depth = -1\n", encoding="utf-8")
    assert main(["sts", "--config", str(bad)]) == 2
    assert "bad.toml: max_chain_depth:" in capsys.readouterr().err
    assert main(["sts"]) == 2
    assert "--config" in capsys.readouterr().err


@pytest.mark.slow
def test_sts_subprocess_serves_metadata(tmp_path: Path) -> None:
    port = _free_port()
    config = tmp_path / "sts.toml"
    text = EXAMPLE.read_text(encoding="utf-8").replace(
        'issuer = "http://127.0.0.1:8900"', "# issuer from --host/--port"
    )
    config.write_text(text, encoding="utf-8")
    proc = subprocess.Popen(
        [*_cli(), "sts", "--config", str(config), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    issuer = f"http://127.0.0.1:{port}"
    try:
        meta = None
        for _ in range(200):  # bounded: about 20 s
            if proc.poll() is not None:
                break
            try:
                reply = httpx.get(f"{issuer}/.well-known/oauth-authorization-server", timeout=1)
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            meta = reply.json()
            break
        assert meta is not None, "token service did not answer"
        assert meta["issuer"] == issuer
        assert meta["token_endpoint"] == f"{issuer}/token"
        token = httpx.post(
            f"{issuer}/token",
            data={"grant_type": "client_credentials"},
            auth=("planner", "planner-dev-secret"),
            timeout=5,
        )
        assert token.status_code == 200
        assert token.json()["token_type"] == "Bearer"
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert f"issuer {issuer}" in out
    assert_no_token(out)  # no token in the log


def test_every_documented_command_is_registered() -> None:
    from keycard_agents._cli import build_parser
    from keycard_agents._conformance import run_conformance

    parser = build_parser()
    args = parser.parse_args(["conformance", "http://127.0.0.1:1", "--config", "creds.toml"])
    assert args.func is run_conformance
    for command in ("sts", "serve", "demo", "trace", "token", "conformance"):
        assert command in parser.format_help()
