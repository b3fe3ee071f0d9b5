"""User sign-in: authorization code grant with PKCE, for local development.

RFC 6749 §4.1 (authorization code grant; §4.1.2.1 error redirects only once the
client and redirect URI are known good), RFC 7636 (PKCE, ``S256`` only; ``plain``
is refused), RFC 8707 §2 (``resource`` names the first agent), RFC 9207 (``iss``
in the authorization response). Codes are single-use, short-lived and bound to
the client, redirect URI, code challenge and resource.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from keycard_agents._errors import OAuthError
from keycard_agents._oauth._pkce import pkce_challenge
from keycard_agents._oauth._urls import redirect_uri_registered
from keycard_agents._sts._client_store import PublicClients
from keycard_agents._sts._config import DevUser, PublicClient, RegisteredAgent, TokenServiceConfig
from keycard_agents._sts._forms import Form, read_form, retry_after_header
from keycard_agents._sts._shared import SharedServiceState
from keycard_agents._sts._targets import trailing_slash_hint
from keycard_agents._sts._throttle import (
    CredentialGuard,
    DummyHash,
    TooManyAttemptsError,
    request_source,
)

__all__ = ["AuthCode", "CodeStore", "LoginFlow", "scope_string"]

_VERIFIER_RE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
_CHALLENGE_RE = re.compile(r"^[A-Za-z0-9\-_]{43}$")
_PARAMS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "resource",
)
_MAX_QUERY = 8192


def scope_string(scopes: tuple[str, ...]) -> str:
    return " ".join(scopes)


def _narrow(requested: tuple[str, ...] | None, *allowed: tuple[str, ...]) -> tuple[str, ...]:
    """Requested (or everything) intersected with each allowed set, order kept."""
    result = list(requested if requested is not None else allowed[0])
    for allow in allowed:
        result = [s for s in result if s in allow]
    return tuple(dict.fromkeys(result))


@dataclass(frozen=True)
class AuthCode:
    client_id: str
    redirect_uri: str
    code_challenge: str
    resource: str
    scopes: tuple[str, ...]
    username: str
    expires_at: float


class CodeStore:
    """Outstanding authorization codes, keyed by the SHA-256 of the code.

    Fair limits instead of one shared cap: a user has at most ``per_user`` unredeemed
    codes (a new sign-in replaces that user's oldest one), a client at most
    ``per_client`` (then its sign-ins wait), and all together at most ``max_codes``. One
    user's abandoned sign-ins never block another user's.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        max_codes: int = 10_000,
        per_user: int = 10,
        per_client: int = 1000,
    ) -> None:
        self._clock = clock
        self._max = max_codes
        self._per_user = per_user
        self._per_client = per_client
        self._codes: dict[str, AuthCode] = {}

    @staticmethod
    def _key(code: str) -> str:
        return hashlib.sha256(code.encode("utf-8", "replace")).hexdigest()

    def issue(self, grant: AuthCode) -> str:
        now = self._clock()
        self._codes = {k: v for k, v in self._codes.items() if v.expires_at > now}
        mine = [k for k, v in self._codes.items() if v.username == grant.username]
        for key in mine[: max(0, len(mine) - self._per_user + 1)]:
            del self._codes[key]  # the user's oldest unredeemed sign-ins make room
        if sum(1 for v in self._codes.values() if v.client_id == grant.client_id) >= (
            self._per_client
        ):
            raise OAuthError(
                "temporarily_unavailable",
                f"too many pending sign-ins for client {grant.client_id!r}: retry in a minute",
                status_code=503,
            )
        if len(self._codes) >= self._max:
            raise OAuthError(
                "temporarily_unavailable", "too many pending sign-ins: retry later", status_code=503
            )
        code = secrets.token_urlsafe(32)
        self._codes[self._key(code)] = grant
        return code

    def consume(self, code: str) -> AuthCode | None:
        """Remove and return the grant (single use), or ``None`` if unknown or expired."""
        grant = self._codes.pop(self._key(code), None)
        if grant is None or grant.expires_at <= self._clock():
            return None
        return grant

    def __len__(self) -> int:
        return len(self._codes)


