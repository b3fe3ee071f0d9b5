"""Dynamic client registration (RFC 7591) of public clients that sign users in with PKCE.

Implements RFC 7591 §2 (the client metadata this service understands; unknown members are
ignored), §3 (an optional initial access token, sent as an RFC 6750 bearer token), §3.1
(the request: a JSON object POSTed to ``/register``), §3.2.1 (201 with the registered
metadata, which may differ from the request: this service registers public clients only,
``token_endpoint_auth_method`` ``none``, grant ``authorization_code``) and §3.2.2 (errors
``invalid_redirect_uri`` and ``invalid_client_metadata``, HTTP 400).

Redirect URIs follow the rules of RFC 9700 §4.1 and RFC 8252 §7.3 / §8.3: absolute,
without fragment or user information, ``https`` or ``http`` on a loopback host; anything
else (``javascript:``, ``data:``, ``http://`` on another host) is refused. Every field has
a size limit, and no request can produce a 5xx.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from keycard_agents._errors import InvalidTokenError, OAuthError
from keycard_agents._json import JsonLimitError, loads_bounded
from keycard_agents._logs import get_logger
from keycard_agents._oauth._challenge import quote
from keycard_agents._oauth._resource_server import bearer_token
from keycard_agents._sts._client_store import ClientStore, RegisteredClient
from keycard_agents._sts._config import TokenServiceConfig, check_url
from keycard_agents._sts._forms import NO_STORE, oauth_error_response, read_body
from keycard_agents._sts._throttle import CredentialGuard, DummyHash, request_source

__all__ = ["REGISTRATION_PATH", "RegistrationEndpoint"]

logger = get_logger("keycard_agents.sts")

REGISTRATION_PATH = "/register"

_MAX_BODY = 32 * 1024
_MAX_DEPTH = 8
_MAX_URI = 2000
_MAX_URIS_TOTAL = 8 * 1024
_MAX_NAME = 200
_MAX_SCOPE = 1000
_MAX_LIST = 20
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 §3.3
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_GRANTS_UNDERSTOOD = {"authorization_code", "refresh_token"}
_URL_FIELDS = ("client_uri", "logo_uri", "tos_uri", "policy_uri")


def _metadata_error(description: str) -> OAuthError:
    return OAuthError("invalid_client_metadata", description)


def _uri_error(description: str) -> OAuthError:
    return OAuthError("invalid_redirect_uri", description)


def _show(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_loopback_uri(uri: str) -> bool:
    parts = urlsplit(uri)
    return parts.scheme == "http" and parts.hostname in _LOOPBACK


def allowed_by(uri: str, allowed: Sequence[str]) -> bool:
    """``uri`` is listed exactly, or is a loopback URI listed with another port (RFC 8252
    §7.3: native apps get an ephemeral port)."""
    if uri in allowed:
        return True
    if not _is_loopback_uri(uri):
        return False
    parts = urlsplit(uri)
    for entry in allowed:
        other = urlsplit(entry)
        if (
            _is_loopback_uri(entry)
            and other.hostname == parts.hostname
            and other.path == parts.path
            and other.query == parts.query
        ):
            return True
    return False


def _redirect_uris(body: Mapping[str, Any], *, max_uris: int) -> tuple[str, ...]:
    value = body.get("redirect_uris")
    if value is None:
        raise _uri_error("redirect_uris is required: the URIs the client receives codes at")
    if not isinstance(value, list) or not value:
        raise _uri_error("redirect_uris must be a non-empty array of URI strings")
    if len(value) > max_uris:
        raise _uri_error(f"at most {max_uris} redirect URIs may be registered ({len(value)} sent)")
    total = 0
    for uri in value:
        if not isinstance(uri, str) or not uri:
            raise _uri_error("every redirect URI must be a non-empty string")
        total += len(uri)
        if len(uri) > _MAX_URI or total > _MAX_URIS_TOTAL:
            raise _uri_error(
                f"redirect URIs are limited to {_MAX_URI} characters each and "
                f"{_MAX_URIS_TOTAL} in all"
            )
        if _CONTROL.search(uri) or " " in uri:
            raise _uri_error(f"redirect URI {_show(uri)} contains spaces or control characters")
        try:
            parts = urlsplit(uri)
        except ValueError:
            raise _uri_error(f"redirect URI {_show(uri)} is not a URI") from None
        if parts.fragment or "#" in uri:
            raise _uri_error(
                f"redirect URI {_show(uri)} must not have a fragment (RFC 6749 §3.1.2)"
            )
        try:
            check_url(uri)
        except ValueError:
            raise _uri_error(
                f"redirect URI {_show(uri)} is refused: use https, or http on a loopback "
                "host (127.0.0.1, [::1], localhost) for a native app (RFC 8252 §7.3)"
            ) from None
    return tuple(dict.fromkeys(value))


def _strings(body: Mapping[str, Any], name: str, default: list[str]) -> list[str]:
    value = body.get(name, default)
    if (
        not isinstance(value, list)
        or len(value) > _MAX_LIST
        or not all(isinstance(v, str) and 0 < len(v) <= _MAX_URI for v in value)
    ):
        raise _metadata_error(f"{name} must be an array of at most {_MAX_LIST} strings")
    return value


def _check_metadata(body: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata fields other than redirect URIs, checked one by one (RFC 7591 §2)."""
    method = body.get("token_endpoint_auth_method", "none")
    if method != "none":
        raise _metadata_error(
            f"token_endpoint_auth_method {_show(method)} is not offered: only public clients "
            "(none) are registered here, and they sign users in with PKCE"
        )
    grants = _strings(body, "grant_types", ["authorization_code"])
    unknown = [g for g in grants if g not in _GRANTS_UNDERSTOOD]
    if unknown:
        raise _metadata_error(
            f"grant_types {_show(unknown)} are not offered to registered clients: use "
            "authorization_code (with PKCE)"
        )
    if "authorization_code" not in grants:
        raise _metadata_error("grant_types must include authorization_code")
    responses = _strings(body, "response_types", ["code"])
    if any(r != "code" for r in responses):
        raise _metadata_error("response_types may only be ['code'] (RFC 7591 §2.1)")
    if "jwks" in body or "jwks_uri" in body:
        raise _metadata_error("public clients have no keys: send neither jwks nor jwks_uri")
    name = body.get("client_name")
    if name is not None and (
        not isinstance(name, str) or not 0 < len(name) <= _MAX_NAME or _CONTROL.search(name)
    ):
        raise _metadata_error(f"client_name must be 1-{_MAX_NAME} printable characters")
    scope = body.get("scope")
    if scope is not None:
        if not isinstance(scope, str) or len(scope) > _MAX_SCOPE:
            raise _metadata_error(f"scope must be a string of at most {_MAX_SCOPE} characters")
        if not all(_SCOPE_TOKEN.fullmatch(s) for s in scope.split(" ") if s):
            raise _metadata_error("scope holds a character RFC 6749 §3.3 does not allow")
        scope = " ".join(dict.fromkeys(scope.split())) or None
    for field in _URL_FIELDS:
        url = body.get(field)
        if url is None:
            continue
        if not isinstance(url, str) or len(url) > _MAX_URI:
            raise _metadata_error(f"{field} must be a URL string")
        try:
            check_url(url)
        except ValueError:
            raise _metadata_error(
                f"{field} {_show(url)} is refused: use an https URL (or http on loopback)"
            ) from None
    software_id = body.get("software_id")
    if software_id is not None and (
        not isinstance(software_id, str) or not 0 < len(software_id) <= _MAX_NAME
    ):
        raise _metadata_error(f"software_id must be 1-{_MAX_NAME} characters")
    if "contacts" in body:
        _strings(body, "contacts", [])
    return {"client_name": name, "scope": scope, "software_id": software_id}


