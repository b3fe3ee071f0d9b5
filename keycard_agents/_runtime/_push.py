"""Push notifications (A2A 1.0 §3.1.7-§3.1.10 the ``*TaskPushNotificationConfig`` methods,
§4.3 ``TaskPushNotificationConfig``, §9.5 / §11 delivery as a POST of a StreamResponse).

A client registers a webhook for one of its tasks (``CreateTaskPushNotificationConfig``, or
``configuration.taskPushNotificationConfig`` of ``SendMessage``). Every later status and
artifact event of the task is POSTed to it as StreamResponse JSON, authenticated as the
config names: ``X-A2A-Notification-Token: <token>`` when it has a token, and
``Authorization: <scheme> <credentials>`` when it names an authentication scheme with
credentials.

Safety:

- SSRF (OWASP): the URL must be http(s); every address its host resolves to must be
  public: loopback, private (RFC 1918, RFC 4193), link-local, shared (RFC 6598),
  multicast and reserved ranges are refused, at registration and again for each
  connection a delivery opens, unless ``allow_loopback`` / ``allow_private_networks``
  say so. The notifier's own HTTP client connects to an address it has just checked
  (its network backend resolves the host once, checks every address, then connects to
  one of them; TLS still verifies the certificate for the host name), so a host that
  answers a public address to the check and a private one to the connection (DNS
  rebinding) gets nowhere. A client passed as ``http`` resolves on its own: with it,
  the URL is checked again before each delivery. Redirects are not followed.
- Bounds: ``max_configs_per_task`` configs per task, ``max_tasks`` tasks with configs; one
  bounded queue (``queue_size`` events) per task: when a webhook is slow and the queue is
  full, new events for it are dropped (logged) rather than slowing the skill down.
- Retries: a delivery that fails with a transport error, a 5xx or a 429 is retried with
  exponential backoff (tenacity), ``attempts`` times in all; a 4xx is not retried.

Configs belong to the task's owner: only a caller who may see the task may create, read,
list or delete them (the runtime checks that), and they live in this process's memory.
"""

from __future__ import annotations

import ipaddress
import socket
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpcore
import httpx
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from keycard_agents._a2a.errors import InvalidParamsError, TaskNotFoundError
from keycard_agents._a2a.types import StreamResponse, TaskPushNotificationConfig, dump
from keycard_agents._errors import ConfigurationError
from keycard_agents._logs import get_logger

__all__ = ["NOTIFICATION_TOKEN_HEADER", "PushNotifier", "UnsafeWebhookError"]

logger = get_logger("keycard_agents.runtime.push")

NOTIFICATION_TOKEN_HEADER = "X-A2A-Notification-Token"  # noqa: S105 - a header name
_MAX_URL = 2048
_MAX_TOKEN = 4096


class UnsafeWebhookError(InvalidParamsError):
    """A push notification URL this agent will not call (SSRF protection)."""


class _Retryable(Exception):
    pass


Resolver = Callable[[str, int], Any]


async def _resolve(host: str, port: int) -> list[str]:
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class _CheckedConnect(httpcore.AsyncNetworkBackend):
    """The network backend of the notifier's own HTTP client: each connection resolves the
    webhook's host once, checks every address (:meth:`PushNotifier.checked_addresses`),
    and connects to the first checked one that answers. httpcore then speaks TLS over
    that connection with the URL's host name (SNI and certificate check)."""

    def __init__(self, notifier: PushNotifier) -> None:
        self._notifier = notifier
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):  # the connect timeout covers the look-up too
                addresses = await self._notifier.checked_addresses(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host[:100]!r} took too long") from None
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # checked_addresses answers at least one address
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("push notifications go over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _checked_client(notifier: PushNotifier, timeout: float) -> httpx.AsyncClient:
    """An HTTP client that connects only to addresses ``notifier`` has just checked."""
    context = httpx.create_ssl_context(trust_env=False)  # CA certificates, loaded once
    transport = httpx.AsyncHTTPTransport(verify=context, trust_env=False)
    # httpx's transport takes no network backend, the httpcore pool it wraps does: the
    # same pool, with the checked connect (and without environment proxies, which would
    # resolve the host themselves).
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=context,
        max_connections=100,
        max_keepalive_connections=20,
        keepalive_expiry=5.0,
        network_backend=_CheckedConnect(notifier),
    )
    return httpx.AsyncClient(
        transport=transport, timeout=timeout, follow_redirects=False, trust_env=False
    )


@dataclass
class _TaskPush:
    owner: str | None
    configs: dict[str, TaskPushNotificationConfig] = field(default_factory=dict)
    send: MemoryObjectSendStream[StreamResponse] | None = None
    receive: MemoryObjectReceiveStream[StreamResponse] | None = None
    dropped: int = 0
    finished: bool = False
    drained: anyio.Event | None = None


