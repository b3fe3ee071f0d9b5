"""Where the push notifier's own HTTP client connects: to an address it has just checked,
never to whatever the system's resolver answers when the connection is made (DNS
rebinding, ``keycard_agents._runtime._push``).

A real HTTP (and HTTPS) server listens on 127.0.0.1. The notifier's resolver is the test's: it can
say that a name the system cannot resolve is 127.0.0.1, or that ``localhost`` is
somewhere else. Deliveries go through the notifier's public API.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import SocketStream
from anyio.streams.tls import TLSListener
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from keycard_agents._a2a.types import (
    StreamResponse,
    TaskPushNotificationConfig,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from keycard_agents.runtime import PushNotifier

pytestmark = pytest.mark.anyio


@dataclass
class Hook:
    """An HTTP/1.1 server that answers 200 to every request and keeps what it was sent."""

    port: int = 0
    requests: list[bytes] = field(default_factory=list)
    arrived: anyio.Event = field(default_factory=anyio.Event)

    async def serve(self, stream: SocketStream) -> None:
        async with stream:
            data = b""
            with anyio.move_on_after(10):
                while b"\r\n\r\n" not in data:
                    data += await stream.receive()
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(body) < length:
                    body += await stream.receive()
                self.requests.append(head + b"\r\n\r\n" + body)
                await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                self.arrived.set()


@asynccontextmanager
async def hook_server() -> AsyncIterator[Hook]:
    hook = Hook()
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    hook.port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - not Django
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, hook.serve)
        yield hook
        group.cancel_scope.cancel()


def _event(task_id: str) -> StreamResponse:
    return StreamResponse(
        status_update=TaskStatusUpdateEvent(
            task_id=task_id, context_id="ctx", status=TaskStatus(state=TaskState.COMPLETED)
        )
    )


async def _deliver(notifier: PushNotifier, url: str) -> None:
    """Register ``url`` for a task, deliver one event to it, and wait until it is done."""
    config = await notifier.create("t1", "alice", TaskPushNotificationConfig(task_id="t1", url=url))
    assert config.id
    async with anyio.create_task_group() as group:
        notifier.start(group)
        notifier.notify("t1", _event("t1"))
        notifier.finish("t1")
        await notifier.aclose(grace=20)


async def test_the_connection_goes_to_the_address_that_was_checked() -> None:
    # `webhook.invalid` resolves nowhere (RFC 6761), except through the notifier's
    # resolver: a delivery that arrives went to the address the notifier checked.
    looked_up: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        looked_up.append(host)
        return ["127.0.0.1"] if host == "webhook.invalid" else []

    async with hook_server() as hook:
        notifier = PushNotifier(allow_loopback=True, resolve=resolve, attempts=1, timeout=10)
        await _deliver(notifier, f"http://webhook.invalid:{hook.port}/cb")
    assert len(hook.requests) == 1
    request = hook.requests[0]
    assert request.startswith(b"POST /cb HTTP/1.1\r\n")
    assert f"host: webhook.invalid:{hook.port}\r\n".encode() in request.lower()
    assert b'"TASK_STATE_COMPLETED"' in request
    # once when registered, once for the one connection of the delivery
    assert looked_up == ["webhook.invalid", "webhook.invalid"]


async def test_what_the_system_resolver_says_at_delivery_is_never_used(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The resolver says `localhost` is 10.255.255.1 (allowed here: private networks are),
    # while the system's resolver would say 127.0.0.1, which this notifier must not call.
    # A client that resolved the name again itself would reach the loopback server.
    async def resolve(host: str, port: int) -> list[str]:
        return ["10.255.255.1"]

    caplog.set_level(logging.WARNING, logger="keycard_agents.runtime.push")
    async with hook_server() as hook:
        notifier = PushNotifier(allow_private_networks=True, resolve=resolve, attempts=1, timeout=1)
        await _deliver(notifier, f"http://localhost:{hook.port}/cb")
        with anyio.move_on_after(0.5):
            await hook.arrived.wait()
    assert hook.requests == []
    assert any("push notification of task t1" in r.getMessage() for r in caplog.records)


async def test_a_host_that_turns_private_after_registration_is_not_called(
    caplog: pytest.LogCaptureFixture,
) -> None:
    answers = iter([["93.184.216.34"]])  # registration: public; every later look-up: loopback

    async def resolve(host: str, port: int) -> list[str]:
        return next(answers, ["127.0.0.1"])

    caplog.set_level(logging.WARNING, logger="keycard_agents.runtime.push")
    async with hook_server() as hook:
        notifier = PushNotifier(resolve=resolve, attempts=1, timeout=5)
        await _deliver(notifier, f"http://rebinding.invalid:{hook.port}/cb")
    assert hook.requests == []
    messages = [r.getMessage() for r in caplog.records]
    assert any("failed (UnsafeWebhookError)" in m for m in messages), messages


def _tls_pair(name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for ``name`` from a new CA, and a client
    context that trusts only that CA."""
    now = datetime.now(timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as folder:
        cert_file, key_file = Path(folder, "cert.pem"), Path(folder, "key.pem")
        cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return server, client


@asynccontextmanager
async def tls_hook_server(context: ssl.SSLContext) -> AsyncIterator[Hook]:
    hook = Hook()
    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    hook.port = tcp.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - not Django
    listener = TLSListener(tcp, context, standard_compatible=False)

    async def serve(stream: Any) -> None:
        with contextlib.suppress(anyio.BrokenResourceError, ssl.SSLError, OSError):
            await hook.serve(stream)

    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, serve)
        yield hook
        group.cancel_scope.cancel()


@pytest.mark.parametrize("certified", ["webhook.invalid", "other.invalid"])
async def test_https_checks_the_certificate_for_the_host_name(
    certified: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The connection is made to 127.0.0.1, the certificate names the host: it verifies
    # only when it is the URL's host name (TLS speaks to the name, not the address).
    server, client = _tls_pair(certified)
    monkeypatch.setattr(httpx, "create_ssl_context", lambda **_: client)

    async def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    caplog.set_level(logging.WARNING, logger="keycard_agents.runtime.push")
    async with tls_hook_server(server) as hook:
        notifier = PushNotifier(allow_loopback=True, resolve=resolve, attempts=1, timeout=10)
        await _deliver(notifier, f"https://webhook.invalid:{hook.port}/cb")
    if certified == "webhook.invalid":
        assert len(hook.requests) == 1
        assert hook.requests[0].startswith(b"POST /cb HTTP/1.1\r\n")
    else:
        assert hook.requests == []
        messages = [r.getMessage() for r in caplog.records]
        assert any("failed (ConnectError)" in m for m in messages), messages
