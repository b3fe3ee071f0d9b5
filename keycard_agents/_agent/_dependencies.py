"""What an agent calls on its user's behalf: other agents, MCP servers and HTTP APIs.

Each dependency names its target (an agent's URL, an MCP server's URL, an HTTP API's
RFC 8707 resource URL) and the scopes the agent asks for there; the agent card publishes
them in the delegation extension's ``params`` and the token service's policy limits
exchanges to them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from keycard_agents._errors import ConfigurationError

__all__ = ["AgentDependency", "Dependency", "HttpDependency", "McpDependency"]


@dataclass(frozen=True, init=False)
class Dependency:
    """Something the agent calls on the user's behalf, with the scopes it needs there."""

    kind: ClassVar[str] = ""
    name: str
    scopes: tuple[str, ...]
    description: str | None

    def __init__(
        self, name: str, *, scopes: Sequence[str] = (), description: str | None = None
    ) -> None:
        if not name:
            raise ConfigurationError("a dependency needs a non-empty name", setting="name")
        if isinstance(scopes, str):
            raise ConfigurationError(
                f"dependency {name!r}: scopes must be a list of strings, not one string",
                setting="scopes",
            )
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "scopes", tuple(scopes))
        object.__setattr__(self, "description", description)

    @property
    def target(self) -> str | None:
        """The URL or resource this dependency is called at (``None``: resolved by name)."""
        return None

    def to_params(self) -> dict[str, Any]:
        """This dependency as published in the delegation extension's ``params``."""
        params: dict[str, Any] = {"kind": self.kind, "name": self.name, "scopes": list(self.scopes)}
        if self.description:
            params["description"] = self.description
        return params


@dataclass(frozen=True, init=False)
class AgentDependency(Dependency):
    """Another A2A agent, by URL or by name (resolved by the delegation layer)."""

    kind: ClassVar[str] = "agent"
    url: str | None

    def __init__(
        self,
        name: str,
        *,
        url: str | None = None,
        scopes: Sequence[str] = (),
        description: str | None = None,
    ) -> None:
        super().__init__(name, scopes=scopes, description=description)
        object.__setattr__(self, "url", url)

    @property
    def target(self) -> str | None:
        return self.url

    def to_params(self) -> dict[str, Any]:
        params = super().to_params()
        if self.url is not None:
            params["url"] = self.url
        return params


@dataclass(frozen=True, init=False)
class McpDependency(Dependency):
    """An MCP server reached over streamable HTTP at ``url``.

    ``resource`` is its RFC 8707 resource identifier (the audience of the tokens it is
    sent). Leave it unset to read it from the server's RFC 9728 metadata; set it when the
    server publishes none (no metadata is fetched then).
    """

    kind: ClassVar[str] = "mcp"
    url: str
    resource: str | None

    def __init__(
        self,
        name: str,
        *,
        url: str,
        scopes: Sequence[str] = (),
        description: str | None = None,
        resource: str | None = None,
    ) -> None:
        super().__init__(name, scopes=scopes, description=description)
        if resource is not None and not resource:
            raise ConfigurationError(
                f"MCP dependency {name!r}: resource must be a URL or None", setting="resource"
            )
        object.__setattr__(self, "url", url)
        object.__setattr__(self, "resource", resource)

    @property
    def target(self) -> str:
        return self.url

    def to_params(self) -> dict[str, Any]:
        params = {**super().to_params(), "url": self.url}
        if self.resource is not None:
            params["resource"] = self.resource
        return params


@dataclass(frozen=True, init=False)
class HttpDependency(Dependency):
    """An HTTP API identified by its resource URL (RFC 8707 ``resource``)."""

    kind: ClassVar[str] = "http"
    resource: str

    def __init__(
        self,
        name: str,
        *,
        resource: str,
        scopes: Sequence[str] = (),
        description: str | None = None,
    ) -> None:
        super().__init__(name, scopes=scopes, description=description)
        object.__setattr__(self, "resource", resource)

    @property
    def target(self) -> str:
        return self.resource

    def to_params(self) -> dict[str, Any]:
        return {**super().to_params(), "resource": self.resource}
