"""The ``keycard-agents`` command line.

Thin on purpose: each subcommand lives with the module it belongs to and is
registered here by one function taking the argparse subparsers object (see
``COMMANDS``). A registration sets ``func`` (``Namespace -> exit code``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from keycard_agents._cli._call import add_call_command
from keycard_agents._cli._login import add_login_command
from keycard_agents._cli._trace import add_token_command, add_trace_command
from keycard_agents._conformance import add_conformance_command
from keycard_agents._demo import add_demo_command
from keycard_agents._errors import KeycardError
from keycard_agents._server._command import add_serve_command
from keycard_agents._sts._command import add_sts_command
from keycard_agents._version import __version__

__all__ = ["COMMANDS", "build_parser", "main"]

#: One function per subcommand: ``add_x_command(subparsers)``. Append to add one.
COMMANDS: list[Callable[[Any], None]] = [
    add_sts_command,
    add_serve_command,
    add_demo_command,
    add_login_command,
    add_call_command,
    add_trace_command,
    add_token_command,
    add_conformance_command,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keycard-agents",
        description="Agent-to-agent delegation with RFC 8693 token exchange.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return func(args)
    except KeycardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
