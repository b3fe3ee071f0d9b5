"""A2A 0.3 clients on the JSON-RPC endpoint.

Implements A2A 1.0 §3.2.6 for requests that carry no ``A2A-Version`` (or ``0.3``) and name
a 0.3 method (``message/send``, ``tasks/get``, ...; A2A 0.3 §7): the request is reshaped
into its 1.0 method and params, runs through the same 1.0 code path as any other request
(authentication, ownership, limits, extensions), and the result, stream events and errors
are reshaped back into 0.3 JSON (:mod:`keycard_agents._a2a.v03`). A 0.3 method name sent
with ``A2A-Version: 1.0`` is not a 1.0 method and is answered -32601 as before.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from starlette.requests import Request

from keycard_agents._a2a.v03 import (
    METHODS_FROM_V03,
    error_to_v03,
    event_to_v03,
    params_from_v03,
    result_to_v03,
)
from keycard_agents._server._protocol import A2A_VERSION_HEADER

__all__ = ["V03Call", "v03_call"]


class V03Call:
    """One 0.3 request: its 1.0 method and params, and how to answer in 0.3."""

    def __init__(self, method_v03: str, params: dict[str, Any] | None) -> None:
        self.method_v03 = method_v03
        self.method = METHODS_FROM_V03[method_v03]
        translated = params_from_v03(method_v03, params or {})
        self.params: dict[str, Any] | None = translated if isinstance(translated, dict) else None

    def result(self, result: Any) -> Any:
        return result_to_v03(self.method_v03, result)

    async def events(
        self, events: AsyncGenerator[dict[str, Any], None]
    ) -> AsyncGenerator[dict[str, Any], None]:
        try:
            async for event in events:
                translated = event_to_v03(event)
                yield translated
                if translated.get("final"):
                    # A 0.3 stream ends at its final event, INPUT_REQUIRED included (a 1.0
                    # stream stays open through it); the task itself goes on.
                    break
        finally:
            await events.aclose()

    @staticmethod
    def error(error: dict[str, Any]) -> dict[str, Any]:
        return error_to_v03(error)


def v03_call(request: Request, method: str, params: dict[str, Any] | None) -> V03Call | None:
    """The 0.3 call this request is, or None for a 1.0 request.

    A 0.3 method name with a version other than 0.3 is left to the 1.0 path (which
    answers it -32601, or -32009 for a version it does not speak).
    """
    if method not in METHODS_FROM_V03:
        return None
    version = request.headers.get(A2A_VERSION_HEADER) or request.query_params.get(
        A2A_VERSION_HEADER
    )
    if version and version.strip() not in ("0.3", "0.3.0"):
        return None
    return V03Call(method, params)
