"""``keycard-agents trace TXN`` and ``keycard-agents token inspect``.

``trace`` draws the delegation tree of one transaction (the ``txn`` claim shared by
every token of an RFC 8693 chain) from the token service's audit file, agents' audit
files, an exported tree, or a running token service's audit API (admin credential from
the ``KEYCARD_ADMIN_TOKEN`` environment variable or a file, never the command line).
``token inspect`` is in :mod:`._inspect`. Exit codes: 0 success, 1 unknown ``txn`` or a
token that does not verify, 2 bad input or usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import anyio
import httpx

from keycard_agents._audit._agent_records import JsonlAgentAuditStore
from keycard_agents._audit._render import render_text, should_colour, to_dot, to_json, to_mermaid
from keycard_agents._audit._sts_records import JsonlAuditStore
from keycard_agents._audit._trail import AuditTrail
from keycard_agents._audit._tree import DelegationTree, build_tree
from keycard_agents._errors import InvalidTokenError, TraceNotFoundError
from keycard_agents._oauth._inspect import inspect_token, looks_like_jwt, render_report
from keycard_agents._sts._config import load_config

__all__ = ["add_token_command", "add_trace_command", "run_token_inspect", "run_trace"]

ADMIN_TOKEN_ENV = "KEYCARD_ADMIN_TOKEN"  # noqa: S105 (a variable name)
_FORMATS = ("text", "json", "mermaid", "dot")


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def add_trace_command(subparsers: Any) -> None:
    """Register ``trace TXN``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "trace",
        help="draw the delegation tree of a transaction (txn) from the audit trail",
        description=(
            "Draw the delegation tree of one transaction: the user at the root, each hop "
            "with agent, target, scopes granted or denied, timing and outcome. Read the "
            "records from audit files (--config, --audit), an exported tree (--tree) or a "
            f"running token service (--from URL, admin token in ${ADMIN_TOKEN_ENV})."
        ),
    )
    parser.add_argument("txn", help="the transaction id (the 'txn' claim of any token in it)")
    parser.add_argument(
        "--config", type=Path, help="token service TOML: reads its audit_file, names agents"
    )
    parser.add_argument(
        "--audit",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a JSON Lines audit file of the token service or of an agent (repeatable)",
    )
    parser.add_argument("--tree", type=Path, metavar="FILE", help="an exported tree (JSON)")
    parser.add_argument("--from", dest="url", metavar="URL", help="a running token service")
    parser.add_argument(
        "--admin-token-file",
        type=Path,
        metavar="FILE",
        help=f"file holding the admin token for --from (default: ${ADMIN_TOKEN_ENV})",
    )
    parser.add_argument("--format", choices=_FORMATS, default="text", help="output format")
    parser.set_defaults(func=run_trace)


