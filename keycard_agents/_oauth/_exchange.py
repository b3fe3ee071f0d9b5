"""The RFC 8693 token exchange client an agent uses at every hop.

Implements the request of RFC 8693 §2.1 (``subject_token``, optional ``actor_token``,
``resource`` per RFC 8707 §2, ``scope``), the response of §2.2.1 (``access_token``,
``issued_token_type``, ``token_type``, ``expires_in``), errors per §2.2.2 and RFC 6749
§5.2, the client credentials grant (RFC 6749 §4.4) for the agent's own actor token, and
token endpoint discovery from authorization server metadata (RFC 8414 §3, with the
``issuer`` check of §3.3, falling back to OpenID Connect Discovery 1.0 §4 on a 404), or
the token endpoint and metadata URL as configured.

Exchanged tokens are cached until shortly before they (or their subject token) expire;
concurrent identical exchanges share one request; transport failures, 5xx and 429 are
retried with jittered exponential backoff; policy denials never are.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import anyio
import httpx
from opentelemetry.trace import Span
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_random_exponential

from keycard_agents._errors import (
    ConfigurationError,
    DelegationDeniedError,
    InteractionRequiredError,
    InvalidTokenError,
    InvalidTokenResponseError,
    IssuerUnreachableError,
    TransportError,
)
from keycard_agents._json import loads_bounded
from keycard_agents._logs import get_logger
from keycard_agents._oauth._credentials import ApplicationCredential
from keycard_agents._oauth._http import (
    DocumentTooLargeError,
    describe_error,
    is_retryable_status,
    read_document,
    retry_after,
)
from keycard_agents._oauth._urls import discovery_urls, identifier_mismatch
from keycard_agents._observe._metrics import record_cache_lookup, record_exchange
from keycard_agents._observe._tracing import (
    ATTR_CACHE,
    ATTR_JTI,
    ATTR_SCOPES_GRANTED,
    ATTR_SCOPES_REQUESTED,
    ATTR_SUBJECT_JTI,
    ATTR_TARGET,
    fetch_span,
    inject_context,
    span,
)

__all__ = [
    "ACCESS_TOKEN_TYPE_URN",
    "TOKEN_EXCHANGE_GRANT",
    "ExchangeStats",
    "ExchangedToken",
    "SharedTokenCache",
    "TokenExchangeClient",
]

logger = get_logger("keycard_agents.exchange")

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105
ACCESS_TOKEN_TYPE_URN = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105
_INTERACTION_ERRORS = frozenset({"interaction_required", "consent_required", "login_required"})
_MAX_ERROR_DESCRIPTION = 500


@dataclass(frozen=True)
class ExchangedToken:
    """A token issued by the token service for one target. The repr hides the token."""

    access_token: str = field(repr=False)
    expires_at: float
    scopes: tuple[str, ...]
    resource: str | None
    issued_token_type: str = ACCESS_TOKEN_TYPE_URN
    token_type: str = "Bearer"  # noqa: S105 - the scheme name
    expires_in: int | None = None
    """Seconds the token was valid for when issued (the response's ``expires_in``)."""

    @property
    def authorization(self) -> str:
        """The ``Authorization`` header value (RFC 6750 §2.1)."""
        return f"Bearer {self.access_token}"

    @property
    def scope(self) -> list[str] | None:
        """The granted scopes as a list (Keycard's ``TokenResponse.scope``); see ``scopes``."""
        return list(self.scopes) if self.scopes else None

    def seconds_left(self, now: float) -> float:
        return self.expires_at - now


class SharedTokenCache(Protocol):
    """Exchanged tokens shared by the replicas of one agent (docs/replicas.md).

    Given one, :class:`TokenExchangeClient` looks there before exchanging and puts every
    token it obtains there, under a key digesting the issuer, the agent's client id, the
    grant, the subject token and the target and scopes: a token one replica exchanged is
    reused by the others (no second exchange at the token service). Identical exchanges
    in flight are coalesced within a replica only. A shared cache that fails is skipped
    (the exchange happens): it saves work, it decides nothing. The Redis implementation
    (encrypted at rest) is ``keycard_agents.redis.RedisTokenCache``.
    """

    def connected(self) -> AbstractAsyncContextManager[None]:
        """Hold the cache's connection open (the agent app's lifespan enters it)."""
        ...

    async def get(self, key: str) -> ExchangedToken | None: ...

    async def put(self, key: str, token: ExchangedToken, *, ttl: float) -> None:
        """Keep ``token`` for ``ttl`` seconds (until shortly before it must be refreshed)."""
        ...


@dataclass
class ExchangeStats:
    """Counters for tests and benchmarks."""

    exchanges: int = 0  # token requests that got a token (one per cache miss leader)
    http_requests: int = 0  # HTTP attempts to the token endpoint, retries included
    retries: int = 0
    cache_hits: int = 0
    shared_hits: int = 0  # tokens found in the cache shared with other replicas
    coalesced: int = 0  # callers that waited for an identical request in flight
    metadata_fetches: int = 0


@dataclass(frozen=True)
class _CacheEntry:
    token: ExchangedToken
    refresh_at: float


class _Inflight:
    __slots__ = ("abandoned", "done", "error", "result")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.result: ExchangedToken | None = None
        self.error: BaseException | None = None
        self.abandoned = False


class _Retryable(Exception):
    """A failure worth another attempt; ``reason`` is safe to show."""

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


_CacheKey = tuple[str, str, str, tuple[str, ...]]
_T = TypeVar("_T")


class TokenExchangeClient:
    """Exchanges the tokens an agent receives for tokens to call its dependencies.

    One instance per agent (it holds a cache and an HTTP connection pool); use it as an
    async context manager or call :meth:`aclose`. ``issuer`` must be the token
    service's issuer identifier exactly as its metadata states it (a trailing ``/``
    included).

    The token endpoint is ``token_endpoint`` when given (no metadata is fetched), else
    the one in the issuer's metadata: at ``metadata_url`` when given, else at the RFC 8414
    well-known URL, else (404) at the OpenID Connect discovery URL.

    ``use_actor_token`` sends the agent's own token as ``actor_token``; it is obtained
    with ``client_credentials`` for ``actor_token_resource`` and ``actor_token_scopes``
    when set (some issuers only issue a JWT, rather than an opaque token, for a
    resource).
    """

    def __init__(
        self,
        *,
        issuer: str,
        credential: ApplicationCredential,
        http_client: httpx.AsyncClient | None = None,
        cache_size: int = 10_000,
        refresh_margin: float = 30.0,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        max_retry_after: float = 10.0,
        use_actor_token: bool = False,
        actor_token_resource: str | None = None,
        actor_token_scopes: Sequence[str] | None = None,
        token_endpoint: str | None = None,
        metadata_url: str | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        token_cache: SharedTokenCache | None = None,
    ) -> None:
        parts = urlsplit(issuer)
        if parts.scheme not in ("https", "http") or not parts.netloc or parts.query:
            raise ConfigurationError(
                f"issuer {issuer!r} is not an absolute http(s) URL without query",
                setting="issuer",
            )
        if cache_size < 0 or retries < 0 or timeout <= 0 or refresh_margin < 0:
            raise ConfigurationError(
                "cache_size, retries and refresh_margin must be >= 0 and timeout > 0",
                setting="TokenExchangeClient",
            )
        for name, url in (("token_endpoint", token_endpoint), ("metadata_url", metadata_url)):
            if url is not None and not _is_http_url(url):
                raise ConfigurationError(
                    f"{name} {url!r} is not an absolute http(s) URL", setting=name
                )
        if actor_token_resource is not None:
            _check_resource(actor_token_resource)
        self.issuer = issuer
        self.credential = credential
        self._token_endpoint = token_endpoint
        self._metadata_url = metadata_url
        self._actor_resource = actor_token_resource
        self._actor_scopes = None if actor_token_scopes is None else tuple(actor_token_scopes)
        self._owns_client = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient()
        self._cache: OrderedDict[_CacheKey, _CacheEntry] = OrderedDict()
        self._cache_size = cache_size
        self._refresh_margin = refresh_margin
        self._timeout = timeout
        self._retries = retries
        self._backoff = wait_random_exponential(multiplier=backoff, max=max_backoff)
        self._max_retry_after = max_retry_after
        self._use_actor_token = use_actor_token
        self._clock = clock
        self._sleep = sleep
        self._inflight: dict[_CacheKey, _Inflight] = {}
        #: The cache shared with the agent's other replicas, if any (docs/replicas.md).
        self.token_cache = token_cache
        self._metadata: dict[str, Any] | None = None
        self._metadata_lock = anyio.Lock()
        self.stats = ExchangeStats()

    # ------------------------------------------------------------------ public API

    async def exchange(
        self,
        subject_token: str,
        *,
        resource: str,
        scopes: Sequence[str] | None = None,
        refresh: bool = False,
    ) -> ExchangedToken:
        """A token for ``resource`` on behalf of the subject of ``subject_token``.

        ``subject_token`` is the (already verified) token the agent received.
        ``scopes`` narrows the grant; ``None`` asks for the largest allowed set.
        ``refresh`` drops a cached token for the same request first (for example after
        the target answered 401 to it), so a new one is exchanged.
        Raises :class:`DelegationDeniedError` (or :class:`InteractionRequiredError`) when
        the token service refuses, :class:`TransportError` when it cannot be reached.
        """
        if not subject_token:
            raise InvalidTokenError("the subject token is empty", check="malformed")
        _check_resource(resource)
        wanted = _normalize_scopes(scopes)
        digest = hashlib.sha256(subject_token.encode()).hexdigest()
        subject_exp = _expiry_of(subject_token)
        key: _CacheKey = ("exchange", digest, resource, wanted)
        if refresh:
            self._cache.pop(key, None)

        async def request() -> ExchangedToken:
            form = {
                "grant_type": TOKEN_EXCHANGE_GRANT,
                "subject_token": subject_token,
                "subject_token_type": ACCESS_TOKEN_TYPE_URN,
                "resource": resource,
            }
            if wanted:
                form["scope"] = " ".join(wanted)
            if self._use_actor_token:
                actor = await self.client_credentials(
                    scopes=self._actor_scopes, resource=self._actor_resource
                )
                form["actor_token"] = actor.access_token
                form["actor_token_type"] = ACCESS_TOKEN_TYPE_URN
            return await self._token_request(form, resource=resource, scopes=wanted)

        with span("token exchange") as current:
            if current.is_recording():
                current.set_attributes({ATTR_TARGET: resource, ATTR_SCOPES_REQUESTED: wanted})
            token = await self._cached(key, request, not_after=subject_exp, trace_span=current)
            if current.is_recording():
                current.set_attribute(ATTR_SCOPES_GRANTED, token.scopes)
                # the jti of the token this exchange issued; the subject's under its own name
                subject_jti = _claim_of(subject_token, "jti")
                issued_jti = _claim_of(token.access_token, "jti")
                if isinstance(subject_jti, str):
                    current.set_attribute(ATTR_SUBJECT_JTI, subject_jti)
                if isinstance(issued_jti, str):
                    current.set_attribute(ATTR_JTI, issued_jti)
            return token

    async def client_credentials(
        self, *, scopes: Sequence[str] | None = None, resource: str | None = None
    ) -> ExchangedToken:
        """The agent's own token (RFC 6749 §4.4), sent as ``actor_token`` when enabled."""
        if resource is not None:
            _check_resource(resource)
        wanted = _normalize_scopes(scopes)
        key: _CacheKey = ("client_credentials", "", resource or "", wanted)

        async def request() -> ExchangedToken:
            form = {"grant_type": "client_credentials"}
            if resource is not None:
                form["resource"] = resource
            if wanted:
                form["scope"] = " ".join(wanted)
            return await self._token_request(form, resource=resource, scopes=wanted)

        return await self._cached(key, request, not_after=None)

    async def token_endpoint(self) -> str:
        """The configured token endpoint, else the one in the issuer's metadata (fetched once)."""
        if self._token_endpoint is not None:
            return self._token_endpoint
        metadata = await self.metadata()
        return str(metadata["token_endpoint"])

    async def metadata(self) -> Mapping[str, Any]:
        """The issuer's authorization server metadata, checked and cached."""
        async with self._metadata_lock:
            if self._metadata is None:
                self._metadata = await self._fetch_metadata()
            return self._metadata

    @property
    def client_id(self) -> str:
        """The client id this agent authenticates with (its credential's)."""
        return self.credential.client_id

    def clear_cache(self) -> None:
        """Forget every cached token (for example after a key rotation downstream)."""
        self._cache.clear()

    @property
    def cache_len(self) -> int:
        return len(self._cache)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._http.aclose()

    async def __aenter__(self) -> TokenExchangeClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"TokenExchangeClient(issuer={self.issuer!r}, credential={self.credential!r})"

    # ------------------------------------------------------------------ cache + coalescing

    async def _cached(
        self,
        key: _CacheKey,
        request: Callable[[], Awaitable[ExchangedToken]],
        *,
        not_after: float | None,
        trace_span: Span | None = None,
    ) -> ExchangedToken:
        while True:
            entry = self._cache.get(key)
            if entry is not None:
                if self._clock() < entry.refresh_at:
                    self._cache.move_to_end(key)
                    self.stats.cache_hits += 1
                    record_cache_lookup("hit")
                    if trace_span is not None:
                        trace_span.set_attribute(ATTR_CACHE, "hit")
                    return entry.token
                del self._cache[key]
            inflight = self._inflight.get(key)
            if inflight is None:
                break
            self.stats.coalesced += 1
            record_cache_lookup("coalesced")
            if trace_span is not None:
                trace_span.set_attribute(ATTR_CACHE, "coalesced")
            await inflight.done.wait()
            if inflight.abandoned:
                continue  # the leader was cancelled: try again, possibly as leader
            if inflight.error is not None:
                raise inflight.error
            assert inflight.result is not None
            return inflight.result

        inflight = _Inflight()
        self._inflight[key] = inflight
        record_cache_lookup("miss")
        if trace_span is not None:
            trace_span.set_attribute(ATTR_CACHE, "miss")
        try:
            shared = await self._shared_get(key)
            if shared is not None:
                self.stats.shared_hits += 1
                if trace_span is not None:
                    trace_span.set_attribute(ATTR_CACHE, "shared")
                inflight.result = shared
                self._store(key, shared, not_after=not_after)
                return shared
            token = await request()
        except Exception as exc:
            inflight.error = exc
            raise
        except BaseException:
            inflight.abandoned = True
            raise
        finally:
            del self._inflight[key]
            inflight.done.set()
        inflight.result = token
        self.stats.exchanges += 1
        self._store(key, token, not_after=not_after)
        await self._shared_put(key, token, not_after=not_after)
        return token

    def _shared_key(self, key: _CacheKey) -> str:
        """The shared cache's key: who asks (issuer, client), for what, for whom (digest)."""
        raw = "\x1f".join((self.issuer, self.client_id, *key[:3], " ".join(key[3])))
        return hashlib.sha256(raw.encode()).hexdigest()

    async def _shared_get(self, key: _CacheKey) -> ExchangedToken | None:
        if self.token_cache is None:
            return None
        try:
            token = await self.token_cache.get(self._shared_key(key))
        except Exception as exc:  # a cache: when it fails, exchange
            logger.warning("the shared token cache failed (%s); exchanging", type(exc).__name__)
            return None
        if token is None or token.expires_at - self._refresh_margin <= self._clock():
            return None
        return token

    async def _shared_put(
        self, key: _CacheKey, token: ExchangedToken, *, not_after: float | None
    ) -> None:
        if self.token_cache is None:
            return
        expires = token.expires_at if not_after is None else min(token.expires_at, not_after)
        ttl = expires - self._refresh_margin - self._clock()
        if ttl <= 0:
            return
        try:
            await self.token_cache.put(self._shared_key(key), token, ttl=ttl)
        except Exception as exc:
            logger.warning("the shared token cache failed (%s)", type(exc).__name__)

    def _store(self, key: _CacheKey, token: ExchangedToken, *, not_after: float | None) -> None:
        expires = token.expires_at if not_after is None else min(token.expires_at, not_after)
        refresh_at = expires - self._refresh_margin
        if self._cache_size == 0 or refresh_at <= self._clock():
            return
        self._cache[key] = _CacheEntry(token, refresh_at)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    # ------------------------------------------------------------------ HTTP

    async def _token_request(
        self, form: dict[str, str], *, resource: str | None, scopes: tuple[str, ...]
    ) -> ExchangedToken:
        endpoint = await self.token_endpoint()
        grant = form["grant_type"]

        async def attempt() -> ExchangedToken:
            auth = await self.credential.authenticate(token_endpoint=endpoint, issuer=self.issuer)
            started = self._clock()
            self.stats.http_requests += 1
            headers = {"Accept": "application/json", **auth.headers}
            inject_context(headers)  # the token service is a hop of the trace too
            response = await self._http.post(endpoint, data={**form, **auth.form}, headers=headers)
            return _parse_token_response(
                response, now=started, resource=resource, scopes=scopes, grant=grant
            )

        logger.debug(
            "token request grant=%s resource=%s scopes=%s", grant, resource, " ".join(scopes)
        )
        timer = time.perf_counter()
        kind = "token-exchange" if grant == TOKEN_EXCHANGE_GRANT else grant
        try:
            token = await self._with_retries(attempt, url=endpoint, error=TransportError)
        except Exception:
            record_exchange(time.perf_counter() - timer, grant=kind, ok=False)
            raise
        record_exchange(time.perf_counter() - timer, grant=kind, ok=True)
        return token

    async def _fetch_metadata(self) -> dict[str, Any]:
        *first, last = discovery_urls(self.issuer, self._metadata_url)
        for url in first:
            try:
                return await self._fetch_metadata_at(url, missing_ok=True)
            except _MetadataMissing:
                logger.debug("no metadata at %s; trying %s", url, last)
        return await self._fetch_metadata_at(last, missing_ok=False)

    async def _fetch_metadata_at(self, url: str, *, missing_ok: bool) -> dict[str, Any]:
        async def attempt() -> dict[str, Any]:
            self.stats.metadata_fetches += 1
            with fetch_span("metadata", url) as trace_headers:
                headers = {"Accept": "application/json", **trace_headers}
                return await self._read_metadata(url, headers, missing_ok=missing_ok)

        return await self._with_retries(attempt, url=url, error=IssuerUnreachableError)

    async def _read_metadata(
        self, url: str, headers: dict[str, str], *, missing_ok: bool
    ) -> dict[str, Any]:
        async with self._http.stream("GET", url, headers=headers) as response:
            status = response.status_code
            if is_retryable_status(status):
                raise _Retryable(f"HTTP {status}", retry_after=retry_after(response))
            if status == 404 and missing_ok:
                raise _MetadataMissing(url)
            if status != 200:
                tried = " and ".join(discovery_urls(self.issuer, self._metadata_url))
                raise IssuerUnreachableError(
                    f"token service metadata at {url} answered HTTP {status} "
                    f"(tried {tried}); check the issuer URL, or set metadata_url or "
                    "token_endpoint"
                )
            try:
                raw = await read_document(response)
            except DocumentTooLargeError as exc:
                raise IssuerUnreachableError(
                    f"token service metadata at {url}: {exc}; check the issuer URL"
                ) from exc
        try:
            body = loads_bounded(raw)
        except ValueError as exc:  # JsonLimitError: not JSON, or nested beyond the limit
            raise IssuerUnreachableError(
                f"token service metadata at {url} is not acceptable JSON ({exc}); "
                "check the issuer URL"
            ) from exc
        return _check_metadata(body, issuer=self.issuer, url=url)

    async def _with_retries(
        self,
        attempt: Callable[[], Awaitable[_T]],
        *,
        url: str,
        error: type[TransportError],
    ) -> _T:
        attempts = self._retries + 1
        retrying = AsyncRetrying(
            sleep=self._sleep,
            stop=stop_after_attempt(attempts),
            wait=self._wait,
            retry=retry_if_exception_type(_Retryable),
            before_sleep=self._before_sleep,
            reraise=True,
        )
        try:
            async for state in retrying:
                with state:
                    try:
                        with anyio.fail_after(self._timeout):
                            return await attempt()
                    except TimeoutError as exc:
                        raise _Retryable(f"no answer within {self._timeout:g} s") from exc
                    except httpx.TransportError as exc:
                        raise _Retryable(describe_error(exc)) from exc
        except _Retryable as exc:
            raise error(
                f"token service at {url} unreachable after {attempts} attempts: {exc.reason}"
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover - reraise=True always raises

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return min(exc.retry_after, self._max_retry_after)
        return float(self._backoff(state))

    def _before_sleep(self, state: RetryCallState) -> None:
        self.stats.retries += 1
        exc = state.outcome.exception() if state.outcome is not None else None
        logger.info(
            "token service attempt %d failed (%s); retrying",
            state.attempt_number,
            getattr(exc, "reason", type(exc).__name__),
        )


# ---------------------------------------------------------------------- helpers


class _MetadataMissing(Exception):
    """A metadata document answered 404 (the discovery fallback applies)."""


def _is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("https", "http") and bool(parts.netloc)


def _check_metadata(body: Any, *, issuer: str, url: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise IssuerUnreachableError(f"token service metadata at {url} is not a JSON object")
    stated = body.get("issuer")
    if stated != issuer:
        # RFC 8414 §3.3: the metadata must not be used when the issuer differs.
        raise ConfigurationError(
            f"token service metadata at {url}: {identifier_mismatch(stated, issuer)}; "
            "configure the issuer exactly as the token service states it",
            setting="issuer",
        )
    endpoint = body.get("token_endpoint")
    parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
    if parts is None or parts.scheme not in ("https", "http") or not parts.netloc:
        raise IssuerUnreachableError(f"token service metadata at {url} has no valid token_endpoint")
    return body


def _parse_token_response(
    response: httpx.Response,
    *,
    now: float,
    resource: str | None,
    scopes: tuple[str, ...],
    grant: str,
) -> ExchangedToken:
    status = response.status_code
    if is_retryable_status(status):
        raise _Retryable(f"HTTP {status}", retry_after=retry_after(response))
    try:
        body = response.json()
    except ValueError:
        body = None
    if status != 200:
        if 400 <= status < 500 and isinstance(body, dict) and isinstance(body.get("error"), str):
            error = body["error"]
            description = body.get("error_description")
            description = description if isinstance(description, str) else ""
            description = description[:_MAX_ERROR_DESCRIPTION]
            error_uri = _page_url(body.get("error_uri"))
            if error in _INTERACTION_ERRORS:
                raise InteractionRequiredError(
                    error, description, status_code=status, error_uri=error_uri
                )
            raise DelegationDeniedError(error, description, status_code=status, error_uri=error_uri)
        raise InvalidTokenResponseError(
            f"token endpoint answered HTTP {status} without an OAuth error response",
            status_code=status,
        )
    if not isinstance(body, dict):
        raise InvalidTokenResponseError(
            "token endpoint answered 200 with a body that is not a JSON object", status_code=status
        )
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        raise InvalidTokenResponseError("token response has no access_token", status_code=status)
    issued = body.get("issued_token_type")
    if (grant == TOKEN_EXCHANGE_GRANT or issued is not None) and issued != ACCESS_TOKEN_TYPE_URN:
        raise InvalidTokenResponseError(
            f"token response has issued_token_type {_short(issued)}, "
            f"expected {ACCESS_TOKEN_TYPE_URN}",
            status_code=status,
        )
    token_type = body.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        # RFC 8693 §2.2.1 allows "N_A" only for tokens that are not access tokens.
        raise InvalidTokenResponseError(
            f"token response has token_type {_short(token_type)}, expected 'Bearer'",
            status_code=status,
        )
    expires_in = body.get("expires_in")
    if expires_in is None:
        exp = _expiry_of(token)
        if exp is None:
            raise InvalidTokenResponseError(
                "token response has no expires_in and the token carries no exp",
                status_code=status,
            )
        expires_at = exp
    elif (
        isinstance(expires_in, (int, float))
        and not isinstance(expires_in, bool)
        and math.isfinite(expires_in)
        and expires_in > 0
    ):
        expires_at = now + expires_in
    else:
        raise InvalidTokenResponseError(
            f"token response has expires_in {_short(expires_in)}, "
            "expected a positive number of seconds",
            status_code=status,
        )
    granted = body.get("scope")
    granted_scopes = tuple(granted.split()) if isinstance(granted, str) else scopes
    return ExchangedToken(
        access_token=token,
        expires_at=expires_at,
        scopes=granted_scopes,
        resource=resource,
        issued_token_type=ACCESS_TOKEN_TYPE_URN,
        expires_in=max(0, round(expires_at - now)),
    )


def _page_url(value: Any) -> str | None:
    """An RFC 6749 §5.2 ``error_uri`` worth showing a user: an absolute http(s) URL of
    printable ASCII, at most 2048 characters; anything else is dropped."""
    if not isinstance(value, str) or len(value) > 2048 or not value.isascii():
        return None
    if not value.isprintable() or " " in value or not _is_http_url(value):
        return None
    return value


def _claim_of(token: str, name: str) -> Any:
    """A claim of a JWT, read without verification (for correlation only), or ``None``."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = loads_bounded(raw)
    except (binascii.Error, ValueError):  # JsonLimitError is a ValueError
        return None
    return claims.get(name) if isinstance(claims, dict) else None


def _expiry_of(token: str) -> float | None:
    """The ``exp`` of a JWT, read without verification (the caller verified it)."""
    exp = _claim_of(token, "exp")
    if isinstance(exp, (int, float)) and not isinstance(exp, bool) and math.isfinite(exp):
        return float(exp)
    return None


def _normalize_scopes(scopes: Sequence[str] | None) -> tuple[str, ...]:
    if scopes is None:
        return ()
    if isinstance(scopes, str):
        scopes = scopes.split()
    for scope in scopes:
        if not scope or any(c in scope for c in ' "\\') or not scope.isprintable():
            raise ConfigurationError(f"invalid scope {scope!r} (RFC 6749 §3.3)", setting="scopes")
    return tuple(sorted(set(scopes)))


def _check_resource(resource: str) -> None:
    parts = urlsplit(resource)
    if not parts.scheme or not parts.netloc or parts.fragment or "#" in resource:
        raise ConfigurationError(
            f"resource {resource!r} must be an absolute URL without fragment (RFC 8707 §2)",
            setting="resource",
        )


def _short(value: Any) -> str:
    """A server-supplied value for a message, bounded in length."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
