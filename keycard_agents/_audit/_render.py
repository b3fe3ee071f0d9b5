"""Views of a delegation tree: terminal text, JSON, Mermaid and Graphviz DOT.

The terminal view uses ANSI SGR colours (ECMA-48 §8.3.117) only when asked; the
``trace`` command asks when standard output is a terminal and ``NO_COLOR`` is unset
(no-color.org). Exports carry identifiers and decisions only, never a token.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import IO

from keycard_agents._audit._tree import DelegationTree, Hop

__all__ = [
    "STATUS_COLOURS",
    "render_text",
    "should_colour",
    "to_dot",
    "to_json",
    "to_mermaid",
]

#: Fill colours of the drawn graphs (SVG, Mermaid, DOT), by hop status; ``user`` = root.
STATUS_COLOURS = {
    "user": "#2563eb",
    "ok": "#16a34a",
    "denied": "#dc2626",
    "failed": "#ea580c",
    "pending": "#0891b2",
    "unknown": "#6b7280",
}

_ANSI = {
    "ok": "32",
    "denied": "31",
    "failed": "33",
    "pending": "36",
    "unknown": "90",
    "bold": "1",
    "dim": "2",
}
_MARK = {"ok": "✔", "denied": "✘", "failed": "!", "pending": "…", "unknown": "?"}


#: What the terminal view's terms mean, printed under every tree.
LEGEND = (
    "txn: the id every token of this chain carries · at +T: when a hop started, after\n"
    "the first record · took: how long it lasted · token jti: the id of the token\n"
    "issued for the hop (tokens themselves are never recorded)"
)


def should_colour(stream: IO[str]) -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set (to any value)."""
    if "NO_COLOR" in os.environ:
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _when(ts: float | None) -> str:
    if ts is None:
        return "?"
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ms(seconds: float) -> str:
    if seconds >= 10:
        return f"{seconds:.1f} s"
    return f"{seconds * 1000:.0f} ms"


def _scopes(values: tuple[str, ...] | None) -> str:
    return " ".join(values) if values else "-"


def _clean(text: str) -> str:
    """No control characters from records reach the terminal (no escape injection)."""
    return "".join(c if c.isprintable() else "?" for c in text)


def describe(hop: Hop) -> str:
    """A one-line verdict: ``issued → completed``, ``DENIED invalid_scope``..."""
    if hop.status == "denied":
        return f"DENIED {hop.error}" if hop.error else "DENIED"
    parts = [p for p in (hop.decision, hop.outcome) if p]
    if not parts:
        return "not recorded"
    return " → ".join(dict.fromkeys(parts))


def render_text(tree: DelegationTree, *, colour: bool = False) -> str:
    """The tree as terminal text; ANSI colours when ``colour`` is true."""

    def paint(text: str, style: str) -> str:
        return f"\x1b[{_ANSI[style]}m{text}\x1b[0m" if colour else text

    start = tree.started
    hops = list(tree.walk())
    counts = [f"{len(hops)} hop{'s' if len(hops) != 1 else ''}"]
    for status in ("denied", "failed", "pending"):
        n = tree.count(status)
        if n:
            counts.append(paint(f"{n} {status}", status))
    span = ""
    if start is not None and tree.ended is not None:
        span = f" → {_when(tree.ended)[11:]} ({_ms(tree.ended - start)})"
    user = _clean(tree.user or "?")
    lines = [
        f"{paint('txn', 'bold')} {_clean(tree.txn)}   {paint('user', 'bold')} {user}",
        f"{_when(start)}{span} · {', '.join(counts)}",
        "",
        paint(user, "bold"),
    ]

    def emit(hop: Hop, prefix: str, last: bool) -> Iterator[str]:
        branch = "└─ " if last else "├─ "
        status = hop.status
        name = paint(_clean(hop.target), "bold")
        if hop.resource and hop.resource != hop.target:
            name += paint(f" ({_clean(hop.resource)})", "dim")
        if hop.connection:
            name += paint(f" [third-party API, connection {_clean(hop.connection)}]", "dim")
        head = f"{paint(_MARK[status], status)} {name}  {paint(describe(hop), status)}"
        if hop.scopes_granted is not None:
            head += f"  [{_clean(_scopes(hop.scopes_granted))}]"
        if start is not None and hop.started is not None:
            timing = f"at +{_ms(hop.started - start)}"
            if hop.duration:
                timing += f", took {_ms(hop.duration)}"
            head += "  " + paint(timing, "dim")
        yield prefix + branch + head
        inner = prefix + ("   " if last else "│  ")
        details: list[str] = []
        if hop.scopes_denied:
            details.append(f"scopes denied: {_clean(_scopes(hop.scopes_denied))}")
        if hop.status == "denied" and hop.scopes_requested:
            details.append(f"scopes requested: {_clean(_scopes(hop.scopes_requested))}")
        if hop.task_id or hop.skill:
            details.append(f"task {_clean(hop.task_id or '?')} · skill {_clean(hop.skill or '?')}")
        if hop.reason:
            label = "reason" if hop.status in ("denied", "failed") else "note"
            details.append(paint(f"{label}: {_clean(hop.reason)}", status))
        if hop.jti:
            details.append(paint(f"token jti {_clean(hop.jti)}", "dim"))
        tail = "│  " if hop.children else "   "
        for detail in details:
            yield inner + tail + detail
        for i, child in enumerate(hop.children):
            yield from emit(child, inner, i == len(hop.children) - 1)

    for i, hop in enumerate(tree.hops):
        lines.extend(emit(hop, "", i == len(tree.hops) - 1))
    lines.append("")
    lines.extend(paint(line, "dim") for line in LEGEND.splitlines())
    if tree.unplaced:
        lines.append("")
        lines.append(paint(f"{len(tree.unplaced)} record(s) not placed in the tree:", "dim"))
        for entry in tree.unplaced:
            lines.append(
                paint(f"  {_when(entry.time)} {entry.source} {entry.kind} {entry.outcome}", "dim")
            )
    return "\n".join(lines) + "\n"


