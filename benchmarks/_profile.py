"""Summarize a py-spy ``--format raw`` profile (collapsed stacks): the top frames.

    python benchmarks/_profile.py PROFILE.txt [--top 25]

Prints the functions with the largest inclusive and self shares of the samples.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::\d+)?\)$")


def _name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match.group("file")
    for marker in ("site-packages/", "keycard_agents/", "benchmarks/"):
        if marker in path:
            path = (
                path.split(marker, 1)[1]
                if marker == "site-packages/"
                else marker + path.split(marker, 1)[1]
            )
            break
    return f"{match.group('func')} ({path})"


#: Frames of the event loop and the server stack: they contain every request, so their
#: inclusive share says nothing. Inclusive shares are listed for the other frames.
_PLUMBING = (
    "asyncio/",
    "uvicorn/",
    "starlette/",
    "fastapi/",
    "anyio/",
    "h11/",
    "<",
    "contextlib",
    "servers.py",
    "chain_agent.py",
    "keycard_agents/_cli.py",
    "keycard_agents/_sts/_command.py",
)


def _plumbing(name: str) -> bool:
    where = name.rpartition("(")[2]
    return where.startswith(_PLUMBING) or name.startswith("<module>")


def summarize_profile(path: Path, *, top: int = 25) -> dict[str, Any]:
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    total = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        for name in set(frames):
            inclusive[name] += count
        self_time[frames[-1]] += count
    share = (lambda n: round(100.0 * n / total, 1)) if total else (lambda n: 0.0)
    return {
        "samples": total,
        "inclusive_percent": [
            (name, share(n)) for name, n in inclusive.most_common() if not _plumbing(name)
        ][:top],
        "self_percent": [(name, share(n)) for name, n in self_time.most_common(top)],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    result = summarize_profile(args.profile, top=args.top)
    print(f"{result['samples']} samples")
    print("inclusive:")
    for name, pct in result["inclusive_percent"]:
        print(f"  {pct:5.1f}%  {name}")
    print("self:")
    for name, pct in result["self_percent"]:
        print(f"  {pct:5.1f}%  {name}")


if __name__ == "__main__":
    main()
