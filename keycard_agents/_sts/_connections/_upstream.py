"""The token service as an OAuth client of an upstream provider.

RFC 8414 §3 and OpenID Connect Discovery 1.0 §4 (metadata; §3.3: the stated issuer
must equal the configured one), RFC 6749 §4.1 (authorization request, §4.1.3 code
redemption), §6 (refresh, with the rotated refresh token of RFC 9700 §4.14.2 replacing
the old one), §2.3.1 (client_secret_basic / client_secret_post), §5.1-§5.2 (responses
and errors), RFC 7636 (PKCE S256), RFC 9207 (``iss`` in the authorization response),
RFC 7009 (revocation), RFC 8707 (``resource``). Upstream answers are read within size
bounds and parsed with the bounded JSON parser; tokens never reach a message or a log.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import anyio
import httpx

from keycard_agents._json import loads_bounded
from keycard_agents._logs import get_logger
from keycard_agents._oauth._http import (
    DocumentTooLargeError,
    describe_error,
    read_document,
)
from keycard_agents._oauth._urls import discovery_urls, identifier_mismatch
from keycard_agents._sts._connection_config import ConnectionConfig

__all__ = ["UpstreamEndpoints", "UpstreamError", "UpstreamProvider", "UpstreamTokens"]

logger = get_logger("keycard_agents.sts.upstream")

_MAX_RESPONSE_BYTES = 64 * 1024
_MAX_TOKEN_CHARS = 16 * 1024
_ERROR_CODE = re.compile(r"^[\x20-\x21\x23-\x5b\x5d-\x7e]{1,64}$")  # RFC 6749 §5.2 charset


class UpstreamError(Exception):
    """The upstream provider refused, or could not be reached; the text is safe to show.

    ``error`` is the provider's OAuth error code (``invalid_grant`` ...), or
    ``unreachable`` / ``invalid_response`` for transport and protocol failures.
    """

    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message

    @property
    def grant_is_gone(self) -> bool:
        """The user's grant is revoked or expired (RFC 6749 §5.2 ``invalid_grant``)."""
        return self.error == "invalid_grant"


@dataclass(frozen=True)
class UpstreamEndpoints:
    authorization_endpoint: str
    token_endpoint: str
    revocation_endpoint: str | None
    issuer: str | None
    iss_parameter_supported: bool = False


