"""``keycard-agents sts``: run the token service, rotate its key, hash a secret.

Command-line front end of the embedded token service (RFC 8414 metadata is
printed at start-up). Heavy imports happen inside the commands so that
``keycard-agents --help`` stays fast.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any

import uvicorn

from keycard_agents._errors import ConfigurationError
from keycard_agents._jose._keys import KeyStore
from keycard_agents._logs import configure_logging, lean_log_records
from keycard_agents._oauth._urls import authorization_server_metadata_url
from keycard_agents._server._heap import freeze_startup_heap
from keycard_agents._server._timeouts import ServerTimeouts, escape_server_logs, uvicorn_options
from keycard_agents._sts._app import TokenService
from keycard_agents._sts._config import load_config
from keycard_agents._sts._connections._vault import VaultKeys
from keycard_agents._sts._secrets import (
    WeakSecretError,
    hash_client_secret,
    hash_secret,
    new_client_secret,
)
from keycard_agents._sts._values import check_url

__all__ = ["add_sts_command"]

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def add_sts_command(subparsers: Any) -> None:
    """Register ``sts`` (and its ``rotate-key`` / ``hash-secret`` subcommands)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sts",
        help="run the embedded token service",
        description="Run the embedded RFC 8693 token service (see docs/token-service.md).",
    )
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="the token service TOML configuration"
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8900, help="TCP port (default 8900)")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="info: one line per token issued or denied; error: 5xx only (default info)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=None,
        help="log lines as text or JSON Lines (default: $KEYCARD_LOG_FORMAT or text)",
    )
    parser.set_defaults(func=run_sts, sts_command=None)
    sub = parser.add_subparsers(
        dest="sts_command", metavar="{rotate-key,rotate-vault-key,hash-secret}"
    )
    rotate = sub.add_parser(
        "rotate-key",
        help="make a new signing key (the old one stays published for the longest lifetime)",
        description=(
            "Make a new signing key in the configuration's key_dir (the first one when it "
            "is empty). The previous keys stay published for the longest token lifetime, so "
            "tokens they signed keep verifying; a running service uses the new key on its "
            "next request."
        ),
    )
    rotate.add_argument(
        "--config",
        dest="rotate_config",
        type=Path,
        required=True,
        metavar="FILE",
        help="the token service TOML whose key_dir holds the keys",
    )
    rotate_vault = sub.add_parser(
        "rotate-vault-key",
        help="make a new key for the token vault (users' third-party tokens)",
        description=(
            "Make a new AES-256 key in key_dir/vault and make it the one new vault records "
            "are sealed under. Records sealed under older keys stay readable and move to the "
            "new key when next read or written; a running service seals with it from its "
            "next connect or refresh."
        ),
    )
    rotate_vault.add_argument(
        "--config",
        dest="vault_config",
        type=Path,
        required=True,
        metavar="FILE",
        help="the token service TOML whose key_dir holds the vault keys",
    )
    hashing = sub.add_parser(
        "hash-secret",
        help="make or hash a client secret (or, with --password, a password) for the config",
        description=(
            "Read one client secret from standard input (prompted without echo on a "
            "terminal) and print its hash for secret_hash, [admin] token_hash or "
            "initial_access_token_hash: a secret of at least 256 random bits, stored as "
            "sha256$... and checked at the speed of a hash lookup (weaker ones are refused). "
            "--generate FILE makes a new secret instead; --password hashes a password people "
            "chose with scrypt, for [[users]] password_hash. The secret never appears in "
            "your shell history or process list."
        ),
    )
    kind = hashing.add_mutually_exclusive_group()
    kind.add_argument(
        "--generate",
        metavar="FILE",
        type=Path,
        help="make a new client secret, write it to FILE (owner-only; refused if FILE "
        "exists) and print its hash",
    )
    kind.add_argument(
        "--password",
        action="store_true",
        help="hash a password people chose (scrypt) instead of a generated client secret",
    )


def run_sts(args: argparse.Namespace) -> int:
    if args.sts_command == "hash-secret":
        if args.generate is not None:
            return _generate_secret(args.generate)
        return _hash_secret(password=args.password)
    if args.sts_command == "rotate-key":
        return _rotate_key(args.rotate_config)
    if args.sts_command == "rotate-vault-key":
        return _rotate_vault_key(args.vault_config)
    try:
        configure_logging(level=args.log_level, fmt=args.log_format)
    except ValueError as exc:
        raise ConfigurationError(f"sts: {exc}", setting="log-format") from None
    return _serve(args.config, host=args.host, port=args.port)


