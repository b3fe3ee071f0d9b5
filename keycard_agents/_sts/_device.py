"""The device authorization grant (RFC 8628), for signing in on machines without a browser.

§3.1-3.2: ``POST /device_authorization`` (a public client, the ``resource`` of RFC 8707
and ``scope``) answers a ``device_code`` for the client and a short ``user_code`` for
the person, with ``verification_uri`` (``/device``) and ``verification_uri_complete``.
§3.3: on any device with a browser the person opens that page, enters the code, their
user name and password; the page says which agent and scopes they approve. §3.4-3.5: the
client polls the token endpoint with ``grant_type=urn:ietf:params:oauth:grant-type:
device_code`` and gets ``authorization_pending``, ``slow_down`` (polling faster than
``interval``), ``access_denied``, ``expired_token`` or the user token.

User codes use the RFC 8628 §6.1 alphabet (20 consonants, no vowels, 8 characters:
about 34 bits) and are case- and dash-insensitive; wrong ones entered at ``/device``
are counted per address with failed sign-ins (429 past the allowance, §5.1); device
codes are 256-bit secrets kept only as SHA-256 digests. Both expire after
``expires_in`` seconds and work once. The sign-ins in progress are kept in a
:class:`~keycard_agents._sts._shared.DeviceBook`: this process's memory, or the state the
replicas share (Redis), so that any replica answers the page and the polls.
"""

from __future__ import annotations

import hashlib
import html
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from keycard_agents._errors import OAuthError
from keycard_agents._sts._authorize import LoginFlow, scope_string
from keycard_agents._sts._clientauth import ClientAuthenticator
from keycard_agents._sts._config import TokenServiceConfig
from keycard_agents._sts._forms import Form, oauth_error_response, read_form
from keycard_agents._sts._shared import DeviceBook
from keycard_agents._sts._targets import trailing_slash_hint
from keycard_agents._sts._throttle import CredentialGuard, TooManyAttemptsError, request_source

__all__ = ["DEVICE_AUTHORIZATION_PATH", "GRANT_DEVICE_CODE", "VERIFICATION_PATH", "DeviceFlow"]

