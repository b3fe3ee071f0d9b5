"""``keycard-agents login``: sign a user in the way native command-line apps do.

By default RFC 8252 (OAuth 2.0 for native apps): the authorization code grant (RFC 6749
§4.1) with PKCE ``S256`` (RFC 7636) and a loopback redirect URI on a port chosen at run
time (§7.3), in the system browser (§8.12: never an embedded one), or the URL printed
when there is no browser. With ``--device``, the device authorization grant (RFC 8628),
for machines without a browser. The ``resource`` (RFC 8707) is the agent the token is for; the
``iss`` of the response is checked (RFC 9207), as is ``state``. Endpoints come from the
issuer's RFC 8414 metadata, so any issuer we support works, ours or a hosted one.

The token goes to a per-user cache file, readable by its owner only (0600 in a 0700
directory), keyed by issuer and resource; it is printed only with ``--print``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import secrets
import sys
import threading
import time
import webbrowser
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from keycard_agents._errors import ConfigurationError, KeycardError
from keycard_agents._json import loads_bounded
from keycard_agents._oauth._pkce import pkce_challenge
from keycard_agents._oauth._urls import discovery_urls, identifier_mismatch

__all__ = [
    "TOKEN_CACHE_ENV",
    "CachedToken",
    "LoginError",
    "TokenCache",
    "add_login_command",
    "login",
    "login_device",
]

TOKEN_CACHE_ENV = "KEYCARD_TOKEN_CACHE"  # noqa: S105 (a variable name)
DEFAULT_CLIENT_ID = "keycard-cli"
CALLBACK_PATH = "/callback"
_MAX_FILE = 1 << 20


class LoginError(KeycardError):
    """Signing in failed: the issuer refused, or the browser step never came back."""


# -- the cache ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CachedToken:
    """A user token kept by ``login`` (the repr hides the token)."""

    issuer: str
    resource: str
    access_token: str
    expires_at: float
    scope: str = ""

    def __repr__(self) -> str:
        return f"CachedToken(issuer={self.issuer!r}, resource={self.resource!r})"


def default_cache_path() -> Path:
    """``$KEYCARD_TOKEN_CACHE``, else ``$XDG_CACHE_HOME/keycard-agents/tokens.json``
    (``~/.cache/keycard-agents/tokens.json``)."""
    explicit = os.environ.get(TOKEN_CACHE_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "keycard-agents" / "tokens.json"


class TokenCache:
    """The per-user file of signed-in tokens: one JSON object, owner-only."""

    def __init__(self, path: Path | None = None, *, clock: Callable[[], float] = time.time):
        self.path = path if path is not None else default_cache_path()
        self._clock = clock

    def _read(self) -> dict[str, Any]:
        try:
            raw = self.path.read_bytes()[:_MAX_FILE]
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read the token cache {self.path} ({type(exc).__name__})",
                setting=TOKEN_CACHE_ENV,
            ) from exc
        try:
            data = loads_bounded(raw)
        except ValueError:
            return {}  # a damaged cache is as good as none: sign in again
        return data if isinstance(data, dict) else {}

    def save(self, token: CachedToken) -> None:
        """Store ``token`` (replacing one for the same issuer and resource), 0600."""
        data = self._read()
        entries = [e for e in data.get("tokens", []) if isinstance(e, dict)]
        entries = [
            e
            for e in entries
            if (e.get("issuer"), e.get("resource")) != (token.issuer, token.resource)
            and float(e.get("expires_at", 0)) > self._clock()
        ]
        entries.append(
            {
                "issuer": token.issuer,
                "resource": token.resource,
                "access_token": token.access_token,
                "expires_at": token.expires_at,
                "scope": token.scope,
            }
        )
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as fh:
            json.dump({"tokens": entries}, fh)
        os.chmod(temporary, 0o600)  # whatever the umask
        os.replace(temporary, self.path)

    def find(self, resource: str, *, issuer: str | None = None) -> CachedToken | None:
        """The newest unexpired token for ``resource`` (from ``issuer`` when given)."""
        now = self._clock()
        found = None
        for entry in self._read().get("tokens", []):
            if not isinstance(entry, dict) or entry.get("resource") != resource:
                continue
            if issuer is not None and entry.get("issuer") != issuer:
                continue
            expires = entry.get("expires_at")
            token = entry.get("access_token")
            if not isinstance(expires, (int, float)) or expires <= now + 5:
                continue
            if not isinstance(token, str) or not token:
                continue
            if found is None or expires > found.expires_at:
                found = CachedToken(
                    issuer=str(entry.get("issuer")),
                    resource=resource,
                    access_token=token,
                    expires_at=float(expires),
                    scope=str(entry.get("scope") or ""),
                )
        return found


# -- the loopback redirect ------------------------------------------------------------------


class _Callback(HTTPServer):
    """A one-shot loopback HTTP server for the authorization response (RFC 8252 §7.3)."""

    result: dict[str, str] | None = None


class _Handler(BaseHTTPRequestHandler):
    server: _Callback

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != CALLBACK_PATH:
            self.send_error(404)
            return
        query = {k: v[0] for k, v in parse_qs(parts.query).items() if v}
        self.server.result = query
        ok = "code" in query
        body = (
            "<!doctype html><title>keycard-agents</title><p>"
            + (
                "Signed in. You can close this window and return to the terminal."
                if ok
                else "Sign-in failed; see the terminal."
            )
            + "</p>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the query holds the code: never log it


# -- the flow -------------------------------------------------------------------------------


def _metadata(http: httpx.Client, issuer: str) -> dict[str, Any]:
    for url in discovery_urls(issuer):
        try:
            reply = http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise LoginError(
                f"cannot reach the issuer {issuer} ({type(exc).__name__} at {url})"
            ) from exc
        if reply.status_code == 404:
            continue
        try:
            data = loads_bounded(reply.content) if reply.status_code == 200 else None
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise LoginError(f"{url} answered HTTP {reply.status_code} without metadata")
        if data.get("issuer") != issuer:
            raise LoginError(f"{identifier_mismatch(data.get('issuer'), issuer)} (at {url})")
        return data
    raise LoginError(f"{issuer} publishes no RFC 8414 or OpenID Connect metadata")


def _endpoint(metadata: dict[str, Any], name: str, issuer: str) -> str:
    value = metadata.get(name)
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise LoginError(f"the metadata of {issuer} has no {name}")
    return value


def _error_of(reply: httpx.Response) -> str:
    try:
        body = reply.json()
    except ValueError:
        return f"HTTP {reply.status_code}"
    if not isinstance(body, dict):
        return f"HTTP {reply.status_code}"
    error = str(body.get("error", ""))[:64]
    description = str(body.get("error_description", ""))[:300]
    return f"{error}: {description}" if description else error or f"HTTP {reply.status_code}"


def login(
    *,
    issuer: str,
    resource: str,
    scopes: Sequence[str] = (),
    client_id: str = DEFAULT_CLIENT_ID,
    open_url: Callable[[str], object],
    timeout: float = 300.0,
    http: httpx.Client | None = None,
) -> CachedToken:
    """Sign a user in for ``resource``; ``open_url`` shows the sign-in page (a browser).

    Returns the token (not yet cached). Raises :class:`LoginError`.
    """
    owned = http is None
    client = http if http is not None else httpx.Client(timeout=30.0)
    server = _Callback(("127.0.0.1", 0), _Handler)
    try:
        metadata = _metadata(client, issuer)
        authorize = _endpoint(metadata, "authorization_endpoint", issuer)
        token_endpoint = _endpoint(metadata, "token_endpoint", issuer)
        redirect_uri = f"http://127.0.0.1:{server.server_address[1]}{CALLBACK_PATH}"
        verifier = secrets.token_urlsafe(48)
        state = secrets.token_urlsafe(16)
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "code_challenge": pkce_challenge(verifier),
            "code_challenge_method": "S256",
            "resource": resource,
            "state": state,
        }
        if scopes:
            params["scope"] = " ".join(scopes)
        url = f"{authorize}{'&' if '?' in authorize else '?'}{urlencode(params)}"
        waiter = threading.Thread(target=_serve_until_answer, args=(server, timeout), daemon=True)
        waiter.start()
        open_url(url)
        waiter.join(timeout + 5)
        answer = server.result
        if answer is None:
            raise LoginError(
                f"no sign-in came back within {timeout:g} s: open the URL in a browser on "
                "this machine and sign in (or run login again)"
            )
        if answer.get("state") != state:
            raise LoginError("the sign-in answer carried the wrong state: try again")
        if "iss" in answer and answer["iss"] != issuer:  # RFC 9207 mix-up defence
            raise LoginError(f"the sign-in answer came from {answer['iss'][:200]!r}, not {issuer}")
        if "code" not in answer:
            error = answer.get("error", "unknown")[:64]
            description = answer.get("error_description", "")[:300]
            raise LoginError(f"the issuer refused the sign-in: {error} {description}".strip())
        reply = client.post(
            token_endpoint,
            data={
                "grant_type": "authorization_code",
                "code": answer["code"],
                "redirect_uri": redirect_uri,
                "client_id": client_id,
                "code_verifier": verifier,
            },
            headers={"Accept": "application/json"},
        )
        if reply.status_code != 200:
            raise LoginError(f"the token endpoint refused the code: {_error_of(reply)}")
        return _token_from(reply, issuer=issuer, resource=resource)
    finally:
        server.server_close()
        if owned:
            client.close()


DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def login_device(
    *,
    issuer: str,
    resource: str,
    scopes: Sequence[str] = (),
    client_id: str = DEFAULT_CLIENT_ID,
    show: Callable[[str, str, str], object],
    timeout: float = 300.0,
    http: httpx.Client | None = None,
    sleep: Callable[[float], None] | None = None,
) -> CachedToken:
    """Sign a user in with the device authorization grant (RFC 8628) for machines
    without a browser: ``show(verification_uri, user_code, verification_uri_complete)``
    tells the person where to go; this polls until they have signed in there."""
    owned = http is None
    client = http if http is not None else httpx.Client(timeout=30.0)
    try:
        metadata = _metadata(client, issuer)
        endpoint = _endpoint(metadata, "device_authorization_endpoint", issuer)
        token_endpoint = _endpoint(metadata, "token_endpoint", issuer)
        form = {"client_id": client_id, "resource": resource}
        if scopes:
            form["scope"] = " ".join(scopes)
        reply = client.post(endpoint, data=form, headers={"Accept": "application/json"})
        if reply.status_code != 200:
            raise LoginError(f"the issuer refused the device sign-in: {_error_of(reply)}")
        try:
            body = loads_bounded(reply.content)
        except ValueError as exc:
            raise LoginError("the device authorization endpoint did not answer JSON") from exc
        if not isinstance(body, dict) or not isinstance(body.get("device_code"), str):
            raise LoginError("the device authorization endpoint answered without a device_code")
        uri = str(body.get("verification_uri", ""))
        show(uri, str(body.get("user_code", "")), str(body.get("verification_uri_complete", uri)))
        interval = float(body.get("interval") or 5)
        deadline = time.monotonic() + min(timeout, float(body.get("expires_in") or timeout))
        poll = {
            "grant_type": DEVICE_GRANT,
            "device_code": body["device_code"],
            "client_id": client_id,
        }
        wait = sleep if sleep is not None else time.sleep
        while True:
            wait(interval)
            answer = client.post(token_endpoint, data=poll, headers={"Accept": "application/json"})
            if answer.status_code == 200:
                return _token_from(answer, issuer=issuer, resource=resource)
            error = _error_of(answer)
            if error.startswith("slow_down"):
                interval += 5  # RFC 8628 §3.5
            elif not error.startswith("authorization_pending"):
                raise LoginError(f"the device sign-in failed: {error}")
            if time.monotonic() > deadline:
                raise LoginError(f"no sign-in within {timeout:g} s: run login again")
    finally:
        if owned:
            client.close()


def _serve_until_answer(server: _Callback, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    server.timeout = 0.5
    while server.result is None and time.monotonic() < deadline:
        server.handle_request()


def _token_from(reply: httpx.Response, *, issuer: str, resource: str) -> CachedToken:
    try:
        body = loads_bounded(reply.content)
    except ValueError as exc:
        raise LoginError("the token endpoint did not answer JSON") from exc
    token = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise LoginError("the token endpoint answered without an access_token")
    expires_in = body.get("expires_in")
    lifetime = float(expires_in) if isinstance(expires_in, (int, float)) else 300.0
    return CachedToken(
        issuer=issuer,
        resource=resource,
        access_token=token,
        expires_at=time.time() + max(lifetime, 0.0),
        scope=str(body.get("scope") or ""),
    )


# -- the command ----------------------------------------------------------------------------


def add_login_command(subparsers: Any) -> None:
    """Register ``login``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "login",
        help="sign a user in (browser, auth code + PKCE) and cache the token for `call`",
        description=(
            "Sign a user in at ISSUER for the agent RESOURCE as native apps do (RFC 8252: "
            "authorization code + PKCE with a loopback redirect, in your browser, or the URL "
            "printed with --no-browser), and keep the token in a per-user cache file "
            f"(${TOKEN_CACHE_ENV}, default ~/.cache/keycard-agents/tokens.json, owner-only). "
            "The public client must be registered at the issuer with the redirect URI "
            f"http://127.0.0.1{CALLBACK_PATH} (any port is accepted)."
        ),
    )
    parser.add_argument("--issuer", required=True, help="the issuer to sign in at (its URL)")
    parser.add_argument(
        "--resource", required=True, metavar="AGENT_URL", help="the agent the token is for"
    )
    parser.add_argument(
        "--scope", action="append", default=[], help="a scope to ask for (repeatable)"
    )
    parser.add_argument(
        "--client-id",
        default=DEFAULT_CLIENT_ID,
        help=f"the public client registered at the issuer (default {DEFAULT_CLIENT_ID})",
    )
    parser.add_argument(
        "--no-browser",
        action="store_true",
        help="print the sign-in URL instead of opening a browser",
    )
    parser.add_argument(
        "--device",
        action="store_true",
        help="sign in on another device (RFC 8628 device grant): prints a URL and a code",
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for the sign-in (300)"
    )
    parser.add_argument(
        "--print",
        dest="print_token",
        action="store_true",
        help="also print the token on standard output (it is a secret: pipe it, do not show it)",
    )
    parser.set_defaults(func=run_login)


