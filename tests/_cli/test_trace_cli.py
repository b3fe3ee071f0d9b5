"""``keycard-agents trace TXN``: from audit files, the token service's config, exported trees."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import anyio
import pytest
from sts_support import A, B, C, D, open_world
from trace_support import run_scenario

from keycard_agents._cli import main
from keycard_agents.audit import JsonlAgentAuditStore
from keycard_agents.sts import hash_secret


def _record(tmp_path: Path) -> tuple[str, Path, Path]:
    """Run the scenario with the token service writing audit.jsonl, agents agents.jsonl."""
    sts_file = tmp_path / "audit.jsonl"
    agent_file = tmp_path / "agents.jsonl"

    async def go() -> str:
        async with open_world(audit_file=sts_file) as w:
            s = await run_scenario(w, store=JsonlAgentAuditStore(agent_file))
            return s.txn

    return anyio.run(go), sts_file, agent_file


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[str, Path, Path]:
    return _record(tmp_path)


def test_trace_from_audit_files(
    recorded: tuple[str, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    txn, sts_file, agent_file = recorded
    assert sts_file.is_file()
    assert main(["trace", txn, "--audit", str(sts_file), "--audit", str(agent_file)]) == 0
    out = capsys.readouterr().out
    assert "\x1b[" not in out  # not a terminal: no colour
    assert out.startswith(f"txn {txn}   user alice\n")
    assert "5 hops, 2 denied" in out
    assert f"✘ {D}  DENIED invalid_target" in out
    assert "reason: agent 'b' may not call" in out
    assert "task task-c · skill lookup" in out


def _hop_lines(out: str) -> list[str]:
    """The tree's hop lines, each reduced to its drawing prefix and target."""
    lines = []
    for line in out.splitlines():
        for mark in ("✔ ", "✘ ", "! ", "? ", "… "):
            branch = line.find("─ " + mark)
            if branch >= 0:
                head = line[: branch + 2 + len(mark)]
                lines.append(head + line[branch + 2 + len(mark) :].split("  ")[0])
                break
    return lines


#: The recorded chain as the token service saw it: user at the root, three hops under a.
_STS_TREE = [
    "└─ ✔ a (https://a.example/)",
    "   ├─ ✔ b (https://b.example/)",
    f"   │  ├─ ✔ {C}",
    f"   │  └─ ✘ {D}",
    f"   └─ ✘ {C}",
]


