"""Discovering and caching the signing keys of trusted issuers.

Implements RFC 8414 §3 (authorization server metadata; §3.1 well-known URL with path
insertion, §3.3 the ``issuer`` in the metadata must equal the configured issuer),
with a fallback to OpenID Connect Discovery 1.0 §4 when the RFC 8414 document is
absent, and RFC 7517 §5 (JWK Sets) with the key-selection rules of RFC 7515 §4.1.4
(``kid``). Keys are cached per issuer with a TTL; an unknown ``kid`` triggers one
rate-limited refetch (the issuer may have rotated), and concurrent fetches for one
issuer are coalesced into a single request.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from joserfc.jwk import Key
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from keycard_agents._errors import (
    ConfigurationError,
    InvalidTokenError,
    IssuerUnreachableError,
    KeycardError,
)
from keycard_agents._jose._keys import ALGORITHMS, VerificationKeys
from keycard_agents._jose._profiles import DEFAULT_PROFILE, TokenProfile
from keycard_agents._json import JsonLimitError, loads_bounded
from keycard_agents._logs import get_logger
from keycard_agents._oauth._http import DocumentTooLargeError, is_retryable_status, read_document
from keycard_agents._oauth._urls import (
    authorization_server_metadata_url,
    identifier_mismatch,
    openid_configuration_url,
    same_origin,
)
from keycard_agents._observe._tracing import fetch_span

__all__ = ["JWKSCache", "TrustedIssuer"]

logger = get_logger("keycard_agents.jwks")


@dataclass(frozen=True)
class TrustedIssuer:
    """An issuer whose tokens are accepted, and where its keys come from.

    Keys come from ``jwks`` (inline, no network), else ``jwks_uri``, else the
    ``jwks_uri`` of its metadata at ``metadata_url`` (default: the RFC 8414 well-known
    URL with §3.1 path insertion, then OpenID Connect discovery). ``profile`` says what
    its access tokens look like (default RFC 9068; see :class:`TokenProfile`).
    """

    issuer: str
    jwks_uri: str | None = None
    metadata_url: str | None = None
    jwks: Mapping[str, Any] | None = None
    profile: TokenProfile = DEFAULT_PROFILE


class _Retryable(Exception):
    """A failure worth another try: a transport error, a 429 or a 5xx answer."""


class _Unreachable(Exception):
    """A failure no retry can fix (4xx, wrong content); carries the reason."""


@dataclass
class _IssuerState:
    config: TrustedIssuer
    lock: anyio.Lock
    static: bool = False
    keys: VerificationKeys | None = None
    fetched_at: float = 0.0
    last_attempt: float | None = None
    last_error: KeycardError | None = None
    generation: int = 0
    requests: int = field(default=0)


def _again(exc: KeycardError) -> KeycardError:
    """A fresh copy of a shared failure, for another waiter to raise."""
    if isinstance(exc, ConfigurationError):
        return ConfigurationError(str(exc), setting=exc.setting)
    return IssuerUnreachableError(str(exc))


class JWKSCache:
    """A :class:`~keycard_agents._jose._keys.KeyResolver` that fetches issuers' JWKS.

    Keys are fetched on first use and cached ``ttl`` seconds. A token naming an
    unknown ``kid`` causes one refetch, at most once per ``min_refresh_interval``
    seconds per issuer. When a refresh fails while cached keys exist, the cached
    keys stay in use (and a warning is logged) until a later refresh succeeds.
    Transport errors and 5xx answers are retried ``retries`` times with exponential
    backoff and jitter starting at ``backoff`` seconds.
    """

    def __init__(
        self,
        *,
        issuers: Sequence[TrustedIssuer],
        http_client: httpx.AsyncClient | None = None,
        ttl: float = 300,
        min_refresh_interval: float = 30,
        timeout: float = 5.0,
        retries: int = 3,
        clock: Callable[[], float] = time.monotonic,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        algorithms: Collection[str] = ALGORITHMS,
    ) -> None:
        if ttl <= 0 or min_refresh_interval < 0 or timeout <= 0 or retries < 0 or backoff < 0:
            raise ConfigurationError(
                "ttl and timeout must be positive; min_refresh_interval, retries and "
                "backoff must not be negative"
            )
        self._ttl = ttl
        self._min_refresh = min_refresh_interval
        self._timeout = timeout
        self._retries = retries
        self._clock = clock
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._algorithms = tuple(algorithms)
        self._client = http_client
        self._owns_client = http_client is None
        self._issuers: dict[str, _IssuerState] = {}
        for config in issuers:
            if config.issuer in self._issuers:
                raise ConfigurationError(
                    f"issuer {config.issuer!r} is configured twice", setting="issuers"
                )
            state = _IssuerState(config=config, lock=anyio.Lock())
            if config.jwks is not None:
                try:
                    state.keys = VerificationKeys.from_jwks(
                        config.jwks,
                        algorithms=self._algorithms,
                        source=f"inline JWKS of issuer {config.issuer!r}",
                    )
                except ValueError as exc:
                    raise ConfigurationError(str(exc), setting="jwks") from exc
                state.static = True
            self._issuers[config.issuer] = state

    # -- KeyResolver -------------------------------------------------------------

    async def resolve(self, *, issuer: str, kid: str | None, alg: str) -> Key:
        state = self._state(issuer)
        if not state.static:
            if state.keys is None or self._expired(state):
                await self._refresh(state, seen=state.generation)
            assert state.keys is not None
            if kid is not None and kid not in state.keys and self._may_refetch(state):
                logger.info("issuer %s: unknown key id %r, refetching its JWKS", issuer, kid)
                await self._refresh(state, seen=state.generation)
        assert state.keys is not None
        return state.keys.find(issuer=issuer, kid=kid, alg=alg)

    def known(self, *, issuer: str, kid: str | None) -> bool:
        state = self._issuers.get(issuer)
        if state is None or state.keys is None or kid is None:
            return False
        if not state.static and self._clock() - state.fetched_at >= self._ttl:
            return False
        return kid in state.keys

    # -- management --------------------------------------------------------------

    async def refresh(self, issuer: str) -> None:
        """Fetch ``issuer``'s keys now (ignoring the TTL and the rate limit)."""
        state = self._state(issuer)
        if not state.static:
            await self._refresh(state, seen=state.generation)

    def requests_made(self, issuer: str) -> int:
        """How many metadata and JWKS documents were requested for ``issuer``."""
        return self._state(issuer).requests

    async def aclose(self) -> None:
        """Close the HTTP client, if this cache created it."""
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- internals ---------------------------------------------------------------

    def _state(self, issuer: str) -> _IssuerState:
        state = self._issuers.get(issuer)
        if state is None:
            raise InvalidTokenError(
                f"issuer {issuer!r} is not configured in this key cache", check="issuer"
            )
        return state

    def _expired(self, state: _IssuerState) -> bool:
        now = self._clock()
        if now - state.fetched_at < self._ttl:
            return False
        # Stale keys after a failed refresh: try again only once the rate limit allows.
        return state.last_error is None or self._may_refetch(state)

    def _may_refetch(self, state: _IssuerState) -> bool:
        return state.last_attempt is None or (
            self._clock() - state.last_attempt >= self._min_refresh
        )

    async def _refresh(self, state: _IssuerState, *, seen: int) -> None:
        async with state.lock:
            if state.generation != seen:
                # Another task finished a fetch while this one waited: share its result.
                if state.keys is None and state.last_error is not None:
                    raise _again(state.last_error)
                return
            state.last_attempt = self._clock()
            try:
                keys = await self._fetch(state)
            except KeycardError as exc:
                state.generation += 1
                state.last_error = exc
                if state.keys is None:
                    raise
                logger.warning(
                    "issuer %s: refreshing keys failed, still using the cached ones: %s",
                    state.config.issuer,
                    exc,
                )
                return
            state.keys = keys
            state.fetched_at = self._clock()
            state.last_error = None
            state.generation += 1
            logger.debug(
                "issuer %s: %d key(s): %s",
                state.config.issuer,
                len(keys),
                ", ".join(keys.kids()),
            )

    async def _fetch(self, state: _IssuerState) -> VerificationKeys:
        config = state.config
        jwks_uri = config.jwks_uri
        if jwks_uri is None:
            jwks_uri = await self._discover(state)
        document = await self._get_json(state, jwks_uri, what="JWKS")
        try:
            keys = VerificationKeys.from_jwks(
                document, algorithms=self._algorithms, source=f"JWKS at {jwks_uri}"
            )
        except ValueError as exc:
            raise IssuerUnreachableError(
                f"could not use the keys of issuer {config.issuer}: {exc}"
            ) from exc
        if not len(keys):
            raise IssuerUnreachableError(
                f"could not use the keys of issuer {config.issuer}: JWKS at {jwks_uri} has "
                f"no signature key for the allowed algorithms ({', '.join(self._algorithms)})"
            )
        return keys

    async def _discover(self, state: _IssuerState) -> str:
        config = state.config
        url = config.metadata_url or authorization_server_metadata_url(config.issuer)
        try:
            metadata = await self._get_json(state, url, what="metadata", missing_ok=True)
        except _Missing:
            if config.metadata_url is not None:
                raise IssuerUnreachableError(
                    f"could not reach issuer {config.issuer}: metadata at {url} "
                    "answered 404; check metadata_url"
                ) from None
            url = openid_configuration_url(config.issuer)
            try:
                metadata = await self._get_json(state, url, what="metadata", missing_ok=True)
            except _Missing:
                raise IssuerUnreachableError(
                    f"could not reach issuer {config.issuer}: neither "
                    f"{authorization_server_metadata_url(config.issuer)} (RFC 8414) nor {url} "
                    "(OpenID Connect) exists; set jwks_uri or metadata_url for this issuer"
                ) from None
        if metadata.get("issuer") != config.issuer:
            raise ConfigurationError(
                f"metadata at {url}: {identifier_mismatch(metadata.get('issuer'), config.issuer)}"
                " (RFC 8414 §3.3); fix the configured issuer string (it must match exactly, "
                "including any trailing slash)",
                setting="issuers",
            )
        jwks_uri = metadata.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise IssuerUnreachableError(
                f"could not use issuer {config.issuer}: metadata at {url} has no jwks_uri"
            )
        if not same_origin(jwks_uri, config.issuer):
            raise ConfigurationError(
                f"metadata of issuer {config.issuer} points its jwks_uri to another origin "
                f"({jwks_uri}); refusing to fetch keys there. If that is intended, set "
                "jwks_uri explicitly for this issuer",
                setting="jwks_uri",
            )
        return jwks_uri

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:  # every request carries the cache's timeout
            self._client = httpx.AsyncClient()
        return self._client

    async def _get_json(
        self, state: _IssuerState, url: str, *, what: str, missing_ok: bool = False
    ) -> dict[str, Any]:
        issuer = state.config.issuer
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self._retries + 1),
                wait=wait_exponential(multiplier=self._backoff, max=self._max_backoff)
                + wait_random(0, self._backoff),
                retry=retry_if_exception_type(_Retryable),
                sleep=anyio.sleep,
                reraise=True,
            ):
                with attempt:
                    body = await self._get(state, url, what=what, missing_ok=missing_ok)
        except _Retryable as exc:
            raise IssuerUnreachableError(
                f"could not reach issuer {issuer} at {url}: {exc} (after {self._retries + 1} "
                "attempts); check that the issuer is running and the URL is right"
            ) from exc.__cause__
        except _Unreachable as exc:
            raise IssuerUnreachableError(
                f"could not reach issuer {issuer}: {what} at {url}: {exc}"
            ) from exc.__cause__
        try:
            document = loads_bounded(body)
        except JsonLimitError as exc:
            raise IssuerUnreachableError(
                f"could not use issuer {issuer}: {what} at {url} is not valid JSON ({exc})"
            ) from exc
        if not isinstance(document, dict):
            raise IssuerUnreachableError(
                f"could not use issuer {issuer}: {what} at {url} is not a JSON object"
            )
        return document

    async def _get(self, state: _IssuerState, url: str, *, what: str, missing_ok: bool) -> bytes:
        state.requests += 1
        with fetch_span(what, url) as trace_headers:  # a child of the request that needs it
            headers = {"Accept": "application/json", **trace_headers}
            return await self._get_traced(url, headers, missing_ok=missing_ok)

    async def _get_traced(self, url: str, headers: dict[str, str], *, missing_ok: bool) -> bytes:
        try:
            async with self._http().stream(
                "GET", url, headers=headers, timeout=self._timeout
            ) as response:
                status = response.status_code
                if is_retryable_status(status):
                    raise _Retryable(f"HTTP {status}")
                if status == 404 and missing_ok:
                    raise _Missing
                if status != 200:
                    raise _Unreachable(f"answered HTTP {status}, expected 200")
                try:
                    return await read_document(response)
                except DocumentTooLargeError as exc:
                    raise _Unreachable(str(exc)) from exc
        except httpx.TransportError as exc:
            raise _Retryable(f"{type(exc).__name__}: {str(exc) or 'no detail'}") from exc
        except httpx.HTTPError as exc:
            raise _Unreachable(f"{type(exc).__name__}: {exc}") from exc


class _Missing(Exception):
    """The document answered 404 (a discovery fallback may apply)."""
