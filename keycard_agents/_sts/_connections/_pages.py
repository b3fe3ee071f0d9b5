"""The connections pages: a signed-in user connects, lists and disconnects accounts.

RFC 6749 §4.1 with RFC 7636 PKCE (S256) as the client of the upstream provider; §10.12
and RFC 9700 §4.7.1 (``state`` is single use, expires, and is bound to the user's
sign-in session here: a callback in another browser, for another user or replayed is
refused before any code is redeemed), RFC 9207 (the ``iss`` of the authorization
response must name the provider when it says it sends one), RFC 6265 (the session
cookie: HttpOnly, SameSite=Lax, Secure on https, path ``/connections``). Forms that
change state carry a per-session CSRF token. Nothing is stored unless every check passed.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from keycard_agents._errors import OAuthError
from keycard_agents._logs import get_logger
from keycard_agents._oauth._pkce import pkce_challenge
from keycard_agents._oauth._urls import same_origin
from keycard_agents._sts._authorize import LoginFlow
from keycard_agents._sts._connection_config import ConnectionConfig
from keycard_agents._sts._forms import Form, read_form
from keycard_agents._sts._throttle import TooManyAttemptsError, request_source

from ._broker import Connections, UserRef
from ._upstream import UpstreamError

__all__ = ["ConnectionPages"]

logger = get_logger("keycard_agents.sts.connections")

COOKIE = "keycard_connections"
LOGIN_COOKIE = "keycard_connections_login"
_MAX_SESSIONS = 10_000
_MAX_PENDING = 10_000
_PENDING_PER_SESSION = 10
_MAX_QUERY = 8192
_MAX_KEY_CHARS = 4096
Route = tuple[str, Callable[[Request], Awaitable[Response]], list[str]]


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True)
class _Session:
    user: UserRef
    csrf: str
    expires_at: float


@dataclass(frozen=True)
class _Pending:
    session: str  # digest of the session cookie that started the flow
    user: UserRef
    connection: str
    verifier: str | None
    txn: str | None
    expires_at: float


class ConnectionPages:
    """``/connections`` and below; see the module docstring for the checks."""

    def __init__(
        self,
        *,
        connections: Connections,
        login: LoginFlow,
        issuer: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._connections = connections
        self._login = login
        self._issuer = issuer
        self._secure = issuer.startswith("https:")
        self._root = issuer.rstrip("/") + "/connections"
        self._path = urlsplit(self._root).path  # the cookie's path, the local redirects' prefix
        self._clock = clock
        self._sessions: dict[str, _Session] = {}
        self._pending: dict[str, _Pending] = {}

    def routes(self) -> list[Route]:
        return [
            ("/connections", self.index, ["GET"]),
            ("/connections/signin", self.signin, ["POST"]),
            ("/connections/signout", self.signout, ["POST"]),
            ("/connections/callback", self.callback, ["GET"]),
            ("/connections/{name}/connect", self.connect, ["GET"]),
            ("/connections/{name}/key", self.save_key, ["POST"]),
            ("/connections/{name}/disconnect", self.disconnect, ["POST"]),
        ]

    # -- sessions --------------------------------------------------------------------------

    def _session(self, request: Request) -> tuple[str, _Session] | None:
        cookie = request.cookies.get(COOKIE)
        if not cookie or len(cookie) > 100:
            return None
        key = _digest(cookie)
        session = self._sessions.get(key)
        if session is None or session.expires_at <= self._clock():
            self._sessions.pop(key, None)
            return None
        return key, session

    def _new_session(self, user: UserRef) -> str:
        now = self._clock()
        self._sessions = {k: v for k, v in self._sessions.items() if v.expires_at > now}
        while len(self._sessions) >= _MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]  # the oldest sign-in goes
        cookie = secrets.token_urlsafe(32)
        lifetime = self._connections.settings.session_lifetime
        self._sessions[_digest(cookie)] = _Session(
            user=user, csrf=secrets.token_urlsafe(24), expires_at=now + lifetime
        )
        return cookie

    def _csrf_ok(self, session: _Session, form: Form) -> bool:
        try:
            presented = form.get("csrf") or ""
        except OAuthError:
            return False
        return hmac.compare_digest(presented.encode(), session.csrf.encode())

    def _connection(self, request: Request) -> ConnectionConfig | None:
        return self._connections.by_name.get(str(request.path_params.get("name", "")))

    # -- pages -----------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        current = self._session(request)
        if current is None:
            return self._signin(next_url=self._path, error=None)
        _, session = current
        rows = []
        for connection in self._connections.by_name.values():
            grant = await self._connections.status(connection, session.user)
            name = html.escape(connection.name)
            title = html.escape(connection.title)
            if grant is None:
                rows.append(
                    f"<li><b>{title}</b>: not connected. "
                    f"<a href='{self._root}/{name}/connect'>Connect</a></li>"
                )
                continue
            scopes = html.escape(" ".join(grant.scopes) or "no scopes")
            rows.append(
                f"<li><b>{title}</b>: connected ({scopes}). "
                f"<form method='post' action='{self._root}/{name}/disconnect'>"
                f"{_csrf_field(session)}<button type='submit'>Disconnect</button></form></li>"
            )
        body = (
            f"<p>Signed in as <b>{html.escape(session.user.sub)}</b>.</p>"
            f"<ul>{''.join(rows) or '<li>No connections are configured.</li>'}</ul>"
            f"<form method='post' action='{self._root}/signout'>{_csrf_field(session)}"
            "<button type='submit'>Sign out</button></form>"
        )
        return _page("Connected accounts", body)

    def _signin(self, *, next_url: str, error: str | None, status: int = 200) -> HTMLResponse:
        """The sign-in page, with a login CSRF token in a cookie and in the form (a site
        that cannot read our cookies cannot sign the user in as someone else)."""
        token = secrets.token_urlsafe(24)
        response = _signin_page(
            self._root, next_url=next_url, error=error, login_csrf=token, status=status
        )
        response.set_cookie(
            LOGIN_COOKIE,
            token,
            max_age=int(self._connections.settings.connect_lifetime),
            path=self._path,
            httponly=True,
            samesite="strict",
            secure=self._secure,
        )
        return response

    def _foreign(self, request: Request) -> Response | None:
        """403 for a state-changing POST another site's page sent (its ``Origin``)."""
        origin = request.headers.get("origin")
        if origin is None or same_origin(origin, self._issuer):
            return None
        return _error_page("This form was sent from another site: nothing was done.", status=403)

    async def signin(self, request: Request) -> Response:
        refused = self._foreign(request)
        if refused is not None:
            return refused
        try:
            form = await read_form(request, limit=_MAX_QUERY)
            username = form.get("username") or ""
            password = form.get("password") or ""
            next_url = _local_next(form.get("next"), self._path)
            presented = form.get("login_csrf") or ""
        except OAuthError as exc:
            return _error_page(exc.error_description, status=exc.status_code)
        expected = request.cookies.get(LOGIN_COOKIE) or ""
        if not expected or not hmac.compare_digest(presented.encode(), expected.encode()):
            return self._signin(
                next_url=next_url, error="The sign-in form expired: sign in again.", status=403
            )
        try:
            user = await self._login.check_user(username, password, request_source(request))
        except TooManyAttemptsError as exc:
            response = self._signin(
                next_url=next_url,
                error=f"Too many failed sign-ins: try again in {exc.retry_after} s.",
                status=exc.status_code,
            )
            response.headers["Retry-After"] = str(exc.retry_after)
            return response
        if user is None:
            return self._signin(next_url=next_url, error="Wrong username or password.", status=401)
        cookie = self._new_session(UserRef(issuer=self._issuer, sub=user.username))
        redirect = RedirectResponse(
            next_url, status_code=303, headers={"Cache-Control": "no-store"}
        )
        redirect.set_cookie(
            COOKIE,
            cookie,
            max_age=int(self._connections.settings.session_lifetime),
            path=self._path,
            httponly=True,
            samesite="lax",
            secure=self._secure,
        )
        return redirect

    async def signout(self, request: Request) -> Response:
        refused = self._foreign(request)
        if refused is not None:
            return refused
        current = self._session(request)
        if current is not None:
            try:
                form = await read_form(request, limit=_MAX_QUERY)
            except OAuthError as exc:
                return _error_page(exc.error_description, status=exc.status_code)
            if not self._csrf_ok(current[1], form):
                return _error_page("The form is stale: reload the page and try again.", status=403)
            self._sessions.pop(current[0], None)
        response = RedirectResponse(self._root, status_code=303)
        response.delete_cookie(COOKIE, path=self._path)
        return response

    async def connect(self, request: Request) -> Response:
        connection = self._connection(request)
        if connection is None:
            return _error_page("There is no such connection.", status=404)
        query = request.url.query
        if len(query) > _MAX_QUERY:
            return _error_page("The request is too long.")
        try:
            txn = Form(parse_qsl(query, keep_blank_values=True)).get("txn")
        except OAuthError as exc:
            return _error_page(exc.error_description)
        if txn is not None and (len(txn) > 64 or not txn.isalnum()):
            txn = None
        current = self._session(request)
        if current is None:
            here = f"{self._path}/{connection.name}/connect" + (f"?txn={txn}" if txn else "")
            return self._signin(next_url=here, error=None)
        session_key, session = current
        if connection.kind == "static":
            return _key_page(self._root, connection, session, txn=txn, error=None)
        provider = self._connections.providers[connection.name]
        try:
            endpoints = await provider.endpoints()
        except UpstreamError as exc:
            return _error_page(f"Cannot reach the provider: {exc.message}", status=502)
        now = self._clock()
        self._pending = {k: v for k, v in self._pending.items() if v.expires_at > now}
        mine = [k for k, v in self._pending.items() if v.session == session_key]
        for key in mine[: max(0, len(mine) - _PENDING_PER_SESSION + 1)]:
            del self._pending[key]  # this session's oldest unfinished connect gives way
        if len(self._pending) >= _MAX_PENDING:
            return _error_page("Too many connections are being made: retry shortly.", status=503)
        state = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(48) if connection.pkce else None
        self._pending[_digest(state)] = _Pending(
            session=session_key,
            user=session.user,
            connection=connection.name,
            verifier=verifier,
            txn=txn,
            expires_at=now + self._connections.settings.connect_lifetime,
        )
        location = provider.authorization_url(
            endpoints,
            state=state,
            redirect_uri=self._connections.callback_url,
            code_challenge=None if verifier is None else pkce_challenge(verifier),
        )
        return RedirectResponse(location, status_code=303, headers={"Cache-Control": "no-store"})

    async def callback(self, request: Request) -> Response:
        query = request.url.query
        if len(query) > _MAX_QUERY:
            return _error_page("The request is too long.")
        try:
            params = Form(parse_qsl(query, keep_blank_values=True, errors="strict"))
            state = params.get("state")
            code = params.get("code")
            error = params.get("error")
            iss = params.get("iss")
        except (OAuthError, ValueError):
            return _error_page("The provider's answer is malformed (a parameter is repeated).")
        if state is None:
            return _error_page("The provider's answer has no state: start connecting again.")
        pending = self._pending.pop(_digest(state), None)  # single use, whatever follows
        if pending is None or pending.expires_at <= self._clock():
            return _error_page(
                "This connect link is unknown, expired or already used: start connecting again."
            )
        current = self._session(request)
        if current is None or not hmac.compare_digest(current[0], pending.session):
            logger.warning(
                "connect callback for %s refused: state bound to another sign-in session",
                pending.connection,
            )
            return _error_page(
                "This answer belongs to a connect flow started in another sign-in session: "
                "nothing was stored. Start connecting again from this browser.",
                status=403,
            )
        connection = self._connections.by_name[pending.connection]
        provider = self._connections.providers[connection.name]
        endpoints = await provider.endpoints()
        known_iss = endpoints.issuer is not None
        if (
            known_iss
            and (endpoints.iss_parameter_supported or iss is not None)
            and (iss != endpoints.issuer)
        ):
            return _error_page(
                "The answer names another authorization server (RFC 9207 iss): nothing was stored.",
                status=400,
            )
        if error is not None:
            return _error_page(
                f"{connection.title} did not grant access ({error[:64]}): nothing was stored.",
                status=400,
            )
        if code is None:
            return _error_page("The provider's answer has no code: start connecting again.")
        try:
            tokens = await provider.redeem_code(
                code, redirect_uri=self._connections.callback_url, code_verifier=pending.verifier
            )
        except UpstreamError as exc:
            return _error_page(f"Connecting failed: {exc.message}. Nothing was stored.", status=400)
        await self._connections.connected(connection, pending.user, tokens, pending.txn)
        logger.info("user %s connected %s", pending.user.sub, connection.name)
        return _done_page(self._root, connection, "connected")

    async def save_key(self, request: Request) -> Response:
        refused = self._foreign(request)
        if refused is not None:
            return refused
        connection = self._connection(request)
        if connection is None or connection.kind != "static":
            return _error_page("There is no such key connection.", status=404)
        current = self._session(request)
        if current is None:
            here = f"{self._path}/{connection.name}/connect"
            return self._signin(next_url=here, error=None)
        _, session = current
        try:
            form = await read_form(request, limit=_MAX_QUERY)
            key = (form.get("key") or "").strip()
            txn = form.get("txn")
        except OAuthError as exc:
            return _error_page(exc.error_description, status=exc.status_code)
        if not self._csrf_ok(session, form):
            return _error_page("The form is stale: reload the page and try again.", status=403)
        if txn is not None and (len(txn) > 64 or not txn.isalnum()):
            txn = None
        if not key or len(key) > _MAX_KEY_CHARS or not key.isprintable() or " " in key:
            return _key_page(
                self._root,
                connection,
                session,
                txn=txn,
                error="Enter the key as issued (no spaces).",
                status=400,
            )
        await self._connections.connected_static(connection, session.user, key, txn)
        return _done_page(self._root, connection, "connected")

    async def disconnect(self, request: Request) -> Response:
        refused = self._foreign(request)
        if refused is not None:
            return refused
        connection = self._connection(request)
        if connection is None:
            return _error_page("There is no such connection.", status=404)
        current = self._session(request)
        if current is None:
            return self._signin(next_url=self._path, error=None)
        try:
            form = await read_form(request, limit=_MAX_QUERY)
        except OAuthError as exc:
            return _error_page(exc.error_description, status=exc.status_code)
        if not self._csrf_ok(current[1], form):
            return _error_page("The form is stale: reload the page and try again.", status=403)
        outcome = await self._connections.disconnect(connection, current[1].user)
        return _done_page(self._root, connection, outcome)


