"""Terminal, JSON, Mermaid and DOT views of a delegation tree."""

from __future__ import annotations

import io
import json

import pytest
from sts_support import D, open_world
from trace_support import run_scenario

from keycard_agents._audit._render import STATUS_COLOURS, should_colour
from keycard_agents._audit._tree import build_tree
from keycard_agents.audit import (
    DelegationTree,
    TrailEntry,
    render_text,
    to_dot,
    to_json,
    to_mermaid,
)


@pytest.fixture
def tree() -> DelegationTree:
    import anyio

    async def make() -> DelegationTree:
        async with open_world() as w:
            s = await run_scenario(w)
            w.service.trail.add_agent_store(s.store)
            return await w.service.trail.tree(s.txn)

    return anyio.run(make)


def test_text_view_shows_every_hop_and_the_denials(tree: DelegationTree) -> None:
    text = render_text(tree)
    assert "\x1b[" not in text
    lines = text.splitlines()
    assert lines[0] == f"txn {tree.txn}   user alice"
    assert "5 hops, 2 denied" in lines[1]
    assert lines[3] == "alice"
    assert lines[4].startswith(
        "└─ ! a (https://a.example/)  issued → failed  [read write]  at +0 ms"
    )
    assert "├─ ✔ b (https://b.example/)  issued → completed  [read write]" in text
    assert "✔ c (https://c.example/)  issued → completed  [read]" in text
    assert f"✘ {D}  DENIED invalid_target" in text
    assert "reason: agent 'b' may not call 'https://d.example/api'" in text
    assert "✘ c (https://c.example/)  DENIED invalid_scope" in text
    assert "scopes denied: write" in text
    assert "task task-b · skill plan" in text
    # the tree lines nest: c and D under b, b and the denied c under a
    b_line = next(i for i, line in enumerate(lines) if "✔ b " in line)
    d_line = next(i for i, line in enumerate(lines) if f"✘ {D}" in line)
    assert lines[d_line].index("└─") > lines[b_line].index("├─")


def test_colour_only_when_asked(tree: DelegationTree) -> None:
    coloured = render_text(tree, colour=True)
    assert "\x1b[31m✘\x1b[0m" in coloured  # denied in red
    assert "\x1b[32m✔\x1b[0m" in coloured  # ok in green
    assert "\x1b[33m!\x1b[0m" in coloured  # failed in yellow


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_should_colour_follows_tty_and_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert should_colour(_Tty()) is True
    assert should_colour(io.StringIO()) is False
    monkeypatch.setenv("NO_COLOR", "")
    assert should_colour(_Tty()) is False


def test_control_characters_in_records_cannot_reach_the_terminal() -> None:
    evil = TrailEntry(
        source="agent",
        kind="served",
        time=1.0,
        outcome="failed",
        txn="t",
        user="mallory\x1b[2J",
        agent="x\x1b]0;pwned\x07",
        reason="boom\x1b[31m",
    )
    text = render_text(build_tree("t", [evil]))
    assert "\x1b" not in text
    assert "\x07" not in text
    assert "mallory?[2J" in text


def test_json_export_round_trips(tree: DelegationTree) -> None:
    data = json.loads(to_json(tree))
    assert DelegationTree.from_dict(data).to_dict() == tree.to_dict()
    denied = [h for h in data["hops"][0]["children"] if h["status"] == "denied"]
    assert denied[0]["error"] == "invalid_scope"
    assert denied[0]["scopes_denied"] == ["write"]


def test_mermaid_export(tree: DelegationTree) -> None:
    text = to_mermaid(tree)
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    assert lines[1] == '  n0(["alice"]):::user'
    assert '  n1["a<br/>issued → failed"]:::failed' in lines
    assert '  n0 -->|"read write"| n1' in lines
    assert f'  n4["{D}<br/>DENIED invalid_target"]:::denied' in lines
    assert '  n2 -. "denied: read" .-> n4' in lines
    assert '  n1 -. "denied: write" .-> n5' in lines
    assert f"  classDef denied fill:{STATUS_COLOURS['denied']}" in text


def test_mermaid_and_dot_escape_quotes() -> None:
    entry = TrailEntry(
        source="agent",
        kind="served",
        time=1.0,
        outcome="completed",
        txn='t"1',
        user='al"ice',
        agent='x"<y>',
    )
    tree = build_tree('t"1', [entry])
    mermaid = to_mermaid(tree)
    assert '"al#quot;ice"' in mermaid
    assert "x#quot;#lt;y#gt;" in mermaid
    dot = to_dot(tree)
    assert 'digraph "txn t\\"1"' in dot
    assert 'label="al\\"ice"' in dot


def test_dot_export(tree: DelegationTree) -> None:
    text = to_dot(tree)
    assert text.startswith(f'digraph "txn {tree.txn}" {{\n  rankdir=LR;')
    assert text.rstrip().endswith("}")
    assert f'  n0 [label="alice", fillcolor="{STATUS_COLOURS["user"]}"];' in text
    assert (
        f'  n4 [label="{D}\\nDENIED invalid_target", fillcolor="{STATUS_COLOURS["denied"]}"];'
        in text
    )
    assert (
        f'  n2 -> n4 [label="denied: read", style=dashed, color="{STATUS_COLOURS["denied"]}"];'
        in text
    )
    assert '  n2 -> n3 [label="read"];' in text