def to_json(tree: DelegationTree, *, indent: int | None = 2) -> str:
    """The tree with every hop's evidence, loadable with ``DelegationTree.from_dict``."""
    return json.dumps(tree.to_dict(), indent=indent, sort_keys=False, ensure_ascii=False)


def _numbered(tree: DelegationTree) -> list[tuple[str, str | None, Hop]]:
    """``(node id, parent id, hop)`` for every hop; the user is ``n0``."""
    out: list[tuple[str, str | None, Hop]] = []

    def visit(hop: Hop, parent: str) -> None:
        node = f"n{len(out) + 1}"
        out.append((node, parent, hop))
        for child in hop.children:
            visit(child, node)

    for hop in tree.hops:
        visit(hop, "n0")
    return out


def _denied_label(hop: Hop) -> str:
    return f"denied: {_scopes(hop.scopes_requested)}" if hop.scopes_requested else "denied"


def _mermaid_text(text: str) -> str:
    return _clean(text).replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def to_mermaid(tree: DelegationTree) -> str:
    """A Mermaid ``flowchart`` of the tree; denied hops are dashed red edges."""
    lines = [
        "flowchart LR",
        f'  n0(["{_mermaid_text(tree.user or "?")}"]):::user',
    ]
    for node, parent, hop in _numbered(tree):
        label = f"{_mermaid_text(hop.target)}<br/>{_mermaid_text(describe(hop))}"
        lines.append(f'  {node}["{label}"]:::{hop.status}')
        if hop.status == "denied":
            edge = _mermaid_text(_denied_label(hop))
            lines.append(f'  {parent} -. "{edge}" .-> {node}')
        else:
            lines.append(f'  {parent} -->|"{_mermaid_text(_scopes(hop.scopes_granted))}"| {node}')
    for status, colour in STATUS_COLOURS.items():
        lines.append(f"  classDef {status} fill:{colour},stroke:{colour},color:#ffffff")
    return "\n".join(lines) + "\n"


def _dot_text(text: str) -> str:
    return _clean(text).replace("\\", "\\\\").replace('"', '\\"')


def to_dot(tree: DelegationTree) -> str:
    """A Graphviz DOT digraph of the tree; denied hops are dashed red edges."""
    title = _dot_text(f"txn {tree.txn}")
    lines = [
        f'digraph "{title}" {{',
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontcolor="white"];',
        '  edge [fontname="Helvetica", fontsize=10];',
        f'  n0 [label="{_dot_text(tree.user or "?")}", fillcolor="{STATUS_COLOURS["user"]}"];',
    ]
    for node, parent, hop in _numbered(tree):
        label = f"{_dot_text(hop.target)}\\n{_dot_text(describe(hop))}"
        lines.append(f'  {node} [label="{label}", fillcolor="{STATUS_COLOURS[hop.status]}"];')
        if hop.status == "denied":
            edge = _dot_text(_denied_label(hop))
            colour = STATUS_COLOURS["denied"]
            lines.append(f'  {parent} -> {node} [label="{edge}", style=dashed, color="{colour}"];')
        else:
            lines.append(
                f'  {parent} -> {node} [label="{_dot_text(_scopes(hop.scopes_granted))}"];'
            )
    lines.append("}")
    return "\n".join(lines) + "\n"