class RegistrationEndpoint:
    """``POST /register``: RFC 7591 registration under the configured policy."""

    def __init__(
        self,
        *,
        config: TokenServiceConfig,
        store: ClientStore,
        guard: CredentialGuard,
        clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._policy = config.registration
        self._store = store
        self._guard = guard
        self._clock = clock
        stored = self._policy.initial_access_token_hash
        self._dummy = DummyHash([stored] if stored else [])

    async def handle(self, request: Request) -> Response:
        try:
            await self._check_initial_access_token(request)
            body = await self._read(request)
            client = self._register(body)
        except _Challenge as exc:
            return exc.response()
        except OAuthError as exc:  # 429 / 503 of the guard carry Retry-After
            return oauth_error_response(exc)
        await self._store.add(client)
        logger.info(
            "registered public client %s (%s)", client.client_id, client.client_name or "unnamed"
        )
        return JSONResponse(
            {
                **client.to_dict(),
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
            },
            status_code=201,
            headers=dict(NO_STORE),
        )

    async def _check_initial_access_token(self, request: Request) -> None:
        stored = self._policy.initial_access_token_hash
        if stored is None:
            return
        try:
            token = bearer_token(request.headers)
        except InvalidTokenError:
            raise _Challenge("invalid_token", "the Authorization header is malformed") from None
        if token is None:
            # RFC 6750 §3.1: no error code when the request carried no credentials.
            raise _Challenge(None, "this token service requires an initial access token")
        ok = await self._guard.check_hash(
            token,
            stored,
            account="registration",
            source=request_source(request),
            dummy=self._dummy,
        )
        if not ok:
            raise _Challenge("invalid_token", "the initial access token is not valid")

    async def _read(self, request: Request) -> Mapping[str, Any]:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            raise _metadata_error("send the client metadata as application/json (RFC 7591 §3.1)")
        raw = await read_body(request, limit=_MAX_BODY)
        try:
            body = loads_bounded(raw, max_depth=_MAX_DEPTH)
        except JsonLimitError as exc:
            raise _metadata_error(f"the request body is not usable JSON: {exc}") from None
        if not isinstance(body, dict):
            raise _metadata_error("the request body must be a JSON object of client metadata")
        return body

    def _register(self, body: Mapping[str, Any]) -> RegisteredClient:
        uris = _redirect_uris(body, max_uris=self._policy.max_redirect_uris)
        allowed = self._policy.allowed_redirect_uris
        if allowed:
            refused = [u for u in uris if not allowed_by(u, allowed)]
            if refused:
                raise _uri_error(
                    f"redirect URI {_show(refused[0])} is not allowed here: the operator lists "
                    "the allowed ones in registration.allowed_redirect_uris"
                )
        metadata = _check_metadata(body)
        client_id = "dcr-" + secrets.token_urlsafe(18)
        return RegisteredClient(
            client_id=client_id,
            redirect_uris=uris,
            issued_at=int(self._clock()),
            client_name=metadata["client_name"],
            scope=metadata["scope"],
            software_id=metadata["software_id"],
        )


class _Challenge(Exception):
    """401 with an RFC 6750 §3 challenge (initial access token missing or invalid)."""

    def __init__(self, error: str | None, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description

    def response(self) -> Response:
        challenge = "Bearer"
        if self.error is not None:
            challenge += f" error={quote(self.error)}, error_description={quote(self.description)}"
        body = {"error_description": self.description}
        if self.error is not None:
            body["error"] = self.error
        return JSONResponse(
            body, status_code=401, headers={**NO_STORE, "WWW-Authenticate": challenge}
        )
