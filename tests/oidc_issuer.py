"""An independent OAuth server for interop tests: npm ``oidc-provider`` (pinned in
``tests/interop_oidc/package.json``) with our small RFC 8693 grant (``issuer.mjs``).

:func:`ensure_installed` installs it with ``npm ci`` when ``node_modules`` is missing
(``scripts/dev.py test`` does this up front); :func:`run_issuer` starts it on a free
loopback port (bounded wait) and stops it on exit; :func:`sign_in` runs the
authorization code flow with PKCE (RFC 7636) through the provider's own sign-in and
consent pages, as a browser would, and returns the user's access token.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc.jwk import ECKey

OIDC_DIR = Path(__file__).parent / "interop_oidc"
NODE = shutil.which("node")
NPM = shutil.which("npm")
PINNED_VERSION = "9.13.3"
APP_CLIENT = "app"
REDIRECT_URI = "http://127.0.0.1:9/callback"  # never fetched: the code is read from Location
#: Seconds a node server gets to say it listens: under pytest's 60 s per test, so that a
#: server that never starts fails with its own report (thread states and stderr).
START_TIMEOUT = 40.0

requires_node = pytest.mark.skipif(
    NODE is None or NPM is None, reason="node and npm are not installed"
)

#: The three issuer identifier shapes the interop tests run against.
SHAPES = {
    "root": {"mount": "", "trailing_slash": False},
    "path": {"mount": "/oidc", "trailing_slash": False},
    "slash": {"mount": "/zone", "trailing_slash": True},
}


def ensure_installed() -> None:
    """``npm ci`` in ``tests/interop_oidc`` unless the pinned provider is there already."""
    installed = OIDC_DIR / "node_modules" / "oidc-provider" / "package.json"
    if not installed.is_file():
        assert NPM is not None
        subprocess.run(
            [NPM, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=OIDC_DIR,
            check=True,
            timeout=240,
            capture_output=True,
        )
    version = json.loads(installed.read_text())["version"]
    assert version == PINNED_VERSION, f"oidc-provider {version} installed, {PINNED_VERSION} pinned"


@dataclass
class RegisteredAgent:
    """An agent as the issuer knows it (its client and its resource)."""

    client_id: str
    resource: str
    dependencies: Sequence[str] = ()
    client_secret: str | None = None
    jwks_uri: str | None = None

    def to_config(self) -> dict[str, Any]:
        auth = "private_key_jwt" if self.jwks_uri else "client_secret_basic"
        entry: dict[str, Any] = {
            "client_id": self.client_id,
            "resource": self.resource,
            "auth": auth,
            "dependencies": list(self.dependencies),
        }
        if self.jwks_uri:
            entry["jwks_uri"] = self.jwks_uri
        else:
            entry["client_secret"] = self.client_secret
        return entry


@dataclass
class RunningIssuer:
    issuer: str
    port: int
    process: subprocess.Popen[str] = field(repr=False)
    log_path: Path = field(repr=False)

    def log(self) -> str:
        """What the provider wrote to stderr so far (warnings and request errors)."""
        return self.log_path.read_text(errors="replace")[-4000:]

    @property
    def base(self) -> str:
        """The issuer without a trailing ``/``: endpoints hang below it."""
        return self.issuer.rstrip("/")

    @property
    def token_endpoint(self) -> str:
        return self.base + "/token"

    @property
    def discovery_url(self) -> str:
        return self.base + "/.well-known/openid-configuration"


@contextlib.contextmanager
def run_issuer(
    *,
    shape: str,
    agents: Sequence[RegisteredAgent],
    resources: dict[str, str],
    start_timeout: float = START_TIMEOUT,
) -> Iterator[RunningIssuer]:
    """Start the provider; stop it (SIGTERM, then SIGKILL) when the block ends."""
    assert NODE is not None
    ensure_installed()
    config = {
        **SHAPES[shape],
        "app": {"client_id": APP_CLIENT, "redirect_uri": REDIRECT_URI},
        "agents": [a.to_config() for a in agents],
        "resources": resources,
    }
    with run_node_script("issuer.mjs", config, start_timeout) as (started, process, log_path):
        yield RunningIssuer(started["issuer"], int(started["port"]), process, log_path)


@contextlib.contextmanager
def run_node_script(
    script: str, config: dict[str, Any], start_timeout: float
) -> Iterator[tuple[dict[str, Any], subprocess.Popen[str], Path]]:
    """Run ``OIDC_DIR/script`` with its config in an owner-only file; yield the JSON of its
    first stdout line (where it says it is listening), the process and its stderr log; stop
    it (SIGTERM, then SIGKILL) when the block ends.

    The config gets a fresh P-256 private key as ``signing_key``: the scripts must not
    generate one, since Node 20 can deadlock when a garbage collection lands while a key
    made by ``generateKeyPairSync`` is exported as a JWK (seen as a start that never
    finished, about once in 300 starts on a loaded machine).
    """
    assert NODE is not None
    signing_key = ECKey.generate_key("P-256", private=True).as_dict(private=True)
    with tempfile.TemporaryDirectory(prefix="keycard-node-") as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps({**config, "signing_key": signing_key}))
        os.chmod(path, 0o600)
        log_path = Path(tmp) / "stderr.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [NODE, str(OIDC_DIR / script), str(path)],
                cwd=OIDC_DIR,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        try:
            yield json.loads(_first_line(process, start_timeout, log_path)), process, log_path
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            if process.stdout is not None:
                process.stdout.close()


def _first_line(process: subprocess.Popen[str], timeout: float, log_path: Path) -> str:
    """The provider's start-up line, waiting at most ``timeout`` seconds."""
    lines: list[str] = []
    assert process.stdout is not None
    reader = threading.Thread(
        target=lambda: lines.append(process.stdout.readline()),  # type: ignore[union-attr]
        daemon=True,
    )
    reader.start()
    reader.join(timeout)
    if not lines or not lines[0].strip():
        exited = process.poll()
        log = log_path.read_text(errors="replace")[-3000:]
        state = _threads(process.pid) if exited is None else f"exited with status {exited}"
        process.kill()
        process.wait(timeout=10)
        raise AssertionError(f"oidc-provider did not start within {timeout:g} s ({state}):\n{log}")
    return lines[0]