class PushNotifier:
    """Holds push notification configs and delivers task events to their webhooks.

    ``allow_loopback`` lets webhooks on 127.0.0.0/8 and ::1 through (tests, local
    development); ``allow_private_networks`` the private, link-local and shared ranges
    (webhooks inside your own network). ``http`` is the client deliveries use (default:
    one of its own, ``timeout`` seconds, no redirects, connecting only to addresses it has
    just checked). ``attempts``, ``backoff`` (first wait, seconds) and ``max_backoff``
    shape the retries.
    """

    def __init__(
        self,
        *,
        allow_loopback: bool = False,
        allow_private_networks: bool = False,
        http: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
        attempts: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        queue_size: int = 64,
        max_configs_per_task: int = 10,
        max_tasks: int = 10_000,
        resolve: Callable[[str, int], Any] = _resolve,
    ) -> None:
        if attempts < 1 or queue_size < 1 or max_configs_per_task < 1 or max_tasks < 1:
            raise ConfigurationError(
                "attempts, queue_size, max_configs_per_task and max_tasks must be at least 1",
                setting="push",
            )
        self.allow_loopback = allow_loopback
        self.allow_private_networks = allow_private_networks
        self._http = http
        self._owns_http = http is None
        self._timeout = timeout
        self._attempts = attempts
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._queue_size = queue_size
        self._max_configs = max_configs_per_task
        self._max_tasks = max_tasks
        self._resolve = resolve
        self._tasks: dict[str, _TaskPush] = {}
        self._group: TaskGroup | None = None

    # -- lifetime ----------------------------------------------------------------------

    def start(self, group: TaskGroup) -> None:
        """Deliver in ``group`` (the runtime's task group) from now on."""
        self._group = group

    async def aclose(self, *, grace: float = 5.0) -> None:
        """Deliver what is queued (for up to ``grace`` seconds), then stop."""
        for entry in self._tasks.values():
            if entry.send is not None:
                entry.send.close()
        with anyio.move_on_after(grace, shield=True):
            for entry in list(self._tasks.values()):
                if entry.drained is not None:
                    await entry.drained.wait()
        self._group = None
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    # -- the URL rule --------------------------------------------------------------------

    def _address_allowed(self, address: str) -> bool:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_loopback:
            return self.allow_loopback
        if ip.is_multicast or ip.is_unspecified or ip.is_reserved:
            return False
        shared = ip.version == 4 and ip in ipaddress.ip_network("100.64.0.0/10")
        if ip.is_private or ip.is_link_local or shared or not ip.is_global:
            return self.allow_private_networks
        return True

    async def check_url(self, url: str) -> None:
        """Refuse a webhook URL this agent must not call (UnsafeWebhookError)."""
        host, port = self._host_and_port(url)
        await self.checked_addresses(host, port)

    def _host_and_port(self, url: str) -> tuple[str, int]:
        if len(url) > _MAX_URL:
            raise UnsafeWebhookError(f"the push notification url is over {_MAX_URL} characters")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UnsafeWebhookError("the push notification url must be an absolute http(s) URL")
        if parts.username or parts.password:
            raise UnsafeWebhookError("the push notification url must not carry credentials")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise UnsafeWebhookError("the push notification url has an invalid port") from None
        return parts.hostname, port

    async def checked_addresses(self, host: str, port: int) -> list[str]:
        """The addresses ``host`` resolves to now, when every one of them may be called
        (else UnsafeWebhookError)."""
        try:
            addresses = await self._resolve(host, port)
        except OSError:
            raise UnsafeWebhookError("the push notification url's host does not resolve") from None
        if not addresses:
            raise UnsafeWebhookError("the push notification url's host does not resolve")
        for address in addresses:
            if not self._address_allowed(address):
                raise UnsafeWebhookError(
                    "the push notification url resolves to a loopback, private or reserved "
                    "address, which this agent does not call (SSRF protection)"
                )
        return list(addresses)

    # -- configs -----------------------------------------------------------------------

    def has_configs(self, task_id: str) -> bool:
        entry = self._tasks.get(task_id)
        return entry is not None and bool(entry.configs)

    async def create(
        self, task_id: str, owner: str | None, config: TaskPushNotificationConfig
    ) -> TaskPushNotificationConfig:
        """Check and store ``config`` for the task (its id is generated when absent)."""
        await self.validate(config)
        return self.register(task_id, owner, config)

    async def validate(self, config: TaskPushNotificationConfig) -> None:
        if config.token is not None and len(config.token) > _MAX_TOKEN:
            raise InvalidParamsError(f"the push notification token is over {_MAX_TOKEN} bytes")
        await self.check_url(config.url)

    def register(
        self, task_id: str, owner: str | None, config: TaskPushNotificationConfig
    ) -> TaskPushNotificationConfig:
        """Store a validated ``config`` (synchronously: no event can slip past)."""
        entry = self._tasks.get(task_id)
        if entry is None:
            if len(self._tasks) >= self._max_tasks:
                self._forget_finished()
            if len(self._tasks) >= self._max_tasks:
                raise InvalidParamsError("too many tasks have push notification configs")
            entry = self._tasks[task_id] = _TaskPush(owner=owner)
        config_id = config.id or str(uuid.uuid4())
        if config_id not in entry.configs and len(entry.configs) >= self._max_configs:
            raise InvalidParamsError(
                f"task {task_id} already has {self._max_configs} push notification configs"
            )
        stored = config.model_copy(update={"id": config_id, "task_id": task_id})
        entry.configs[config_id] = stored
        return stored

    def get(self, task_id: str, config_id: str) -> TaskPushNotificationConfig:
        entry = self._tasks.get(task_id)
        config = entry.configs.get(config_id) if entry is not None else None
        if config is None:
            raise TaskNotFoundError(
                f"task {task_id} has no push notification config {config_id[:64]!r}"
            )
        return config

    def list(self, task_id: str) -> list[TaskPushNotificationConfig]:
        entry = self._tasks.get(task_id)
        return [] if entry is None else list(entry.configs.values())

    def delete(self, task_id: str, config_id: str) -> None:
        self.get(task_id, config_id)
        del self._tasks[task_id].configs[config_id]

    def finish(self, task_id: str) -> None:
        """The task is terminal: deliver what is queued, then stop (configs stay readable
        until the entry is evicted to make room)."""
        entry = self._tasks.get(task_id)
        if entry is not None:
            entry.finished = True
            if entry.send is not None:
                entry.send.close()

    def _forget_finished(self) -> None:
        for task_id in [t for t, e in self._tasks.items() if e.finished and e.send is None]:
            del self._tasks[task_id]

    # -- delivery ----------------------------------------------------------------------

    def notify(self, task_id: str, event: StreamResponse) -> None:
        """Queue ``event`` for the task's webhooks (never blocks; drops when full)."""
        entry = self._tasks.get(task_id)
        if entry is None or not entry.configs or entry.finished or self._group is None:
            return
        if entry.send is None:
            entry.send, entry.receive = anyio.create_memory_object_stream[StreamResponse](
                self._queue_size
            )
            entry.drained = anyio.Event()
            self._group.start_soon(self._deliver_all, task_id, entry)
        self._enqueue(task_id, entry, event)

    def _enqueue(self, task_id: str, entry: _TaskPush, event: StreamResponse) -> None:
        assert entry.send is not None
        try:
            entry.send.send_nowait(event)
        except anyio.WouldBlock:
            entry.dropped += 1
            logger.warning(
                "push notifications of task %s are behind: dropped an event (%d so far)",
                task_id,
                entry.dropped,
            )
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    async def _deliver_all(self, task_id: str, entry: _TaskPush) -> None:
        assert entry.receive is not None
        async with entry.receive:
            async for event in entry.receive:
                for config in list(entry.configs.values()):
                    await self._deliver(task_id, config, event)
        entry.send = entry.receive = None
        if entry.drained is not None:
            entry.drained.set()
            entry.drained = None

    async def _deliver(
        self, task_id: str, config: TaskPushNotificationConfig, event: StreamResponse
    ) -> None:
        headers = {"Content-Type": "application/a2a+json"}
        if config.token:
            headers[NOTIFICATION_TOKEN_HEADER] = config.token
        auth = config.authentication
        if auth is not None and auth.scheme and auth.credentials:
            headers["Authorization"] = f"{auth.scheme} {auth.credentials}"
        body = dump(event)
        try:
            if not self._owns_http:  # a client of the caller's resolves on its own
                await self.check_url(config.url)  # again: the host may resolve elsewhere now
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self._attempts),
                wait=wait_exponential(multiplier=self._backoff, max=self._max_backoff),
                retry=retry_if_exception(lambda e: isinstance(e, _Retryable | httpx.HTTPError)),
                sleep=anyio.sleep,
                reraise=True,
            ):
                with attempt:
                    await self._post(config.url, body, headers)
        except Exception as exc:
            logger.warning(
                "push notification of task %s to config %s failed (%s)",
                task_id,
                config.id,
                type(exc).__name__,
            )

    async def _post(self, url: str, body: Any, headers: dict[str, str]) -> None:
        if self._http is None:  # made on the first delivery: most agents never deliver
            self._http = _checked_client(self, self._timeout)
        response = await self._http.post(url, json=body, headers=headers, timeout=self._timeout)
        if response.status_code == 429 or response.status_code >= 500:
            raise _Retryable(f"HTTP {response.status_code}")
        if response.status_code >= 300:
            raise RuntimeError(f"HTTP {response.status_code}")
