"""What a skill can do with a declared dependency: the handle types of ``ctx.dependency``.

The delegation layer above builds the handles (``keycard_agents.delegation``); these
Protocols are what the agent model promises a skill, so ``ctx.dependency(CALENDAR)`` of an
:class:`~keycard_agents.AgentDependency` is typed as :class:`AgentCalls` and of an
:class:`~keycard_agents.HttpDependency` as :class:`HttpApiCalls`. Every call carries a
token exchanged for the target (RFC 8693 §2.1, ``resource`` per RFC 8707).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Protocol

import httpx

from keycard_agents._a2a.types import AgentCard, Message, StreamResponse, Task
from keycard_agents._oauth._exchange import ExchangedToken

__all__ = ["AgentCalls", "HttpApiCalls"]


class AgentCalls(Protocol):
    """Calls to another A2A agent on the caller's behalf (A2A 1.0 operations)."""

    @property
    def name(self) -> str: ...

    @property
    def url(self) -> str: ...

    async def call(self, skill: str, /, **arguments: Any) -> Any:
        """Call ``skill`` with typed arguments; its result."""
        ...

    async def send(self, message: Message | str, **options: Any) -> Task | Message: ...

    def stream(
        self, message: Message | str, **options: Any
    ) -> AsyncGenerator[StreamResponse, None]: ...

    def stream_call(
        self, skill: str, /, **arguments: Any
    ) -> AsyncGenerator[StreamResponse, None]: ...

    async def get_task(self, task_id: str, *, history_length: int | None = None) -> Task: ...

    async def cancel_task(self, task_id: str) -> Task: ...

    async def card(self) -> AgentCard: ...

    async def token(self) -> ExchangedToken:
        """The delegated token for the agent (exchanged or cached)."""
        ...


class HttpApiCalls(Protocol):
    """Requests to an HTTP API with tokens exchanged for its resource URL."""

    @property
    def resource(self) -> str: ...

    @property
    def auth(self) -> httpx.Auth:
        """The same tokens for your own ``httpx.AsyncClient`` requests."""
        ...

    def url(self, path: str) -> str: ...

    async def token(self) -> ExchangedToken: ...

    async def request(self, method: str, url: str = "", **kwargs: Any) -> httpx.Response: ...

    async def get(self, url: str = "", **kwargs: Any) -> httpx.Response: ...

    async def post(self, url: str = "", **kwargs: Any) -> httpx.Response: ...

    async def put(self, url: str = "", **kwargs: Any) -> httpx.Response: ...

    async def patch(self, url: str = "", **kwargs: Any) -> httpx.Response: ...

    async def delete(self, url: str = "", **kwargs: Any) -> httpx.Response: ...