def _local_next(value: str | None, root_path: str) -> str:
    """Where to go after signing in: only a path on this service below ``root_path``."""
    if not value or "\\" in value or "//" in value or not value.isprintable():
        return root_path
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not parts.path.startswith(root_path):
        return root_path
    return value


_STYLE = (
    "body{font-family:sans-serif;max-width:32em;margin:4em auto}label{display:block;margin:.6em 0}"
)


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(
        document,
        status_code=status,
        headers={
            "Cache-Control": "no-store",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "form-action 'self'; frame-ancestors 'none'",
        },
    )


def _error_page(message: str, *, status: int = 400) -> HTMLResponse:
    return _page("Connection refused", f"<p role='alert'>{html.escape(message)}</p>", status)


def _csrf_field(session: _Session) -> str:
    return f"<input type='hidden' name='csrf' value='{html.escape(session.csrf)}'>"


def _signin_page(
    root: str, *, next_url: str, error: str | None, login_csrf: str, status: int = 200
) -> HTMLResponse:
    notice = f"<p role='alert'><strong>{html.escape(error)}</strong></p>" if error else ""
    body = (
        f"<p>Sign in to manage the accounts this service may use for you.</p>{notice}"
        f"<form method='post' action='{html.escape(root)}/signin'>"
        f"<input type='hidden' name='next' value='{html.escape(next_url)}'>"
        f"<input type='hidden' name='login_csrf' value='{html.escape(login_csrf)}'>"
        "<label>Username <input name='username' autocomplete='username' required></label>"
        "<label>Password <input name='password' type='password' "
        "autocomplete='current-password' required></label>"
        "<button type='submit'>Sign in</button></form>"
    )
    return _page("Sign in", body, status)


def _key_page(
    root: str,
    connection: ConnectionConfig,
    session: _Session,
    *,
    txn: str | None,
    error: str | None,
    status: int = 200,
) -> HTMLResponse:
    notice = f"<p role='alert'><strong>{html.escape(error)}</strong></p>" if error else ""
    txn_field = f"<input type='hidden' name='txn' value='{html.escape(txn)}'>" if txn else ""
    action = f"{html.escape(root)}/{quote(connection.name)}/key"
    body = (
        f"<p>Enter your {html.escape(connection.title)} API key. It is stored encrypted and "
        f"only given to agents you call.</p>{notice}"
        f"<form method='post' action='{action}'>{_csrf_field(session)}{txn_field}"
        "<label>Key <input name='key' type='password' autocomplete='off' required></label>"
        "<button type='submit'>Save</button></form>"
    )
    return _page(f"Connect {connection.title}", body, status)


def _done_page(root: str, connection: ConnectionConfig, outcome: str) -> HTMLResponse:
    body = (
        f"<p role='status'>{html.escape(connection.title)}: {html.escape(outcome)}.</p>"
        f"<p><a href='{html.escape(root)}'>Connected accounts</a>. You may return to your app and "
        "continue the task.</p>"
    )
    return _page(connection.title, body)