GRANT_DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
DEVICE_AUTHORIZATION_PATH = "/device_authorization"
VERIFICATION_PATH = "/device"
_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
_USER_CODE_LENGTH = 8
_LIFETIME = 600
_INTERVAL = 5
_MAX_PENDING = 1000

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class _Pending:
    """A sign-in as it was started (its record in the book)."""

    client_id: str
    resource: str
    agent: str
    scopes: tuple[str, ...] | None
    expires_at: float
    user_code: str

    def dump(self) -> bytes:
        return json.dumps(
            {
                "client_id": self.client_id,
                "resource": self.resource,
                "agent": self.agent,
                "scopes": None if self.scopes is None else list(self.scopes),
                "expires_at": self.expires_at,
                "user_code": self.user_code,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def load(cls, raw: bytes) -> _Pending:
        data = json.loads(raw)
        scopes = data["scopes"]
        return cls(
            client_id=data["client_id"],
            resource=data["resource"],
            agent=data["agent"],
            scopes=None if scopes is None else tuple(scopes),
            expires_at=float(data["expires_at"]),
            user_code=data["user_code"],
        )


def _decision(username: str | None, granted: tuple[str, ...] = ()) -> bytes:
    """The person's decision as the book keeps it (no user name: refused)."""
    return json.dumps({"username": username, "granted": list(granted)}).encode()


@dataclass
class _Entry:
    pending: bytes
    user_code: str
    client_id: str
    expires_at: float
    interval: float
    last_poll: float | None = None
    decision: bytes | None = None


class _MemoryDeviceBook:
    """The :class:`DeviceBook` of one process (without shared state)."""

    def __init__(self) -> None:
        self._by_device: dict[str, _Entry] = {}
        self._by_user: dict[str, str] = {}

    def _prune(self, now: float) -> None:
        for key in [k for k, e in self._by_device.items() if e.expires_at <= now]:
            self._forget(key)

    def _forget(self, digest: str) -> None:
        entry = self._by_device.pop(digest, None)
        if entry is not None:
            self._by_user.pop(entry.user_code, None)

    async def device_start(
        self,
        digest: str,
        user_code: str,
        client_id: str,
        record: bytes,
        *,
        expires_at: float,
        now: float,
        interval: float,
        max_pending: int,
    ) -> str:
        self._prune(now)
        if len(self._by_device) >= max_pending:
            return "full"
        if user_code in self._by_user:
            return "taken"
        self._by_device[digest] = _Entry(record, user_code, client_id, expires_at, interval)
        self._by_user[user_code] = digest
        return "ok"

    async def device_find(self, user_code: str, *, now: float) -> tuple[str, bytes] | None:
        digest = self._by_user.get(user_code)
        entry = None if digest is None else self._by_device.get(digest)
        if digest is None or entry is None or entry.expires_at <= now or entry.decision is not None:
            return None
        return digest, entry.pending

    async def device_decide(self, digest: str, decision: bytes, *, now: float) -> bool:
        entry = self._by_device.get(digest)
        if entry is None or entry.expires_at <= now or entry.decision is not None:
            return False
        entry.decision = decision
        return True

    async def device_poll(
        self, digest: str, client_id: str, *, now: float
    ) -> tuple[str, bytes, bytes] | None:
        entry = self._by_device.get(digest)
        if entry is None or entry.client_id != client_id:
            return None
        if entry.expires_at <= now:
            self._forget(digest)
            return "expired", entry.pending, b""
        if entry.decision is not None:
            self._forget(digest)
            return "decided", entry.pending, entry.decision
        too_soon = entry.last_poll is not None and now - entry.last_poll < entry.interval
        entry.last_poll = now
        if too_soon:
            entry.interval += 5  # §3.5: every slow_down adds 5 seconds
            return "slow", entry.pending, repr(entry.interval).encode()
        return "pending", entry.pending, b""


@dataclass(frozen=True)
class DeviceGrant:
    """An approved device authorization, redeemed once at the token endpoint."""

    client_id: str
    resource: str
    agent: str
    """The client id of the agent at ``resource`` (found when the sign-in started)."""
    username: str
    scopes: tuple[str, ...]


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()


def _normal(user_code: str) -> str:
    return "".join(c for c in user_code.upper() if c.isalnum())[:32]


def _shown(user_code: str) -> str:
    return f"{user_code[:4]}-{user_code[4:]}"


class DeviceFlow:
    """The device authorization and verification endpoints, and redemption."""

    def __init__(
        self,
        *,
        config: TokenServiceConfig,
        issuer: str,
        clients: ClientAuthenticator,
        login: LoginFlow,
        guard: CredentialGuard,
        shared: DeviceBook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._base = issuer.rstrip("/")
        self._clients = clients
        self._login = login
        self._guard = guard
        self._clock = clock
        #: The sign-ins in progress: shared by the replicas when they share state.
        self._book: DeviceBook = shared if shared is not None else _MemoryDeviceBook()

    def routes(self) -> list[tuple[str, Endpoint, list[str]]]:
        return [
            (DEVICE_AUTHORIZATION_PATH, self.authorize, ["POST"]),
            (VERIFICATION_PATH, self.verify_get, ["GET"]),
            (VERIFICATION_PATH, self.verify_post, ["POST"]),
        ]

    # -- §3.1-3.2 ------------------------------------------------------------------------

    async def authorize(self, request: Request) -> Response:
        try:
            form = await read_form(request)
            client = await self._clients.authenticate(request, form)
            if client.method != "none":
                raise OAuthError(
                    "unauthorized_client",
                    f"agent {client.client_id!r} cannot sign users in: only public clients "
                    "listed under [[clients]] use the device grant",
                )
            resources = form.all("resource")
            if len(resources) != 1:
                raise OAuthError("invalid_target", "send exactly one resource: the agent's URL")
            agent = self._config.agent_for_resource(resources[0])
            if agent is None:
                raise OAuthError(
                    "invalid_target",
                    f"resource {resources[0][:200]!r} is not a registered agent"
                    + (trailing_slash_hint(self._config, resources[0]) or ""),
                )
            if not agent.may_act_first:
                raise OAuthError(
                    "invalid_target",
                    f"agent {agent.client_id!r} does not accept user tokens directly",
                )
            raw = form.get("scope")
            scopes = tuple(dict.fromkeys(raw.split())) if raw is not None else None
        except OAuthError as exc:
            return oauth_error_response(exc)
        device_code = secrets.token_urlsafe(32)
        now = self._clock()
        while True:
            user_code = "".join(secrets.choice(_ALPHABET) for _ in range(_USER_CODE_LENGTH))
            pending = _Pending(
                client_id=client.client_id,
                resource=resources[0],
                agent=agent.client_id,
                scopes=scopes,
                expires_at=now + _LIFETIME,
                user_code=user_code,
            )
            started = await self._book.device_start(
                _digest(device_code),
                user_code,
                client.client_id,
                pending.dump(),
                expires_at=pending.expires_at,
                now=now,
                interval=_INTERVAL,
                max_pending=_MAX_PENDING,
            )
            if started != "taken":  # a user code in use (1 in 25 million each): draw again
                break
        if started == "full":
            return oauth_error_response(
                OAuthError(
                    "slow_down", "too many sign-ins are waiting: try again later", status_code=429
                )
            )
        uri = f"{self._base}{VERIFICATION_PATH}"
        body = {
            "device_code": device_code,
            "user_code": _shown(user_code),
            "verification_uri": uri,
            "verification_uri_complete": f"{uri}?{urlencode({'user_code': _shown(user_code)})}",
            "expires_in": _LIFETIME,
            "interval": _INTERVAL,
        }
        return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    # -- §3.3: the person's side ---------------------------------------------------------

    async def verify_get(self, request: Request) -> Response:
        code = request.query_params.get("user_code", "")[:32]
        return _verification_page(code, error=None)

    async def verify_post(self, request: Request) -> Response:
        try:
            form = await read_form(request)
        except OAuthError as exc:
            return _verification_page("", error=exc.error_description, status=400)
        shown = (form.get("user_code") or "")[:32]
        found = await self._book.device_find(_normal(shown), now=self._clock())
        # RFC 8628 §5.1: a user code is short enough to guess; wrong ones are counted per
        # address like failed sign-ins (and share their allowance), so guessing codes,
        # to approve or refuse someone else's device, stops at the same 429.
        try:
            known = await self._guard.check(
                lambda: found is not None,
                account=None,
                source=request_source(request),
                inline=True,
            )
        except TooManyAttemptsError as exc:
            return _verification_page(
                shown,
                error=f"Too many wrong codes or sign-ins: try again in {exc.retry_after} s.",
                status=429,
            )
        if not known or found is None:
            return _verification_page(shown, error="Unknown or expired code.", status=400)
        digest, pending = found[0], _Pending.load(found[1])
        if form.get("action") == "deny":
            if not await self._book.device_decide(digest, _decision(None), now=self._clock()):
                return _verification_page(shown, error="Unknown or expired code.", status=400)
            return _done("Sign-in refused", "The device will not be signed in.")
        try:
            user = await self._login.check_user(
                form.get("username") or "", form.get("password") or "", request_source(request)
            )
        except TooManyAttemptsError as exc:
            return _verification_page(
                shown,
                error=f"Too many failed sign-ins: try again in {exc.retry_after} s.",
                status=429,
            )
        if user is None:
            return _verification_page(shown, error="Wrong username or password.", status=401)
        agent = self._config.agent_for_resource(pending.resource)
        accepted = agent.scopes if agent is not None else ()
        wanted = pending.scopes if pending.scopes is not None else accepted
        granted = tuple(s for s in wanted if s in accepted and s in user.scopes)
        if not granted:
            await self._book.device_decide(digest, _decision(None), now=self._clock())
            return _done(
                "Nothing to grant",
                f"User {user.username} holds none of the requested scopes for {pending.resource}.",
            )
        decision = _decision(user.username, granted)
        if not await self._book.device_decide(digest, decision, now=self._clock()):
            # Refused or approved meanwhile (another tab, another replica), or expired.
            return _verification_page(shown, error="Unknown or expired code.", status=400)
        return _done(
            "Device signed in",
            f"{pending.agent} may now act for {user.username} with {scope_string(granted)}. "
            "You can close this page and return to your device.",
        )

    # -- §3.4-3.5: the token endpoint side ------------------------------------------------

    async def redeem(self, form: Form, client_id: str) -> DeviceGrant:
        """Check a ``device_code`` token request; the approved grant, or the §3.5 error."""
        device_code = form.require("device_code")
        polled = await self._book.device_poll(_digest(device_code), client_id, now=self._clock())
        if polled is None:
            raise OAuthError("invalid_grant", "unknown device_code: start the sign-in again")
        outcome, raw, detail = polled
        pending = _Pending.load(raw)
        if outcome == "expired":
            raise OAuthError("expired_token", "the device code expired: start the sign-in again")
        if outcome == "slow":
            raise OAuthError("slow_down", f"poll at most every {float(detail):g} seconds")
        if outcome == "pending":
            raise OAuthError(
                "authorization_pending",
                f"waiting for the user to enter {_shown(pending.user_code)} at "
                f"{self._base}{VERIFICATION_PATH}",
            )
        decision = json.loads(detail)
        if decision["username"] is None:
            raise OAuthError("access_denied", "the user refused the sign-in")
        return DeviceGrant(
            client_id=pending.client_id,
            resource=pending.resource,
            agent=pending.agent,
            username=decision["username"],
            scopes=tuple(decision["granted"]),
        )


_STYLE = (
    "body{font-family:sans-serif;max-width:26em;margin:4em auto}label{display:block;margin:.6em 0}"
)
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'",
}


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(document, status_code=status, headers=_HEADERS)


def _done(title: str, message: str) -> HTMLResponse:
    return _page(title, f"<p>{html.escape(message)}</p>")


def _verification_page(code: str, *, error: str | None, status: int = 200) -> HTMLResponse:
    notice = f"<p role='alert'><strong>{html.escape(error)}</strong></p>" if error else ""
    body = (
        "<p>Enter the code your device shows, then sign in to let it act for you.</p>"
        f"{notice}<form method='post' action='device'>"
        f"<label>Code <input name='user_code' value='{html.escape(code)}' required></label>"
        "<label>Username <input name='username' autocomplete='username'></label>"
        "<label>Password <input name='password' type='password' "
        "autocomplete='current-password'></label>"
        "<button type='submit' name='action' value='allow'>Sign in</button> "
        "<button type='submit' name='action' value='deny'>Refuse</button></form>"
    )
    return _page("Sign in a device", body, status)