def _threads(pid: int) -> str:
    """Where each thread of a running process waits (state and kernel wait channel)."""
    states = []
    with contextlib.suppress(OSError):
        for task in sorted(os.listdir(f"/proc/{pid}/task")):
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{pid}/task/{task}/stat").read_text()
                wchan = Path(f"/proc/{pid}/task/{task}/wchan").read_text()
                states.append(f"{stat.rsplit(')', 1)[1].split()[0]}:{wchan or '-'}")
    return "still running; threads " + (" ".join(states) or "unknown")


def sign_in(
    issuer: RunningIssuer, *, user: str, resource: str, scopes: Sequence[str]
) -> dict[str, Any]:
    """Authorization code + PKCE through the provider's sign-in and consent pages.

    Returns the token response (``access_token``, ``scope``, ...) for ``resource``.
    """
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    state = secrets.token_urlsafe(16)
    with httpx.Client(follow_redirects=False, timeout=15) as browser:
        reply = browser.get(
            issuer.base + "/auth",
            params={
                "client_id": APP_CLIENT,
                "response_type": "code",
                "redirect_uri": REDIRECT_URI,
                "scope": " ".join(scopes),
                "resource": resource,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "state": state,
            },
        )
        pages = 0
        while True:
            assert reply.status_code in (302, 303), reply.text[:500]
            location = str(reply.url.join(reply.headers["location"]))
            if location.startswith(REDIRECT_URI):
                break
            pages += 1
            assert pages <= 6, "the sign-in did not finish within six pages"
            page = browser.get(location)
            if page.status_code in (302, 303):
                reply = page
                continue
            assert page.status_code == 200, page.text[:500]
            action = re.search(r'<form[^>]*action="([^"]+)"', page.text)
            prompt = re.search(r'name="prompt" value="([^"]+)"', page.text)
            assert action is not None, page.text[:500]
            assert prompt is not None, page.text[:500]
            form = {"prompt": prompt.group(1)}
            if prompt.group(1) == "login":
                form.update(login=user, password="any password")
            reply = browser.post(str(page.url.join(action.group(1))), data=form)
        params = httpx.URL(location).params
        assert params.get("state") == state
        assert params.get("iss") == issuer.issuer  # RFC 9207
        token = browser.post(
            issuer.token_endpoint,
            data={
                "grant_type": "authorization_code",
                "code": params["code"],
                "redirect_uri": REDIRECT_URI,
                "client_id": APP_CLIENT,
                "code_verifier": verifier,
                "resource": resource,
            },
        )
    assert token.status_code == 200, token.text
    body: dict[str, Any] = token.json()
    return body