@dataclass(frozen=True)
class _AuthRequest:
    client: PublicClient
    redirect_uri: str
    state: str | None
    code_challenge: str
    agent: RegisteredAgent
    scopes: tuple[str, ...] | None  # None: not requested, use the default
    resource: str  # one of the agent's resources

    def hidden_fields(self) -> dict[str, str]:
        fields = {
            "response_type": "code",
            "client_id": self.client.client_id,
            "redirect_uri": self.redirect_uri,
            "code_challenge": self.code_challenge,
            "code_challenge_method": "S256",
            "resource": self.resource,
        }
        if self.state is not None:
            fields["state"] = self.state
        if self.scopes is not None:
            fields["scope"] = scope_string(self.scopes)
        return fields


class _PageError(Exception):
    """An error shown on the page itself (the redirect URI cannot be trusted)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _RedirectError(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


class LoginFlow:
    """``GET``/``POST /authorize`` and the ``authorization_code`` token grant."""

    def __init__(
        self,
        *,
        config: TokenServiceConfig,
        issuer: str,
        clock: Callable[[], float],
        guard: CredentialGuard | None = None,
        clients: PublicClients | None = None,
        shared: SharedServiceState | None = None,
    ) -> None:
        self._config = config
        self._shared = shared
        self._issuer = issuer
        self._clock = clock
        self._clients = clients if clients is not None else PublicClients(config)
        limits = config.limits
        self._guard = guard if guard is not None else CredentialGuard(limits, clock=clock)
        hashes = [u.password_hash for u in config.users if u.password_hash is not None]
        # An unknown user name costs what a real one costs: a hash check when users have
        # hashed passwords, a plain comparison when all of them are dev-only plaintext.
        self._dummy = DummyHash(hashes)
        self._plain_only = not hashes
        self._dummy_password = secrets.token_urlsafe(16)
        self.codes = CodeStore(
            clock=clock,
            per_user=limits.pending_signins_per_user,
            per_client=limits.pending_signins_per_client,
        )

    # -- codes: in memory, or shared by the replicas (single use across them) -------------

    async def _issue(self, grant: AuthCode) -> str:
        if self._shared is None:
            return self.codes.issue(grant)
        code = secrets.token_urlsafe(32)
        limits = self._config.limits
        kept = await self._shared.put_code(
            CodeStore._key(code),
            json.dumps({**grant.__dict__, "scopes": list(grant.scopes)}).encode(),
            expires_at=grant.expires_at,
            now=self._clock(),
            user=grant.username,
            per_user=limits.pending_signins_per_user,
            client=grant.client_id,
            per_client=limits.pending_signins_per_client,
        )
        if not kept:
            raise OAuthError(
                "temporarily_unavailable",
                f"too many pending sign-ins for client {grant.client_id!r}: retry in a minute",
                status_code=503,
            )
        return code

    async def _consume(self, code: str) -> AuthCode | None:
        if self._shared is None:
            return self.codes.consume(code)
        raw = await self._shared.take_code(CodeStore._key(code))
        if raw is None:
            return None
        data = json.loads(raw)
        grant = AuthCode(**{**data, "scopes": tuple(data["scopes"])})
        return grant if grant.expires_at > self._clock() else None

    # -- the authorization endpoint -------------------------------------------------------

    async def authorize_get(self, request: Request) -> Response:
        query = request.url.query
        if len(query) > _MAX_QUERY:
            return _page_error("the authorization request is too long")
        try:
            pairs = parse_qsl(query, keep_blank_values=True, errors="strict")
        except ValueError:
            return _page_error("the authorization request is malformed")
        return await self._handle(Form(pairs), login=False)

    async def authorize_post(self, request: Request) -> Response:
        try:
            form = await read_form(request, limit=_MAX_QUERY)
        except OAuthError as exc:
            return _page_error(exc.error_description, status=exc.status_code)
        return await self._handle(form, login=True, source=request_source(request))

    async def _handle(self, form: Form, *, login: bool, source: str | None = None) -> Response:
        try:
            client, redirect_uri, state = await self._client_part(form)
        except (_PageError, OAuthError) as exc:
            message = exc.message if isinstance(exc, _PageError) else exc.error_description
            return _page_error(message)
        try:
            req = self._request_part(form, client, redirect_uri, state)
            if not login:
                return _login_page(req, error=None)
            username = form.get("username") or ""
            password = form.get("password") or ""
            try:
                user = await self._check_password(username, password, source)
            except TooManyAttemptsError as exc:
                response = _login_page(
                    req,
                    error=f"Too many failed sign-ins: try again in {exc.retry_after} s.",
                    status=exc.status_code,
                )
                response.headers.update(retry_after_header(exc))
                return response
            if user is None:
                return _login_page(req, error="Wrong username or password.", status=401)
            scopes = _narrow(req.scopes, req.agent.scopes, user.scopes)
            if not scopes:
                raise _RedirectError(
                    "invalid_scope",
                    f"user {user.username!r} holds none of the requested scopes for "
                    f"{req.resource}: grant them in users[{user.username}].scopes",
                )
            code = await self._issue(
                AuthCode(
                    client_id=client.client_id,
                    redirect_uri=redirect_uri,
                    code_challenge=req.code_challenge,
                    resource=req.resource,
                    scopes=scopes,
                    username=user.username,
                    expires_at=self._clock() + self._config.lifetimes.auth_code,
                )
            )
            return _redirect(redirect_uri, {"code": code, "state": state, "iss": self._issuer})
        except _RedirectError as exc:
            params = {"error": exc.error, "error_description": exc.description, "state": state}
            return _redirect(redirect_uri, {**params, "iss": self._issuer})
        except OAuthError as exc:
            params = {"error": exc.error, "error_description": exc.error_description}
            return _redirect(redirect_uri, {**params, "state": state, "iss": self._issuer})

    async def _client_part(self, form: Form) -> tuple[PublicClient, str, str | None]:
        client_id = form.get("client_id")
        if client_id is None:
            raise _PageError("the request has no client_id")
        client = await self._clients.get(client_id)
        if client is None:
            raise _PageError(f"unknown client_id: register it under [[clients]] ({client_id!r})")
        redirect_uri = form.get("redirect_uri")
        if redirect_uri is None:
            if len(client.redirect_uris) != 1:
                raise _PageError("redirect_uri is required for this client")
            redirect_uri = client.redirect_uris[0]
        if not redirect_uri_registered(redirect_uri, client.redirect_uris):
            raise _PageError(
                f"redirect_uri is not registered for client {client_id!r}: "
                f"add it to clients[{client_id}].redirect_uris"
            )
        return client, redirect_uri, form.get("state")

    def _request_part(
        self, form: Form, client: PublicClient, redirect_uri: str, state: str | None
    ) -> _AuthRequest:
        for name in _PARAMS:
            form.get(name)  # repeated parameters -> invalid_request
        if form.get("response_type") != "code":
            raise _RedirectError(
                "unsupported_response_type", "only response_type=code is supported"
            )
        challenge = form.get("code_challenge")
        if challenge is None:
            raise _RedirectError("invalid_request", "PKCE is required: send code_challenge (S256)")
        if form.get("code_challenge_method") != "S256":
            raise _RedirectError(
                "invalid_request", "code_challenge_method must be S256 (plain is not accepted)"
            )
        if not _CHALLENGE_RE.match(challenge):
            raise _RedirectError("invalid_request", "code_challenge is not a base64url SHA-256")
        resources = form.all("resource")
        if len(resources) != 1:
            raise _RedirectError("invalid_target", "send exactly one resource: the agent's URL")
        agent = self._config.agent_for_resource(resources[0])
        if agent is None:
            hint = trailing_slash_hint(self._config, resources[0])
            raise _RedirectError(
                "invalid_target",
                f"resource {resources[0][:200]!r} is not a registered agent{hint}"
                if hint
                else "resource is not a registered agent: sign in for an agent listed under "
                "[[agents]]",
            )
        if not agent.may_act_first:
            raise _RedirectError(
                "invalid_target",
                f"agent {agent.client_id!r} does not accept user tokens directly "
                f"(agents[{agent.client_id}].may_act_first = false)",
            )
        raw_scope = form.get("scope")
        scopes = tuple(dict.fromkeys(raw_scope.split())) if raw_scope is not None else None
        if not _narrow(scopes, agent.scopes):
            raise _RedirectError(
                "invalid_scope",
                f"none of the requested scopes is accepted by {agent.resource}: "
                f"it accepts {scope_string(agent.scopes) or 'no scopes'}",
            )
        return _AuthRequest(client, redirect_uri, state, challenge, agent, scopes, resources[0])

    async def check_user(self, username: str, password: str, source: str | None) -> DevUser | None:
        """:meth:`_check_password` for other sign-in pages (the connections page)."""
        return await self._check_password(username, password, source)

    async def _check_password(
        self, username: str, password: str, source: str | None
    ) -> DevUser | None:
        """The user if ``password`` is theirs; throttled, off the event loop, and as slow
        for an unknown user name as for a real one (raises TooManyAttemptsError)."""
        if not password:
            return None
        user = self._config.user(username)
        account = f"user:{username[:200]}"
        if user is not None and user.password is not None:
            plain = user.password
            ok = await self._guard.check(
                lambda: _same_password(password, plain), account=account, source=source
            )
        elif user is None and self._plain_only:
            dummy = self._dummy_password
            ok = await self._guard.check(
                lambda: _same_password(password, dummy) and False, account=account, source=source
            )
        else:
            stored = None if user is None else user.password_hash
            ok = await self._guard.check_hash(
                password, stored, account=account, source=source, dummy=self._dummy
            )
        return user if ok else None

    # -- the token endpoint side ----------------------------------------------------------

    async def redeem(self, form: Form) -> AuthCode:
        """Check an ``authorization_code`` token request; return the consumed grant."""
        client_id = form.require("client_id")
        if await self._clients.get(client_id) is None:
            raise OAuthError(
                "invalid_client",
                f"unknown public client {client_id!r}: register it under [[clients]]",
                status_code=401,
            )
        code = form.require("code")
        redirect_uri = form.require("redirect_uri")
        verifier = form.get("code_verifier")
        resources = form.all("resource")
        grant = await self._consume(code)
        if grant is None:
            raise OAuthError(
                "invalid_grant", "the code is unknown, expired or already used: sign in again"
            )
        if grant.client_id != client_id:
            raise OAuthError("invalid_grant", "the code was issued to another client")
        if grant.redirect_uri != redirect_uri:
            raise OAuthError(
                "invalid_grant", "redirect_uri differs from the one in the authorization request"
            )
        if verifier is None:
            raise OAuthError("invalid_request", "PKCE is required: send code_verifier")
        if not _VERIFIER_RE.match(verifier) or not hmac.compare_digest(
            pkce_challenge(verifier), grant.code_challenge
        ):
            raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
        if len(resources) > 1 or (resources and resources[0] != grant.resource):
            raise OAuthError(
                "invalid_target", "resource must be omitted or equal the one signed in for"
            )
        return grant


def _same_password(presented: str, expected: str) -> bool:
    """Constant-time comparison of a dev-only plaintext password."""
    digest = hashlib.sha256(presented.encode("utf-8", "replace")).digest()
    return hmac.compare_digest(digest, hashlib.sha256(expected.encode()).digest())


def _redirect(uri: str, params: dict[str, str | None]) -> Response:
    parts = urlsplit(uri)
    extra = urlencode({k: v for k, v in params.items() if v is not None})
    query = f"{parts.query}&{extra}" if parts.query else extra
    location = urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
    return RedirectResponse(location, status_code=303, headers={"Cache-Control": "no-store"})


_STYLE = (
    "body{font-family:sans-serif;max-width:26em;margin:4em auto}label{display:block;margin:.6em 0}"
)


def _page(title: str, body: str, status: int) -> HTMLResponse:
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
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "form-action 'self'; frame-ancestors 'none'",
        },
    )


def _page_error(message: str, *, status: int = 400) -> HTMLResponse:
    return _page("Sign-in request rejected", f"<p>{html.escape(message)}</p>", status)


def _login_page(req: _AuthRequest, *, error: str | None, status: int = 200) -> HTMLResponse:
    hidden = "".join(
        f"<input type='hidden' name='{html.escape(k)}' value='{html.escape(v)}'>"
        for k, v in req.hidden_fields().items()
    )
    notice = f"<p role='alert'><strong>{html.escape(error)}</strong></p>" if error else ""
    body = (
        f"<p>Sign in to let <b>{html.escape(req.agent.client_id)}</b> act for you "
        f"(client <code>{html.escape(req.client.client_id)}</code>).</p>{notice}"
        "<form method='post' action='authorize'>"
        f"{hidden}"
        "<label>Username <input name='username' autocomplete='username' required></label>"
        "<label>Password <input name='password' type='password' "
        "autocomplete='current-password' required></label>"
        "<button type='submit'>Sign in</button></form>"
    )
    return _page("Sign in", body, status)
