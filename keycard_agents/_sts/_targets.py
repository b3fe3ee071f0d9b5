"""Which target a token exchange names: ``resource`` and ``audience`` together.

RFC 8693 §2.1: ``resource`` (an absolute URI, RFC 8707 §2) and ``audience`` (the logical
name of a target service, or an absolute URI) may both be sent, each more than once;
together they indicate where the issued token will be used. §2.2.2: a target the service
cannot issue for is ``invalid_target``. Our tokens carry exactly one audience, so after
logical names are resolved to registered resources the request must name exactly one
target (``resource`` and ``audience`` may name the same one: Keycard's SDK sends both).
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from keycard_agents._errors import DelegationDeniedError

from ._config import TokenServiceConfig

__all__ = ["requested_targets", "trailing_slash_hint"]


def _is_absolute_uri(value: str) -> bool:
    parts = urlsplit(value)
    return bool(parts.scheme) and (bool(parts.netloc) or parts.scheme == "urn")


def _registered(config: TokenServiceConfig) -> list[str]:
    registered = [u for a in config.agents for u in a.all_resources]
    registered += [r.resource for r in config.resources]
    return registered + [url for c in config.connections for url in c.resources]


def trailing_slash_hint(config: TokenServiceConfig, value: str) -> str:
    """When ``value`` is not registered but differs from a registered resource only by a
    trailing ``/``, a sentence naming both strings (RFC 8707 resources compare exactly);
    else ``""``."""
    twins = [r for r in _registered(config) if r != value and r.rstrip("/") == value.rstrip("/")]
    if not twins:
        return ""
    return (
        f": sts.toml registers {twins[0]!r}, which differs from {value!r} only by a trailing "
        "'/'. Resources compare exactly: use the same string in sts.toml and for the agent "
        "(its --url, and the URL its callers declare)"
    )


def _by_name(config: TokenServiceConfig, name: str) -> str | None:
    """The resource a logical name stands for: an agent's client id, a resource's name, or
    the name of a connection serving one API."""
    for agent in config.agents:
        if agent.client_id == name:
            return agent.resource
    for resource in config.resources:
        if resource.name == name:
            return resource.resource
    for connection in config.connections:
        if connection.name == name and len(connection.resources) == 1:
            return connection.resources[0]
    return None


def _show(value: str, limit: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def requested_targets(
    config: TokenServiceConfig, resources: Sequence[str], audiences: Sequence[str]
) -> list[str]:
    """The distinct targets named by ``resource`` and ``audience``, in request order.

    An ``audience`` that is not an absolute URI must be a registered logical name; an
    unregistered URI that differs from a registered resource only by a trailing ``/``
    is refused with a message naming the registered form (resources compare exactly).
    """
    targets: dict[str, None] = dict.fromkeys(resources)
    for value in audiences:
        if _is_absolute_uri(value):
            targets[value] = None
            continue
        resolved = _by_name(config, value)
        if resolved is None:
            raise DelegationDeniedError(
                "invalid_target",
                f"unknown audience {_show(value)}: name a registered agent by its client_id "
                "or a registered resource by its name, or send its URL in 'resource'",
            )
        targets[resolved] = None
    registered = _registered(config)
    for target in targets:
        if target in registered:
            continue
        near = [r for r in registered if r.rstrip("/") == target.rstrip("/")]
        if near:
            raise DelegationDeniedError(
                "invalid_target",
                f"unknown resource {_show(target)}: the registered resource is {near[0]!r}; "
                "resources compare exactly, so request it in that form",
            )
    return list(targets)