@dataclass(frozen=True)
class UpstreamTokens:
    """A token response from the provider; the repr hides the tokens."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_in: float | None
    scopes: tuple[str, ...]


def _endpoint(value: Any, name: str, where: str) -> str:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("https", "http") or not parts.netloc:
        raise UpstreamError("invalid_response", f"{where} has no valid {name}")
    return str(value)


class UpstreamProvider:
    """One connection's provider: discovery, authorization URL, code, refresh, revoke."""

    def __init__(
        self,
        connection: ConnectionConfig,
        *,
        http: httpx.AsyncClient,
        client_secret: str | None,
        timeout: float = 10.0,
    ) -> None:
        self.connection = connection
        self._http = http
        self._secret = client_secret
        self._timeout = timeout
        self._endpoints: UpstreamEndpoints | None = None
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"UpstreamProvider(connection={self.connection.name!r})"

    async def endpoints(self) -> UpstreamEndpoints:
        """The configured endpoints, completed from the provider's metadata when needed."""
        async with self._lock:
            if self._endpoints is None:
                self._endpoints = await self._discover()
            return self._endpoints

    async def _discover(self) -> UpstreamEndpoints:
        c = self.connection
        metadata: dict[str, Any] = {}
        if c.issuer is not None:
            metadata = await self._metadata(c.issuer)
        where = f"connection {c.name!r}: the provider's metadata"
        authorize = c.authorization_endpoint or _endpoint(
            metadata.get("authorization_endpoint"), "authorization_endpoint", where
        )
        token = c.token_endpoint or _endpoint(
            metadata.get("token_endpoint"), "token_endpoint", where
        )
        revocation = c.revocation_endpoint
        if revocation is None and metadata.get("revocation_endpoint") is not None:
            revocation = _endpoint(metadata["revocation_endpoint"], "revocation_endpoint", where)
        return UpstreamEndpoints(
            authorization_endpoint=authorize,
            token_endpoint=token,
            revocation_endpoint=revocation,
            issuer=c.issuer,
            iss_parameter_supported=metadata.get("authorization_response_iss_parameter_supported")
            is True,
        )

    async def _metadata(self, issuer: str) -> dict[str, Any]:
        urls = discovery_urls(issuer)
        for i, url in enumerate(urls):
            status, body = await self._get_json(url)
            if status == 404 and i + 1 < len(urls):
                continue
            if status != 200 or not isinstance(body, dict):
                raise UpstreamError(
                    "unreachable",
                    f"connection {self.connection.name!r}: metadata at {url} answered HTTP "
                    f"{status}; check the connection's issuer",
                )
            if body.get("issuer") != issuer:  # RFC 8414 §3.3
                raise UpstreamError(
                    "invalid_response",
                    f"connection {self.connection.name!r}: metadata at {url}: "
                    f"{identifier_mismatch(body.get('issuer'), issuer)}",
                )
            return body
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def authorization_url(
        self,
        endpoints: UpstreamEndpoints,
        *,
        state: str,
        redirect_uri: str,
        code_challenge: str | None,
    ) -> str:
        c = self.connection
        params: dict[str, str] = {
            "response_type": "code",
            "client_id": c.client_id or "",
            "redirect_uri": redirect_uri,
            "state": state,
        }
        if c.scopes:
            params["scope"] = " ".join(c.scopes)
        if code_challenge is not None:
            params["code_challenge"] = code_challenge
            params["code_challenge_method"] = "S256"
        if c.upstream_resource is not None:
            params["resource"] = c.upstream_resource
        base = endpoints.authorization_endpoint
        joiner = "&" if urlsplit(base).query else "?"
        return f"{base}{joiner}{urlencode(params)}"

    async def redeem_code(
        self, code: str, *, redirect_uri: str, code_verifier: str | None
    ) -> UpstreamTokens:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if code_verifier is not None:
            form["code_verifier"] = code_verifier
        if self.connection.upstream_resource is not None:
            form["resource"] = self.connection.upstream_resource
        return await self._token_request(form, requested=self.connection.scopes)

    async def refresh(self, refresh_token: str, *, scopes: tuple[str, ...]) -> UpstreamTokens:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if self.connection.upstream_resource is not None:
            form["resource"] = self.connection.upstream_resource
        return await self._token_request(form, requested=scopes)

    async def revoke(self, token: str, *, hint: str) -> bool:
        """RFC 7009 §2.1; ``False`` when there is no revocation endpoint. A 200 (even for
        an unknown token, §2.2) is success; anything else raises :class:`UpstreamError`."""
        endpoints = await self.endpoints()
        if endpoints.revocation_endpoint is None:
            return False
        form = {"token": token, "token_type_hint": hint}
        status, body = await self._post(endpoints.revocation_endpoint, form)
        if status != 200:
            raise self._error(status, body, "revocation")
        return True

    # -- HTTP ------------------------------------------------------------------------------

    def _auth(self, form: dict[str, str]) -> tuple[dict[str, str], httpx.Auth | None]:
        c = self.connection
        assert c.client_id is not None
        if c.client_auth == "client_secret_basic":
            assert self._secret is not None
            return form, httpx.BasicAuth(c.client_id, self._secret)
        if c.client_auth == "client_secret_post":
            assert self._secret is not None
            return {**form, "client_id": c.client_id, "client_secret": self._secret}, None
        return {**form, "client_id": c.client_id}, None

    async def _token_request(
        self, form: dict[str, str], *, requested: tuple[str, ...]
    ) -> UpstreamTokens:
        endpoints = await self.endpoints()
        status, body = await self._post(endpoints.token_endpoint, form)
        if status != 200:
            raise self._error(status, body, form["grant_type"])
        return self._tokens(body, requested)

    async def _post(self, url: str, form: dict[str, str]) -> tuple[int, Any]:
        data, auth = self._auth(form)
        headers = {"Accept": "application/json"}
        try:
            with anyio.fail_after(self._timeout):
                async with self._http.stream(
                    "POST", url, data=data, headers=headers, auth=auth or httpx.USE_CLIENT_DEFAULT
                ) as response:
                    raw = await read_document(response, limit=_MAX_RESPONSE_BYTES)
                    status = response.status_code
        except TimeoutError:
            raise UpstreamError(
                "unreachable", f"the provider at {url} did not answer within {self._timeout:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise UpstreamError(
                "unreachable", f"the provider at {url} is unreachable: {describe_error(exc)}"
            ) from None
        except DocumentTooLargeError:
            raise UpstreamError(
                "invalid_response", f"the provider at {url} sent too much"
            ) from None
        try:
            body = loads_bounded(raw, max_depth=8) if raw else None
        except ValueError:
            body = None
        return status, body

    async def _get_json(self, url: str) -> tuple[int, Any]:
        try:
            with anyio.fail_after(self._timeout):
                async with self._http.stream(
                    "GET", url, headers={"Accept": "application/json"}
                ) as response:
                    raw = await read_document(response)
                    status = response.status_code
        except (TimeoutError, httpx.HTTPError, DocumentTooLargeError) as exc:
            reason = describe_error(exc) if isinstance(exc, httpx.HTTPError) else "no answer"
            raise UpstreamError(
                "unreachable", f"connection {self.connection.name!r}: {url}: {reason}"
            ) from None
        try:
            return status, loads_bounded(raw) if status == 200 else None
        except ValueError:
            return status, None

    def _error(self, status: int, body: Any, what: str) -> UpstreamError:
        name = self.connection.name
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            code = body["error"] if _ERROR_CODE.match(body["error"]) else "invalid_response"
            detail = body.get("error_description")
            detail = detail[:200] if isinstance(detail, str) and detail.isprintable() else ""
            return UpstreamError(
                code,
                f"connection {name!r}: the provider refused the {what} request: {code}"
                + (f" ({detail})" if detail else ""),
            )
        return UpstreamError(
            "invalid_response" if status < 500 else "unreachable",
            f"connection {name!r}: the provider answered the {what} request with HTTP {status}",
        )

    def _tokens(self, body: Any, requested: tuple[str, ...]) -> UpstreamTokens:
        name = self.connection.name

        def bad(what: str) -> UpstreamError:
            return UpstreamError(
                "invalid_response", f"connection {name!r}: the provider's token response {what}"
            )

        if not isinstance(body, dict):
            raise bad("is not a JSON object")
        token = body.get("access_token")
        if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN_CHARS:
            raise bad("has no usable access_token")
        token_type = body.get("token_type")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise bad("has a token_type other than Bearer")
        refresh = body.get("refresh_token")
        if refresh is not None and (
            not isinstance(refresh, str) or not refresh or len(refresh) > _MAX_TOKEN_CHARS
        ):
            raise bad("has a malformed refresh_token")
        expires_in = body.get("expires_in")
        if expires_in is not None and (
            isinstance(expires_in, bool)
            or not isinstance(expires_in, (int, float))
            or not math.isfinite(expires_in)
            or expires_in <= 0
        ):
            raise bad("has an expires_in that is not a positive number")
        scope = body.get("scope")
        # RFC 6749 §5.1: without ``scope`` the granted scopes are the requested ones.
        scopes = tuple(dict.fromkeys(scope.split())) if isinstance(scope, str) else requested
        return UpstreamTokens(
            access_token=token,
            refresh_token=refresh,
            expires_in=None if expires_in is None else float(expires_in),
            scopes=scopes,
        )