def test_trace_from_the_token_service_file_alone_draws_the_recorded_tree(
    recorded: tuple[str, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    txn, sts_file, _ = recorded
    assert main(["trace", txn, "--audit", str(sts_file)]) == 0
    out = capsys.readouterr().out
    # the records name the agents that exchanged (a, b); c never exchanged: its URL stays
    assert _hop_lines(out) == _STS_TREE, out
    assert "5 hops, 2 denied" in out
    assert "not recorded" not in out
    assert "\nalice\n└─ ✔ a (https://a.example/)  issued  [read write]  at +0 ms" in out


def test_trace_names_agents_from_records_written_before_they_named_resources(
    recorded: tuple[str, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    txn, sts_file, _ = recorded
    old = tmp_path / "old-audit.jsonl"
    lines = []
    for line in sts_file.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        record.pop("resource", None)
        lines.append(json.dumps(record))
    old.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["trace", txn, "--audit", str(old)]) == 0
    out = capsys.readouterr().out
    assert _hop_lines(out) == _STS_TREE, out


def test_trace_text_labels_timings_and_explains_its_ids(
    recorded: tuple[str, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    txn, sts_file, agent_file = recorded
    assert main(["trace", txn, "--audit", str(sts_file), "--audit", str(agent_file)]) == 0
    out = capsys.readouterr().out
    assert "issued → completed  [read write]  at +10 ms, took 44 ms" in out
    assert "token jti " in out
    assert "txn: the id every token of this chain carries" in out
    assert "token jti: the id of the token" in out


def test_trace_with_the_config_names_agents(
    recorded: tuple[str, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    txn, sts_file, _ = recorded
    digest = hash_secret("unused-secret", cost=2**4)
    agents = "".join(
        f'[[agents]]\nclient_id = "{name}"\nresource = "{url}"\nauth = "client_secret"\n'
        f'secret_hash = "{digest}"\n\n'
        for name, url in (("a", A), ("b", B), ("c", C))
    )
    config = tmp_path / "sts.toml"
    config.write_text(f'audit_file = "{sts_file.name}"\n\n{agents}', encoding="utf-8")
    assert main(["trace", txn, "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "✔ b (https://b.example/)  issued" in out
    assert "✘ c (https://c.example/)  DENIED invalid_scope" in out

    no_file = tmp_path / "memory.toml"
    no_file.write_text(agents, encoding="utf-8")
    assert main(["trace", txn, "--config", str(no_file)]) == 2
    assert "sets no audit_file" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["json", "mermaid", "dot"])
def test_trace_formats_and_tree_export_round_trip(
    fmt: str,
    recorded: tuple[str, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    txn, sts_file, agent_file = recorded
    args = ["trace", txn, "--audit", str(sts_file), "--audit", str(agent_file)]
    assert main([*args, "--format", fmt]) == 0
    out = capsys.readouterr().out
    if fmt == "json":
        exported = tmp_path / "tree.json"
        exported.write_text(out, encoding="utf-8")
        assert json.loads(out)["txn"] == txn
        assert main(["trace", txn, "--tree", str(exported)]) == 0
        again = capsys.readouterr().out
        assert f"✘ {D}  DENIED invalid_target" in again
        assert main(["trace", "other-txn", "--tree", str(exported)]) == 1
        assert "not 'other-txn'" in capsys.readouterr().err
    elif fmt == "mermaid":
        assert out.startswith("flowchart LR\n")
        assert ":::denied" in out
    else:
        assert out.startswith(f'digraph "txn {txn}"')
        assert "style=dashed" in out


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_trace_colours_a_terminal_unless_no_color(
    recorded: tuple[str, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    txn, sts_file, _ = recorded
    monkeypatch.delenv("NO_COLOR", raising=False)
    tty = _Tty()
    monkeypatch.setattr(sys, "stdout", tty)
    assert main(["trace", txn, "--audit", str(sts_file)]) == 0
    assert "\x1b[31m✘\x1b[0m" in tty.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    plain = _Tty()
    monkeypatch.setattr(sys, "stdout", plain)
    assert main(["trace", txn, "--audit", str(sts_file)]) == 0
    assert "\x1b[" not in plain.getvalue()


def test_unknown_txn_is_a_clear_error_with_exit_1(
    recorded: tuple[str, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, sts_file, _ = recorded
    assert main(["trace", "no-such-txn", "--audit", str(sts_file)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"error: no audit record for txn 'no-such-txn' in {sts_file}\n"


def test_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", "t"]) == 2
    assert "say where the records are" in capsys.readouterr().err
    assert main(["trace", "t", "--audit", str(tmp_path / "missing.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err
    junk = tmp_path / "junk.json"
    junk.write_text("{not json", encoding="utf-8")
    assert main(["trace", "t", "--tree", str(junk)]) == 2
    assert "is not an exported delegation tree" in capsys.readouterr().err
    assert main(["trace", "t", "--tree", str(tmp_path / "nope.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["trace", "t", "--tree", str(junk), "--audit", str(junk)]) == 2
    assert "do not combine" in capsys.readouterr().err
    assert main(["trace", "t", "--from", "http://127.0.0.1:9", "--audit", str(junk)]) == 2
    assert "do not combine" in capsys.readouterr().err


def test_from_url_needs_the_admin_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KEYCARD_ADMIN_TOKEN", raising=False)
    assert main(["trace", "t", "--from", "http://127.0.0.1:9"]) == 2
    assert "KEYCARD_ADMIN_TOKEN" in capsys.readouterr().err
    missing = tmp_path / "token.txt"
    assert (
        main(["trace", "t", "--from", "http://127.0.0.1:9", "--admin-token-file", str(missing)])
        == 2
    )
    assert "cannot read the admin token file" in capsys.readouterr().err


def test_trace_from_a_service_without_admin_says_the_audit_api_is_disabled(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from keycard_agents._demo._services import bind_loopback, start_server
    from keycard_agents.sts import TokenService, parse_config

    sock = bind_loopback(0, service="token service")
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    service = TokenService(parse_config({"issuer": url}))  # no [admin]: no audit API
    server = start_server(service.app, sock, name="token service", url=url)
    try:
        monkeypatch.setenv("KEYCARD_ADMIN_TOKEN", "any-admin-token")
        assert main(["trace", "some-txn", "--from", url]) == 2
        err = capsys.readouterr().err
        assert "audit API is disabled" in err
        assert "[admin]" in err
        assert "no audit record" not in err
    finally:
        server.stop()
