"""``keycard-agents serve module:AgentClass``: load an agent and serve it.

The target is ``module:attribute`` (dotted attribute paths allowed), as uvicorn reads
application targets. The attribute is an :class:`~keycard_agents._agent._agent.Agent` subclass
(constructed with the URL and issuer options), or an already constructed agent.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from typing import Any

import httpx

from keycard_agents._agent._agent import Agent
from keycard_agents._errors import ConfigurationError, KeycardError
from keycard_agents._json import loads_bounded
from keycard_agents._logs import configure_logging
from keycard_agents._oauth._urls import discovery_urls, identifier_mismatch
from keycard_agents._server._protocol import DEFAULT_MAX_BODY_SIZE
from keycard_agents._server._serve import serve
from keycard_agents._server._timeouts import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_KEEP_ALIVE_TIMEOUT,
)

__all__ = [
    "add_serve_arguments",
    "add_serve_command",
    "discover_token_endpoint",
    "load_agent",
    "run_serve",
]


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``keycard-agents serve`` to ``parser``."""
    parser.add_argument("target", help="the agent to serve, as module:AgentClass")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (8000)")
    parser.add_argument(
        "--url",
        default=None,
        help="the agent's canonical URL, the audience of its tokens (http://HOST:PORT)",
    )
    parser.add_argument("--issuer", default=None, help="issuer of the tokens the agent accepts")
    parser.add_argument(
        "--token-endpoint",
        default=None,
        help="the issuer's token endpoint (default: read from the issuer's RFC 8414 metadata)",
    )
    parser.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="asyncio (uvicorn) or trio (hypercorn)",
    )
    parser.add_argument(
        "--max-body-size",
        type=int,
        default=DEFAULT_MAX_BODY_SIZE,
        help=f"largest accepted request body in bytes ({DEFAULT_MAX_BODY_SIZE})",
    )
    parser.add_argument(
        "--allow-missing-version",
        action="store_true",
        help="serve requests without an A2A-Version header as A2A 1.0",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        help="log level of the server and the agent: debug, info, warning, error (info)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=None,
        help="the agent's log lines as text or JSON Lines (default: $KEYCARD_LOG_FORMAT or text)",
    )
    for name, default, what in (
        ("header", DEFAULT_HEADER_TIMEOUT, "a request's headers may take to arrive"),
        ("body", DEFAULT_BODY_TIMEOUT, "a request body may take after its headers"),
        ("keep-alive", DEFAULT_KEEP_ALIVE_TIMEOUT, "an idle connection stays open"),
    ):
        parser.add_argument(
            f"--{name}-timeout", type=float, default=default, help=f"seconds {what} ({default:g})"
        )


def load_agent(
    target: str,
    *,
    url: str | None = None,
    issuer: str | None = None,
    token_endpoint: str | None = None,
) -> Any:
    """Import ``module:attribute`` and return an agent instance."""

    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(
            f"target {target!r} must be module:AgentClass (for example myapp.agents:Planner)",
            setting="target",
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"cannot import module {module_name!r}: {exc}", setting="target"
        ) from exc
    for name in attribute.split("."):
        try:
            obj = getattr(obj, name)
        except AttributeError:
            raise ConfigurationError(
                f"module {module_name!r} has no attribute {attribute!r}", setting="target"
            ) from None
    options: dict[str, Any] = {"url": url, "issuer": issuer, "token_endpoint": token_endpoint}
    if isinstance(obj, type) and issubclass(obj, Agent):
        return obj(**{k: v for k, v in options.items() if v is not None})
    if isinstance(obj, Agent):
        if url is not None:
            obj.url = url
        if issuer is not None or token_endpoint is not None:
            raise ConfigurationError(
                f"{target} is an agent instance: set its issuer where it is constructed",
                setting="issuer",
            )
        return obj
    raise ConfigurationError(
        f"{target} is a {type(obj).__name__}, not an Agent subclass or instance",
        setting="target",
    )