def add_token_command(subparsers: Any) -> None:
    """Register ``token inspect``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "token", help="work with tokens (inspect)", description="Work with tokens."
    )
    sub = parser.add_subparsers(dest="token_command", metavar="{inspect}")
    inspect = sub.add_parser(
        "inspect",
        help="decode a token from stdin or a file, show claims and chain, verify it",
        description=(
            "Decode a JWT read from standard input or FILE (never pass a token as an "
            "argument: it would stay in your shell history), show its claims and its "
            "delegation chain, and verify it when --issuer is given."
        ),
    )
    inspect.add_argument("file", nargs="?", default="-", help="file with the token (- = stdin)")
    inspect.add_argument("--issuer", help="verify: the trusted issuer URL")
    inspect.add_argument("--audience", help="verify: the resource URL the token must be for")
    inspect.add_argument(
        "--jwks", type=Path, metavar="FILE", help="verify with this JWK Set instead of fetching"
    )
    inspect.add_argument("--jwks-uri", help="verify with keys from this URL (default: metadata)")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=_token_help(parser), token_command=None)
    inspect.set_defaults(func=run_token_inspect)


def _token_help(parser: argparse.ArgumentParser) -> Any:
    def show(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    return show


# -- trace ----------------------------------------------------------------------------------


def _paint(stream: IO[str]) -> Any:

    colour = should_colour(stream)
    codes = {"red": "31", "green": "32", "bold": "1", "dim": "2"}

    def paint(text: str, style: str) -> str:
        return f"\x1b[{codes[style]}m{text}\x1b[0m" if colour else text

    return paint


def _admin_token(args: argparse.Namespace) -> str | None:
    if args.admin_token_file is not None:
        try:
            return str(args.admin_token_file.read_text(encoding="utf-8")).strip() or None
        except (OSError, UnicodeDecodeError) as exc:
            raise _InputError(
                f"cannot read the admin token file {args.admin_token_file} ({type(exc).__name__})"
            ) from exc
    return os.environ.get(ADMIN_TOKEN_ENV) or None


class _InputError(Exception):
    pass


def _load_tree_file(path: Path) -> Any:

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return DelegationTree.from_dict(data)
    except OSError as exc:
        raise _InputError(f"cannot read {path} ({type(exc).__name__})") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise _InputError(
            f"{path} is not an exported delegation tree (make one with --format json)"
        ) from exc


def _fetch_tree(url: str, txn: str, token: str | None) -> Any:

    if token is None:
        raise _InputError(
            f"--from needs the admin token: set ${ADMIN_TOKEN_ENV} or pass --admin-token-file"
        )
    endpoint = f"{url.rstrip('/')}/audit/api/tree/{quote(txn, safe='')}"
    try:
        reply = httpx.get(endpoint, headers={"Authorization": f"Bearer {token}"}, timeout=10.0)
    except httpx.HTTPError as exc:
        raise _InputError(f"cannot reach {url} ({type(exc).__name__})") from exc
    if reply.status_code == 404:
        if _error_code(reply) != "not_found":  # not the audit API's own answer
            raise _InputError(
                f"{url} does not serve the audit API (/audit/api/...): the token service "
                "runs without an [admin] section, so its audit API is disabled. Add [admin] "
                "with token_hash (from `keycard-agents sts hash-secret`) and restart it, or "
                "read its audit_file with --audit FILE"
            )
        raise TraceNotFoundError(f"the token service at {url} has no audit record for txn {txn!r}")
    if reply.status_code == 401:
        raise _InputError(f"{url} refused the admin token (HTTP 401)")
    if reply.status_code != 200:
        raise _InputError(f"{url} answered HTTP {reply.status_code} for the audit tree")
    try:
        return DelegationTree.from_dict(reply.json())
    except ValueError as exc:
        raise _InputError(f"{url} did not answer with a delegation tree") from exc


def _error_code(reply: httpx.Response) -> str | None:
    """The OAuth-style ``error`` of a JSON answer, else ``None``."""
    try:
        body = reply.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) else None


async def _tree_from_files(txn: str, config: Path | None, audits: list[Path]) -> Any:

    names: dict[str, str] = {}
    files = list(audits)
    if config is not None:
        loaded = load_config(config)
        names = {a.resource: a.client_id for a in loaded.agents}
        if loaded.audit_file is not None:
            files.insert(0, loaded.audit_file)
        elif not audits:
            raise _InputError(
                f"{config.name} sets no audit_file (the token service kept its records in "
                "memory): use --from URL against the running service, or --audit FILE"
            )
    for path in files:
        if not path.is_file():
            raise _InputError(f"audit file {path} does not exist")
    trees = []
    for path in files:  # a file may hold token service records, agent records or both
        trail = AuditTrail(
            token_service=JsonlAuditStore(path), agents=[JsonlAgentAuditStore(path)], names=names
        )
        trees.append(await trail.query(txn=txn, limit=1_000_000))
    entries = [entry for found in trees for entry in found]
    if not entries:
        shown = ", ".join(str(p) for p in files)
        raise TraceNotFoundError(f"no audit record for txn {txn!r} in {shown}")

    return build_tree(txn, entries, names=names)


def run_trace(args: argparse.Namespace) -> int:

    sources = sum(
        x is not None and x != [] for x in (args.config, args.audit or None, args.tree, args.url)
    )
    if sources == 0:
        return _fail(
            "say where the records are: --config FILE, --audit FILE, --tree FILE or --from URL"
        )
    if args.tree is not None and sources > 1:
        return _fail("--tree shows an exported tree as is; do not combine it with other sources")
    if args.url is not None and sources > 1:
        return _fail("--from reads a running token service; do not combine it with files")
    try:
        if args.tree is not None:
            tree = _load_tree_file(args.tree)
            if tree.txn != args.txn:
                raise TraceNotFoundError(f"{args.tree} holds txn {tree.txn!r}, not {args.txn!r}")
        elif args.url is not None:
            tree = _fetch_tree(args.url, args.txn, _admin_token(args))
        else:
            tree = anyio.run(_tree_from_files, args.txn, args.config, args.audit)
    except _InputError as exc:
        return _fail(str(exc))
    except TraceNotFoundError as exc:
        return _fail(str(exc), code=1)
    if args.format == "json":
        sys.stdout.write(to_json(tree) + "\n")
    elif args.format == "mermaid":
        sys.stdout.write(to_mermaid(tree))
    elif args.format == "dot":
        sys.stdout.write(to_dot(tree))
    else:
        sys.stdout.write(render_text(tree, colour=should_colour(sys.stdout)))
    return 0


# -- token inspect --------------------------------------------------------------------------


def _read_token(source: str) -> str:

    if source == "-":
        if sys.stdin.isatty():
            raise _InputError(
                "no token: pipe it in (`... | keycard-agents token inspect`) or name a file"
            )
        return sys.stdin.read(1 << 20)
    path = Path(source)
    try:
        exists = path.is_file()
    except OSError:  # e.g. a name too long to be a file: a pasted token
        exists = False
    if not exists:
        if looks_like_jwt(source):
            raise _InputError(
                "do not pass a token as an argument: it stays in your shell history and "
                "process list. Pipe it in on standard input or put it in a file"
            )
        raise _InputError(f"no such file: {source}")
    try:
        with path.open("r", encoding="utf-8") as fh:
            return fh.read(1 << 20)
    except (OSError, UnicodeDecodeError) as exc:
        raise _InputError(f"cannot read {source} ({type(exc).__name__})") from exc


def run_token_inspect(args: argparse.Namespace) -> int:

    try:
        token = _read_token(args.file)
        jwks = None
        if args.jwks is not None:
            try:
                jwks = json.loads(args.jwks.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise _InputError(
                    f"cannot read the JWK Set {args.jwks} ({type(exc).__name__})"
                ) from exc
            if not isinstance(jwks, dict):
                raise _InputError(f"{args.jwks} is not a JWK Set (a JSON object with 'keys')")
        if (args.audience or args.jwks or args.jwks_uri) and not args.issuer:
            raise _InputError("--audience, --jwks and --jwks-uri need --issuer (what to trust)")
        report = anyio.run(
            lambda: inspect_token(
                token,
                issuer=args.issuer,
                audience=args.audience,
                jwks=jwks,
                jwks_uri=args.jwks_uri,
            )
        )
    except _InputError as exc:
        return _fail(str(exc))
    except InvalidTokenError as exc:
        return _fail(str(exc))
    if args.json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(render_report(report, paint=_paint(sys.stdout)))
    return 1 if report.verified is False else 0
