"""Activating A2A extensions on a request (A2A 1.0 §3.3.4, the ``A2A-Extensions`` parameter).

A client lists the extension URIs it wants in the ``A2A-Extensions`` service parameter
(a header, or a query parameter of the same name), comma separated. The server activates
those the agent card declares, refuses the request with ExtensionSupportRequiredError
(-32008) when it leaves out an extension the card marks ``required``, and echoes the
activated URIs in the response's ``A2A-Extensions`` header. Skills see them as
``ctx.extensions``.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request

from keycard_agents._a2a.errors import ExtensionSupportRequiredError, InvalidRequestError
from keycard_agents._a2a.types import AgentExtension

__all__ = ["EXTENSIONS_HEADER", "ExtensionNegotiation"]

EXTENSIONS_HEADER = "A2A-Extensions"
#: Bounds on what a request may list: more is refused, not truncated.
MAX_EXTENSIONS_HEADER = 8 * 1024
MAX_REQUESTED_EXTENSIONS = 64


class ExtensionNegotiation:
    """Which of an agent card's extensions a request activates."""

    def __init__(self, extensions: Sequence[AgentExtension]) -> None:
        self.supported = frozenset(e.uri for e in extensions)
        self.required = tuple(e.uri for e in extensions if e.required)

    def activate(self, request: Request) -> frozenset[str]:
        """The URIs the request activates; ExtensionSupportRequiredError if one is missing."""
        raw = request.headers.get(EXTENSIONS_HEADER)
        if raw is None:
            raw = request.query_params.get(EXTENSIONS_HEADER, "")
        if len(raw) > MAX_EXTENSIONS_HEADER:
            raise InvalidRequestError(
                f"The {EXTENSIONS_HEADER} parameter is longer than {MAX_EXTENSIONS_HEADER} bytes."
            )
        requested = {uri.strip() for uri in raw.split(",") if uri.strip()}
        if len(requested) > MAX_REQUESTED_EXTENSIONS:
            raise InvalidRequestError(
                f"The {EXTENSIONS_HEADER} parameter lists more than "
                f"{MAX_REQUESTED_EXTENSIONS} extensions."
            )
        missing = [uri for uri in self.required if uri not in requested]
        if missing:
            raise ExtensionSupportRequiredError(
                "This agent requires the extension(s) "
                + ", ".join(missing)
                + f": list them in the {EXTENSIONS_HEADER} header and follow them.",
                data={"extensions": ", ".join(missing)},
            )
        return frozenset(requested & self.supported)

    @staticmethod
    def echo(activated: frozenset[str]) -> dict[str, str]:
        """Response headers naming the activated extensions (none when there are none)."""
        if not activated:
            return {}
        return {EXTENSIONS_HEADER: ", ".join(sorted(activated))}
