"""The HTTP policy every outbound request of the OAuth layer follows.

One home for: which answers are worth another try (RFC 9110 §15.6 server errors,
RFC 6585 §4 ``429 Too Many Requests``, and transport failures), how long the server
asks us to wait (RFC 9110 §10.2.3 ``Retry-After``), how large a discovery document may
be, how long a document may be reused (RFC 9111 §5.2 ``Cache-Control`` and §5.1 ``Age``),
and how a transport failure is described in a message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

import httpx

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "DocumentTooLargeError",
    "describe_error",
    "freshness",
    "is_retryable_status",
    "read_document",
    "retry_after",
]

#: The largest metadata document, JWK Set, agent card or resource metadata we read.
#: None of the RFCs sets a limit; this bounds what a hostile server can make us hold.
MAX_DOCUMENT_BYTES = 1024 * 1024


class DocumentTooLargeError(Exception):
    """A document grew past :data:`MAX_DOCUMENT_BYTES` while it was being read."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"document is larger than {limit} bytes")
        self.limit = limit


def is_retryable_status(status: int) -> bool:
    """Whether an HTTP answer is worth another try.

    ``429 Too Many Requests`` (RFC 6585 §4) and every 5xx server error (RFC 9110 §15.6)
    are transient by definition; a 4xx other than 429 says the request itself is wrong,
    and no retry can fix it. Transport failures (no answer at all) are retried too: see
    the callers, which catch :class:`httpx.TransportError`.
    """
    return status == 429 or 500 <= status <= 599


def retry_after(
    response: httpx.Response, *, clock: Callable[[], float] = time.time
) -> float | None:
    """Seconds the server asked us to wait (RFC 9110 §10.2.3 ``Retry-After``).

    The value is either ``delay-seconds`` or an ``HTTP-date``; a date in the past means
    no wait. ``None`` when the header is absent or unreadable.
    """
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - clock())


async def read_document(response: httpx.Response, *, limit: int = MAX_DOCUMENT_BYTES) -> bytes:
    """The body of a streamed response, refused as soon as it passes ``limit`` bytes."""
    body = bytearray()
    chunks = response.aiter_bytes()
    try:
        async for chunk in chunks:
            body += chunk
            if len(body) > limit:
                raise DocumentTooLargeError(limit)
    finally:
        aclose = getattr(chunks, "aclose", None)  # an async generator: close it now
        if aclose is not None:
            await aclose()
    return bytes(body)


def freshness(response: httpx.Response) -> tuple[bool, float]:
    """(may store, seconds fresh) of a response (RFC 9111 §5.2 ``Cache-Control``: ``no-store``,
    ``no-cache``, ``max-age``; §5.1 ``Age`` is subtracted)."""
    directives: dict[str, str | None] = {}
    for item in response.headers.get("cache-control", "").split(","):
        name, _, value = item.strip().partition("=")
        if name:
            directives[name.lower()] = value.strip('"') or None
    if "no-store" in directives:
        return False, 0.0
    if "no-cache" in directives:
        return True, 0.0
    try:
        max_age = float(directives.get("max-age") or 0)
        age = float(response.headers.get("age", "0"))
    except ValueError:
        return True, 0.0
    return True, max(0.0, max_age - max(0.0, age))


def describe_error(exc: Exception) -> str:
    """``ConnectError: details`` for a message (library errors carry no secrets here)."""
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
