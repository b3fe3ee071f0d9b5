"""Discovery documents of an agent: its Agent Card and its protected resource metadata.

Implements the caching rules of RFC 9111 §5.2 (``Cache-Control``: ``max-age``, ``no-cache``,
``no-store``; ``Age``) with RFC 9110 §13.1.2 ``ETag`` / ``If-None-Match`` revalidation for
the A2A 1.0 §8.2 Agent Card and the RFC 9728 §2 metadata, and the RFC 9728 §3.3 check that
metadata describes the resource it was fetched for.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import httpx

from keycard_agents._a2a.errors import InvalidAgentResponseError
from keycard_agents._errors import TransportError
from keycard_agents._oauth._http import (
    DocumentTooLargeError,
    describe_error,
    freshness,
    read_document,
)
from keycard_agents._oauth._urls import same_resource
from keycard_agents._observe._tracing import fetch_span

__all__ = [
    "CardCache",
    "CardCacheStats",
    "DocumentMissingError",
    "ResourceMetadata",
    "parse_metadata",
]


_T = TypeVar("_T")
#: Derived values kept per document (a few: a verified signature per key set, an endpoint).
_MAX_DERIVED = 16


@dataclass
class _Document:
    data: Any
    etag: str | None
    fresh_until: float
    derived: dict[Hashable, Any] = field(default_factory=dict)


@dataclass
class CardCacheStats:
    """Counters: fetches (HTTP requests), revalidated (304 answers), hits (no request)."""

    fetches: int = 0
    revalidated: int = 0
    hits: int = 0


class CardCache:
    """Agent cards and resource metadata by URL, fresh for their ``max-age``.

    A stale document with an ``ETag`` is revalidated with ``If-None-Match``; a 304 answer
    keeps it. ``no-store`` documents are never kept. Share one cache between clients to
    share what they learned; it is safe to use from concurrent tasks.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time, max_entries: int = 1024) -> None:
        self._clock = clock
        self._max_entries = max_entries
        self._documents: dict[str, _Document] = {}
        self._locks: dict[str, anyio.Lock] = {}
        self.stats = CardCacheStats()

    def clear(self) -> None:
        self._documents.clear()

    def derived(self, url: str, data: Any, key: Hashable, compute: Callable[[], _T]) -> _T:
        """What ``compute`` makes of ``data``, the document :meth:`get_json` returned for
        ``url``: worked out once while the cache keeps that very document (a 304 keeps it;
        new content or its eviction starts again), and each time for a document the cache
        does not keep (``no-store``). ``key`` names what is derived, with every input
        besides the document (a key set, a policy). A ``compute`` that raises is not
        remembered."""
        cached = self._documents.get(url)
        if cached is None or cached.data is not data:
            return compute()
        derived = cached.derived
        if key in derived:
            value: _T = derived[key]
            return value
        value = compute()
        if len(derived) >= _MAX_DERIVED:
            derived.clear()
        derived[key] = value
        return value

    async def get_json(self, http: httpx.AsyncClient, url: str, *, request_timeout: float) -> Any:
        """The JSON document at ``url``, from the cache when fresh."""
        lock = self._locks.setdefault(url, anyio.Lock())
        async with lock:
            cached = self._documents.get(url)
            now = self._clock()
            if cached is not None and now < cached.fresh_until:
                self.stats.hits += 1
                return cached.data
            headers = {"Accept": "application/json"}
            if cached is not None and cached.etag:
                headers["If-None-Match"] = cached.etag
            self.stats.fetches += 1
            try:
                with fetch_span("document", url) as trace_headers:
                    headers.update(trace_headers)
                    async with http.stream(
                        "GET", url, headers=headers, timeout=request_timeout
                    ) as response:
                        body = await read_document(response) if response.status_code == 200 else b""
            except httpx.HTTPError as exc:
                raise TransportError(f"GET {url} failed: {describe_error(exc)}") from exc
            except DocumentTooLargeError as exc:
                raise InvalidAgentResponseError(f"{url}: {exc}") from exc
            store, fresh = freshness(response)
            if response.status_code == 304 and cached is not None:
                self.stats.revalidated += 1
                cached.fresh_until = now + fresh
                cached.etag = response.headers.get("etag", cached.etag)
                return cached.data
            if response.status_code != 200:
                raise DocumentMissingError(url, response.status_code)
            try:
                data = json.loads(body)
            except (ValueError, RecursionError) as exc:
                raise InvalidAgentResponseError(f"{url} did not answer JSON") from exc
            if store:
                if len(self._documents) >= self._max_entries:
                    self._documents.pop(next(iter(self._documents)))
                etag = response.headers.get("etag")
                self._documents[url] = _Document(data, etag, now + fresh)
            else:
                self._documents.pop(url, None)
            return data


class DocumentMissingError(InvalidAgentResponseError):
    def __init__(self, url: str, status: int) -> None:
        super().__init__(f"GET {url} answered HTTP {status}")
        self.status = status


@dataclass(frozen=True)
class ResourceMetadata:
    """An agent's RFC 9728 protected resource metadata (the fields we act on)."""

    resource: str
    authorization_servers: tuple[str, ...]
    scopes_supported: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


def parse_metadata(data: Any, *, url: str, expected: str) -> ResourceMetadata:
    if not isinstance(data, dict):
        raise InvalidAgentResponseError(f"resource metadata at {url} is not a JSON object")
    resource = data.get("resource")
    servers = data.get("authorization_servers", [])
    scopes = data.get("scopes_supported", [])
    if not isinstance(resource, str) or not same_resource(resource, expected):
        # RFC 9728 §3.3: metadata for another resource must not be used.
        raise InvalidAgentResponseError(
            f"resource metadata at {url} is for {str(resource)[:100]!r}, not {expected!r}"
        )
    if not isinstance(servers, list) or not all(isinstance(s, str) for s in servers):
        raise InvalidAgentResponseError(
            f"resource metadata at {url}: authorization_servers must be a list of URLs"
        )
    if not isinstance(scopes, list):
        scopes = []
    return ResourceMetadata(
        resource=resource,
        authorization_servers=tuple(servers),
        scopes_supported=tuple(s for s in scopes if isinstance(s, str)),
        raw=data,
    )
