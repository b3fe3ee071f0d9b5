"""Connecting to Redis (a single server or a Redis Cluster) with coredis, on anyio.

One setting selects Redis everywhere: a URL (``KEYCARD_REDIS_URL``, the ``[redis]``
section of the token service's TOML, or ``RedisSettings(url=...)``). ``redis://``,
``rediss://`` and ``unix://`` reach one server; ``redis+cluster://`` and
``rediss+cluster://`` reach a Redis Cluster through any of its nodes.

Key layout: every key starts with the settings' ``prefix``; keys that one script must
touch together share a hash tag (``{...}``), so every script runs on one Cluster slot.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import coredis
import coredis.exceptions
from coredis.connection import TCPLocation

from keycard_agents._errors import ConfigurationError, StoreUnavailableError
from keycard_agents._logs import get_logger

if sys.version_info >= (3, 11):  # pragma: no cover - depends on the interpreter
    from builtins import BaseExceptionGroup
else:  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = [
    "REDIS_URL_ENV",
    "RedisConnection",
    "RedisSettings",
    "open_redis",
    "redis_errors",
    "settings_from_env",
]

logger = get_logger("keycard_agents.redis")

#: The environment variable naming the Redis every replica shares.
REDIS_URL_ENV = "KEYCARD_REDIS_URL"
_SCHEMES = {
    "redis": False,
    "rediss": False,
    "unix": False,
    "redis+cluster": True,
    "rediss+cluster": True,
}
#: Errors that mean "Redis is not there right now" (and so: fail closed, retry later).
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    coredis.exceptions.ConnectionError,
    coredis.exceptions.ClusterDownError,
    coredis.exceptions.ClusterRoutingError,
    coredis.exceptions.TryAgainError,
    coredis.exceptions.ReadOnlyError,
    coredis.exceptions.RedisClusterError,  # no node could be reached to learn the layout
    TimeoutError,
    OSError,
)


@dataclass(frozen=True)
class RedisSettings:
    """Where the shared Redis is and how keys are named.

    ``url`` is a ``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://`` or
    ``rediss+cluster://`` URL (a password in it is never logged). ``prefix`` starts every
    key (several deployments can share one Redis with different prefixes).
    ``timeout`` bounds connecting and each command, in seconds.
    """

    url: str
    prefix: str = "keycard"
    timeout: float = 5.0

    def __post_init__(self) -> None:
        scheme = urlsplit(self.url).scheme.lower()
        if scheme not in _SCHEMES:
            raise ConfigurationError(
                f"the Redis URL must start with one of {', '.join(s + '://' for s in _SCHEMES)}; "
                f"got {self.redacted_url!r}",
                setting=REDIS_URL_ENV,
            )
        if not self.prefix or any(c in self.prefix for c in "{} \t\r\n"):
            raise ConfigurationError(
                "the Redis key prefix must be non-empty, without braces or spaces",
                setting="redis.prefix",
            )
        if self.timeout <= 0:
            raise ConfigurationError("the Redis timeout must be positive", setting="redis.timeout")

    @property
    def cluster(self) -> bool:
        """Whether the URL names a Redis Cluster (``redis+cluster://``)."""
        return _SCHEMES.get(urlsplit(self.url).scheme.lower(), False)

    @property
    def redacted_url(self) -> str:
        """The URL without its password, for messages and logs."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        host = parts.hostname or ""
        user = parts.username or ""
        netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def client_url(self) -> str:
        """The URL coredis understands (``+cluster`` removed)."""
        parts = urlsplit(self.url)
        scheme = parts.scheme.lower().removesuffix("+cluster")
        return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))


def settings_from_env(environ: dict[str, str] | None = None) -> RedisSettings | None:
    """The settings named by ``KEYCARD_REDIS_URL`` (with ``KEYCARD_REDIS_PREFIX`` and
    ``KEYCARD_REDIS_TIMEOUT``), if set."""
    env = os.environ if environ is None else environ
    url = env.get(REDIS_URL_ENV, "").strip()
    if not url:
        return None
    timeout = env.get("KEYCARD_REDIS_TIMEOUT", "").strip()
    try:
        seconds = float(timeout) if timeout else 5.0
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ConfigurationError(
            "KEYCARD_REDIS_TIMEOUT must be a positive number of seconds",
            setting="KEYCARD_REDIS_TIMEOUT",
        )
    prefix = env.get("KEYCARD_REDIS_PREFIX", "").strip() or "keycard"
    return RedisSettings(url=url, prefix=prefix, timeout=seconds)


@contextmanager
def redis_errors(what: str, settings: RedisSettings) -> Iterator[None]:
    """Turn "Redis is not reachable" into :class:`StoreUnavailableError` (fail closed)."""
    try:
        yield
    except _UNAVAILABLE as exc:
        raise StoreUnavailableError(
            f"{what}: Redis at {settings.redacted_url} is unavailable "
            f"({type(exc).__name__}); the request failed closed, retry later"
        ) from exc


class RedisConnection:
    """An open connection pool to the shared Redis, with the key naming rules.

    ``client`` is the coredis client (``coredis.Redis`` or ``coredis.RedisCluster``).
    """

    def __init__(self, client: Any, settings: RedisSettings) -> None:
        self.client: Any = client
        self.settings = settings

    @property
    def prefix(self) -> str:
        return self.settings.prefix

    def key(self, kind: str, tag: str, *rest: str) -> str:
        """``prefix:kind:{tag}:rest...``: keys with the same ``tag`` share a Cluster slot."""
        safe = tag.replace("{", "%7B").replace("}", "%7D")
        return ":".join((self.prefix, kind, "{" + safe + "}", *rest))

    def errors(self, what: str) -> Any:
        """``with connection.errors("reading a task"): ...``: see :func:`redis_errors`."""
        return redis_errors(what, self.settings)

    def __repr__(self) -> str:
        kind = "cluster" if self.settings.cluster else "server"
        return f"RedisConnection({kind} {self.settings.redacted_url!r})"


def _client(settings: RedisSettings) -> Any:
    options: dict[str, Any] = {
        "stream_timeout": settings.timeout,
        "connect_timeout": settings.timeout,
    }
    if settings.cluster:
        parts = urlsplit(settings.url)
        location = TCPLocation(parts.hostname or "127.0.0.1", parts.port or 6379)
        return coredis.RedisCluster(
            startup_nodes=[location],
            username=parts.username,
            password=parts.password,
            ssl=parts.scheme.lower().startswith("rediss"),
            **options,
        )
    return coredis.Redis.from_url(settings.client_url(), **options)


@asynccontextmanager
async def open_redis(settings: RedisSettings) -> AsyncIterator[RedisConnection]:
    """Connect, check that Redis answers, yield the connection; close it on exit.

    Raises :class:`StoreUnavailableError` naming the URL (without its password) when
    Redis cannot be reached at start-up.
    """
    client = _client(settings)
    closing = False
    try:
        async with client:
            try:
                with anyio.fail_after(settings.timeout):
                    await client.ping()
            except _UNAVAILABLE as exc:
                raise _unreachable(settings, exc) from exc
            logger.info("connected to Redis at %s", settings.redacted_url)
            yield RedisConnection(client, settings)
            closing = True
    except BaseExceptionGroup as group:
        error = _lone(group, settings)
        if closing and isinstance(error, StoreUnavailableError):
            # A connection that broke while Redis was away, reported when the pool
            # closes: every request it failed has already failed closed.
            logger.warning("Redis connection errors while closing: %s", error)
            return
        raise error from None
    except _UNAVAILABLE as exc:  # the cluster client asks for the layout on entry
        if closing:
            logger.warning("Redis connection errors while closing: %s", type(exc).__name__)
            return
        raise _unreachable(settings, exc) from exc


def _unreachable(settings: RedisSettings, exc: BaseException) -> StoreUnavailableError:
    return StoreUnavailableError(
        f"cannot connect to Redis at {settings.redacted_url} ({type(exc).__name__}): "
        f"start it, or fix {REDIS_URL_ENV} / the [redis] url setting"
    )


def _lone(group: BaseExceptionGroup[BaseException], settings: RedisSettings) -> BaseException:
    """coredis runs its pool in a task group: re-raise a lone error as itself."""
    while len(group.exceptions) == 1 and isinstance(group.exceptions[0], BaseExceptionGroup):
        group = group.exceptions[0]
    if len(group.exceptions) != 1:
        return group
    inner = group.exceptions[0]
    # Only coredis' own errors mean "Redis is away"; a TimeoutError or OSError may be the
    # caller's own (a deadline in the body) and is re-raised as it is.
    if isinstance(inner, _UNAVAILABLE) and isinstance(inner, coredis.exceptions.RedisError):
        return _unreachable(settings, inner).with_traceback(inner.__traceback__)
    return inner
