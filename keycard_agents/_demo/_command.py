"""Registers ``keycard-agents demo`` (see :mod:`._run`); imports nothing heavy."""

from __future__ import annotations

import argparse
import os
from typing import Any

from keycard_agents._demo._run import DEFAULT_REQUEST, run_demo

__all__ = ["add_demo_command", "run_demo_command"]


def add_demo_command(subparsers: Any) -> None:
    """Register ``demo``: user → planner → travel → MCP tool, end to end on loopback."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="run a token service, three agents and an MCP server; delegate one request",
        description=(
            "Start the embedded token service, three A2A agents and an MCP tool server on "
            "127.0.0.1, sign the demo user alice in (authorization code + PKCE), send her "
            "request through planner → travel → MCP tool (and weather), print the answer and "
            "the delegation tree from the audit trail, then stop everything."
        ),
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the services up (Ctrl-C stops them) to explore with curl or an A2A client",
    )
    parser.add_argument(
        "--port-base",
        type=int,
        metavar="PORT",
        help="use five consecutive ports from PORT (default: free ports chosen by the system)",
    )
    parser.add_argument(
        "--request",
        default=None,
        metavar="TEXT",
        help='what alice asks the planner (default: "plan a trip to Lisbon")',
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        metavar="N",
        help="run N replicas of the token service and the planner, sharing --redis (1)",
    )
    parser.add_argument(
        "--redis",
        default=None,
        metavar="URL",
        help="the Redis replicas share (default: $KEYCARD_REDIS_URL); see docs/replicas.md",
    )
    parser.set_defaults(func=run_demo_command)


def run_demo_command(args: argparse.Namespace) -> int:

    return run_demo(
        keep_running=args.keep_running,
        port_base=args.port_base,
        request=args.request or DEFAULT_REQUEST,
        replicas=args.replicas,
        redis=args.redis or os.environ.get("KEYCARD_REDIS_URL") or None,
    )
