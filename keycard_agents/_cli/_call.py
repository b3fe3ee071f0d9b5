"""``keycard-agents call AGENT_URL SKILL --arg k=v``: call an agent as the signed-in user.

Uses the token ``keycard-agents login`` cached for the agent (RFC 6750 bearer token over
the A2A 1.0 ``SendMessage`` call); prints the skill's result as JSON. ``--arg`` values
are JSON when they parse as JSON (``--arg days=3``, ``--arg 'tags=["a"]'``), else text.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import anyio

from keycard_agents._cli._login import TOKEN_CACHE_ENV, TokenCache
from keycard_agents._client._agent_client import open_agent_client
from keycard_agents._errors import KeycardError

__all__ = ["add_call_command", "parse_arguments"]


def parse_arguments(pairs: list[str]) -> dict[str, Any]:
    """``["day=Monday", "count=3"]`` → ``{"day": "Monday", "count": 3}``."""
    arguments: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.isidentifier():
            raise ValueError(f"--arg {pair!r}: write NAME=VALUE (for example --arg day=Monday)")
        try:
            arguments[name] = json.loads(raw)
        except ValueError:
            arguments[name] = raw
    return arguments


def add_call_command(subparsers: Any) -> None:
    """Register ``call``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "call",
        help="call an agent's skill as the user `login` signed in",
        description=(
            "Call SKILL of the agent at AGENT_URL over A2A with the token `keycard-agents "
            f"login --resource AGENT_URL` cached (${TOKEN_CACHE_ENV}); print the result as "
            "JSON."
        ),
    )
    parser.add_argument("url", metavar="AGENT_URL", help="the agent's URL (as signed in for)")
    parser.add_argument("skill", metavar="SKILL", help="the skill id")
    parser.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a skill argument (repeatable); VALUE is JSON when it parses, else text",
    )
    parser.add_argument("--issuer", help="use the token from this issuer (default: any)")
    parser.set_defaults(func=run_call)


def run_call(args: argparse.Namespace) -> int:
    try:
        arguments = parse_arguments(args.arg)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cache = TokenCache()
    token = cache.find(args.url, issuer=args.issuer)
    if token is None:
        print(
            f"error: no signed-in token for {args.url} in {cache.path}: run "
            f"`keycard-agents login --issuer ISSUER --resource {args.url}` first",
            file=sys.stderr,
        )
        return 2

    async def go() -> Any:
        async with open_agent_client(args.url, token=token.access_token) as client:
            return await client.call(args.skill, **arguments)

    try:
        result = anyio.run(go)
    except KeycardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    return 0