def _show_url(no_browser: bool) -> Callable[[str], object]:
    def show(url: str) -> None:
        opened = False
        if not no_browser:
            try:
                opened = webbrowser.open(url)
            except webbrowser.Error:
                opened = False
        if not opened:
            print("Open this URL in a browser to sign in:", file=sys.stderr)
        else:
            print("Your browser is open to sign in; if not, open this URL:", file=sys.stderr)
        print(f"  {url}", file=sys.stderr, flush=True)

    return show


def _show_code(uri: str, user_code: str, complete: str) -> None:
    print(f"On any device with a browser, open {uri}", file=sys.stderr)
    print(f"and enter the code {user_code} (or open {complete})", file=sys.stderr, flush=True)


def _txn_of(token: str) -> str | None:
    """The ``txn`` claim of a token we were just issued (read, not verified: display only)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = loads_bounded(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    txn = claims.get("txn") if isinstance(claims, dict) else None
    return txn[:100] if isinstance(txn, str) and txn.isprintable() else None


def run_login(args: argparse.Namespace) -> int:
    try:
        if args.device:
            token = login_device(
                issuer=args.issuer,
                resource=args.resource,
                scopes=args.scope,
                client_id=args.client_id,
                show=_show_code,
                timeout=args.timeout,
            )
        else:
            token = login(
                issuer=args.issuer,
                resource=args.resource,
                scopes=args.scope,
                client_id=args.client_id,
                open_url=_show_url(args.no_browser),
                timeout=args.timeout,
            )
    except LoginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    cache = TokenCache()
    cache.save(token)
    minutes = max(0, round((token.expires_at - time.time()) / 60))
    scopes = token.scope or "-"
    txn = _txn_of(token.access_token)
    print(
        f"signed in for {token.resource} (scopes: {scopes}; expires in {minutes} min)",
        file=sys.stderr,
    )
    if txn is not None:  # every call made with this token shares it: `trace TXN` draws them
        print(f"txn {txn}", file=sys.stderr)
    print(f"token cached in {cache.path}", file=sys.stderr)
    if args.print_token:
        print(token.access_token)
    return 0