def _hash_secret(*, password: bool) -> int:

    if sys.stdin.isatty():
        secret = getpass.getpass("password to hash: " if password else "secret to hash: ")
    else:
        secret = sys.stdin.readline().rstrip("\r\n")
    if not secret:
        print("error: no secret on stdin (pipe it in: `printf %s SECRET | ...`)", file=sys.stderr)
        return 2
    if password:
        print(hash_secret(secret))
        return 0
    try:
        print(hash_client_secret(secret))
    except WeakSecretError as exc:
        print(
            f"error: not hashed as a client secret: {exc}. Make one with "
            "`keycard-agents sts hash-secret --generate FILE`, or hash a password people "
            "chose with --password (scrypt; for [[users]] password_hash)",
            file=sys.stderr,
        )
        return 2
    return 0


def _generate_secret(path: Path) -> int:
    secret = new_client_secret()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"error: {path} exists; choose a new file for the secret", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot create {path}: {exc.strerror}", file=sys.stderr)
        return 2
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(secret + "\n")
    print(hash_client_secret(secret))
    print(f"the client secret is in {path} (owner-only): give it to the agent", file=sys.stderr)
    return 0


def _rotate_key(config_path: Path) -> int:

    config = load_config(config_path)
    if config.key_dir is None:
        raise ConfigurationError(
            f"{config_path.name}: key_dir: rotate-key needs a key_dir (keys kept in memory "
            "are new on every start and cannot be rotated from outside)",
            setting="key_dir",
        )
    had_keys = config.key_dir.is_dir() and any(config.key_dir.glob("*.json"))
    store = KeyStore(config.key_dir, alg=config.alg, retention=config.longest_lifetime())
    if not had_keys:
        first = store.current
        print(f"first signing key {first.kid} ({first.alg}) created in {config.key_dir}")
        return 0
    old = [k.kid for k in store.published()]
    new = store.rotate()
    print(f"new signing key {new.kid} ({new.alg}) in {config.key_dir}")
    if old:
        print(
            f"still published for {config.longest_lifetime():g} s: {', '.join(old)}; "
            "a running token service picks the new key up on its next request"
        )
    return 0


def _rotate_vault_key(config_path: Path) -> int:

    config = load_config(config_path)
    if config.key_dir is None:
        raise ConfigurationError(
            f"{config_path.name}: key_dir: rotate-vault-key needs a key_dir (the vault keys "
            "are kept in key_dir/vault)",
            setting="key_dir",
        )
    directory = config.key_dir / "vault"
    had_keys = directory.is_dir() and any(directory.glob("*.key"))
    keys = VaultKeys(directory)
    if not had_keys:
        print(f"first vault key {keys.current_kid} created in {directory}")
        return 0
    old = keys.current_kid
    new = keys.rotate()
    print(
        f"new vault key {new} in {directory}; records sealed under {old} stay readable and "
        "move to the new key when next read or written"
    )
    return 0


def _serve(config_path: Path | None, *, host: str, port: int) -> int:

    if config_path is None:
        raise ConfigurationError("sts: pass --config FILE (see examples/sts.toml)")
    config = load_config(config_path)
    if config.issuer is None:
        shown = f"[{host}]" if ":" in host else host
        issuer = f"http://{shown}:{port}"
        try:
            check_url(issuer)
        except ValueError:
            raise ConfigurationError(
                f"{config_path.name}: issuer: not set, and http://{host} is not a loopback "
                "address; set issuer to the https URL clients reach this service at",
                setting="issuer",
            ) from None
        config = config.model_copy(update={"issuer": issuer})
    service = TokenService(config)
    if host not in _LOOPBACK:
        print(
            "warning: the token service is a development tool; it now listens beyond this machine",
            file=sys.stderr,
        )
    print(f"keycard-agents token service: issuer {service.issuer}", flush=True)
    print(
        f"  metadata {authorization_server_metadata_url(service.issuer)}",
        flush=True,
    )
    if service.audit_page is not None:
        print(f"  audit page {service.issuer.rstrip('/')}/audit (admin credential)", flush=True)
    limits = config.limits
    timeouts = ServerTimeouts(
        header=limits.header_timeout, body=limits.body_timeout, keep_alive=limits.keep_alive_timeout
    )
    escape_server_logs()
    lean_log_records()
    freeze_startup_heap()
    uvicorn.run(
        service.app,
        host=host,
        port=port,
        log_level="info",
        access_log=False,
        **uvicorn_options(timeouts),
    )
    return 0