#: What the Python API calls a setting, and the option of this command that sets it.
_FLAGS = {
    "url": "--url",
    "issuer": "--issuer",
    "token_endpoint": "--token-endpoint",
    "metadata_url": "--issuer",
    "backend": "--backend",
    "target": "TARGET",
}


def discover_token_endpoint(issuer: str, *, timeout: float = 10.0) -> str:
    """The ``token_endpoint`` of ``issuer``'s RFC 8414 metadata (OpenID Connect
    discovery as the fallback), checking that the metadata names the same issuer."""
    tried = []
    for url in discovery_urls(issuer):
        tried.append(url)
        try:
            reply = httpx.get(url, headers={"Accept": "application/json"}, timeout=timeout)
        except httpx.HTTPError as exc:
            raise ConfigurationError(
                f"cannot reach --issuer {issuer} to discover its token endpoint "
                f"({type(exc).__name__} at {url}): start the token service first, or pass "
                "--token-endpoint URL",
                setting="issuer",
            ) from exc
        if reply.status_code == 404:
            continue
        try:
            metadata = loads_bounded(reply.content) if reply.status_code == 200 else None
        except ValueError:
            metadata = None
        if not isinstance(metadata, dict):
            raise ConfigurationError(
                f"--issuer {issuer}: {url} answered HTTP {reply.status_code} without JSON "
                "metadata; check the URL, or pass --token-endpoint URL",
                setting="issuer",
            )
        if metadata.get("issuer") != issuer:
            raise ConfigurationError(
                f"--issuer {issuer}: {identifier_mismatch(metadata.get('issuer'), issuer)} "
                f"(metadata at {url}, RFC 8414 §3.3); pass the issuer string exactly as the "
                "token service prints it, including any trailing slash",
                setting="issuer",
            )
        endpoint = metadata.get("token_endpoint")
        if not isinstance(endpoint, str) or not endpoint:
            break
        return endpoint
    raise ConfigurationError(
        f"--issuer {issuer} publishes no token_endpoint (tried {' and '.join(tried)}); "
        "pass --token-endpoint URL",
        setting="token_endpoint",
    )


def _in_flags(exc: KeycardError) -> str:
    """The error as the command line says it: options, not Python arguments."""
    message = str(exc)
    if isinstance(exc, ConfigurationError) and exc.setting == "issuer":
        message = message.replace(
            "pass Agent(issuer=..., token_endpoint=...) or create_app(agent, verifier=...)",
            "pass --issuer URL (its token endpoint is read from its metadata)",
        )
    for name, flag in _FLAGS.items():
        message = re.sub(rf"(?<![\w-]){name}=", f"{flag} ", message)
        message = re.sub(rf"(?<![\w./-]){name}(?![\w=/-])", flag, message)
    return message


def run_serve(args: argparse.Namespace) -> int:
    """Run ``keycard-agents serve``; the process exit status."""

    try:
        configure_logging(level=args.log_level, fmt=args.log_format)
    except ValueError as exc:
        print(f"keycard-agents serve: --log-level/--log-format: {exc}", file=sys.stderr)
        return 2
    try:
        token_endpoint = args.token_endpoint
        if args.issuer is not None and token_endpoint is None:
            token_endpoint = discover_token_endpoint(args.issuer)
        agent = load_agent(
            args.target, url=args.url, issuer=args.issuer, token_endpoint=token_endpoint
        )
        serve(
            agent,
            host=args.host,
            port=args.port,
            backend=args.backend,
            log_level=args.log_level,
            max_body_size=args.max_body_size,
            allow_missing_version=args.allow_missing_version,
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
            keep_alive_timeout=args.keep_alive_timeout,
        )
    except KeycardError as exc:
        print(f"keycard-agents serve: {_in_flags(exc)}", file=sys.stderr)
        return 2
    return 0


def add_serve_command(subparsers: Any) -> None:
    """Register ``keycard-agents serve module:AgentClass``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="serve an agent over A2A 1.0",
        description="Serve an Agent subclass over A2A 1.0 (JSON-RPC and HTTP+JSON).",
    )
    add_serve_arguments(parser)
    parser.set_defaults(func=run_serve)
