"""The ``grant`` pattern of hosted Keycard's SDK: a skill receives tokens for several resources.

``@grant(...)`` names declared dependencies (by name or resource URL, RFC 8707 §2); before
the skill runs, one RFC 8693 §2.1 exchange per resource runs concurrently, and the skill
receives an :class:`AccessContext` that never throws on its own: each resource has either
a token or an error (RFC 6749 §5.2 code and description). An error that needs the user
(``interaction_required``, ``consent_required``) ends the task in AUTH_REQUIRED instead.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

import anyio
import anyio.to_thread

from keycard_agents._a2a.interrupt import TaskInterrupt
from keycard_agents._agent._context import REPORT_AUTH_REQUIRED, Context
from keycard_agents._errors import (
    ConfigurationError,
    KeycardError,
    OAuthError,
    ResourceAccessError,
    TransportError,
)
from keycard_agents._oauth._exchange import ExchangedToken

__all__ = ["AccessContext", "ResourceError", "grant"]

_R = TypeVar("_R")
#: A skill method; ``@grant`` changes its parameters (the AccessContext is filled in, a
#: context parameter is added when missing), so only the result type is kept.
_Method = Callable[..., Awaitable[_R]]


AccessStatus = Literal["success", "partial_error", "error"]

#: Set by ``keycard_agents.testing.mock_access_context``: used instead of exchanging.
MockBuilder = Callable[[Sequence[tuple[str, Any]]], "AccessContext"]
MOCK_ACCESS: ContextVar[MockBuilder | None] = ContextVar("keycard_mock_access", default=None)


@runtime_checkable
class GivesTokens(Protocol):
    """A dependency handle that can give the delegated token itself (agent and HTTP API
    handles can), which is what ``@grant`` collects."""

    async def token(self) -> ExchangedToken: ...


@dataclass(frozen=True)
class ResourceError:
    """Why no token could be obtained for a resource: an OAuth-style code and message."""

    error: str
    message: str
    url: str | None = None
    """Where the user can fix it (``consent_required``: the page that connects the
    account or grants consent), when the issuer sent one (RFC 6749 §5.2 ``error_uri``)."""

    def to_dict(self) -> dict[str, str]:
        """Ours (``error``, ``message``) and Keycard's field names (``code``, ``description``);
        ``url`` when there is one."""
        out = {
            "error": self.error,
            "message": self.message,
            "code": self.error,
            "description": self.message,
        }
        if self.url is not None:
            out["url"] = self.url
        return out


def error_of(exc: KeycardError) -> ResourceError:
    """A failure as a :class:`ResourceError` (messages carry no token)."""
    if isinstance(exc, OAuthError):
        return ResourceError(exc.error, exc.error_description, url=exc.error_uri)
    if isinstance(exc, TransportError):
        return ResourceError("transport_error", str(exc))
    if isinstance(exc, ConfigurationError):
        return ResourceError("configuration_error", str(exc))
    return ResourceError("access_error", str(exc))


class AccessContext:
    """Tokens (or errors) for the resources a ``@grant`` skill asked for.

    Resources are named as in the decorator; a resource URL also finds a dependency that
    was named by its dependency name. Nothing here raises except :meth:`access` for a
    resource that failed or was not requested. The methods are those of Keycard's
    ``AccessContext``, with its meanings: ``has_error``/``get_error`` concern an error
    that affects every resource, ``has_errors`` any error at all, and ``get_status`` is
    ``"error"`` for such a global error, ``"partial_error"`` when some resource failed.
    """

    def __init__(
        self,
        *,
        tokens: Mapping[str, ExchangedToken] | None = None,
        errors: Mapping[str, ResourceError] | None = None,
        aliases: Mapping[str, str] | None = None,
        error: ResourceError | None = None,
    ) -> None:
        self._tokens = dict(tokens or {})
        self._errors = dict(errors or {})
        self._aliases = dict(aliases or {})
        self._error = error

    def _key(self, resource: str) -> str:
        return self._aliases.get(resource, resource)

    def access(self, resource: str) -> ExchangedToken:
        """The token for ``resource`` (``.access_token``); raises ResourceAccessError."""
        if self._error is not None:
            raise ResourceAccessError(
                f"no token for {resource}: {self._error.error}: {self._error.message}",
                resource=resource,
                error=self._error.error,
            )
        key = self._key(resource)
        if key in self._tokens:
            return self._tokens[key]
        failure = self._errors.get(key)
        if failure is not None:
            raise ResourceAccessError(
                f"no token for {resource}: {failure.error}: {failure.message}",
                resource=resource,
                error=failure.error,
            )
        requested = ", ".join(self.resources) or "none"
        raise ResourceAccessError(
            f"{resource} was not requested by @grant (requested: {requested})",
            resource=resource,
            error="not_requested",
        )

    @property
    def resources(self) -> list[str]:
        """Every requested resource, in the order of the decorator."""
        return [*self._tokens, *(r for r in self._errors if r not in self._tokens)]

    def has_error(self) -> bool:
        """Whether an error affects every resource (Keycard's global error)."""
        return self._error is not None

    def get_error(self) -> dict[str, str] | None:
        """The error that affects every resource, if any."""
        return None if self._error is None else self._error.to_dict()

    def has_errors(self) -> bool:
        """Whether anything failed: the global error or any resource."""
        return self._error is not None or bool(self._errors)

    def has_resource_error(self, resource: str) -> bool:
        return self._key(resource) in self._errors

    def get_errors(self) -> dict[str, Any]:
        """Keycard's shape: ``{"resources": {resource: {"error"/"code": code,
        "message"/"description": text}}, "error": <the global error or None>}``."""
        return {
            "resources": {r: e.to_dict() for r, e in self._errors.items()},
            "error": self.get_error(),
        }

    def get_resource_error(self, resource: str) -> dict[str, str] | None:
        failure = self._errors.get(self._key(resource))
        return None if failure is None else failure.to_dict()

    get_resource_errors = get_resource_error

    def get_status(self) -> AccessStatus:
        """``"error"`` (a global error), ``"partial_error"`` (a resource failed) or
        ``"success"``, as in Keycard's SDK."""
        if self._error is not None:
            return "error"
        return "partial_error" if self._errors else "success"

    def get_successful_resources(self) -> list[str]:
        return list(self._tokens)

    def get_failed_resources(self) -> list[str]:
        return list(self._errors)

    def __repr__(self) -> str:
        return (
            f"AccessContext(status={self.get_status()!r}, ok={self.get_successful_resources()!r}, "
            f"failed={self.get_failed_resources()!r})"
        )


def _find_dependency(agent: Any, spec: str) -> Any:
    dependencies: Mapping[str, Any] = agent.dependency_map
    for dependency in dependencies.values():
        if spec in (dependency.name, dependency.target):
            return dependency
    known = ", ".join(f"{d.name} ({d.target})" for d in dependencies.values()) or "none"
    raise ConfigurationError(
        f"@grant names {spec!r}, which is not a declared dependency of "
        f"{type(agent).__name__}: declare it in `dependencies` (declared: {known})",
        setting="dependencies",
    )


def _aliases(pairs: Sequence[tuple[str, Any]]) -> dict[str, str]:
    aliases = {d.target: spec for spec, d in pairs if d.target}
    aliases.update({d.name: spec for spec, d in pairs})
    return aliases


async def collect_access(
    ctx: Context, agent: Any, specs: Sequence[str], *, report_auth: bool = False
) -> AccessContext:
    """Exchange for every resource concurrently; failures become entries, not raises.

    A resource that needs the user ends the task in AUTH_REQUIRED, unless ``report_auth``:
    then it is an entry too (its ``url`` is where the user acts)."""
    pairs = [(spec, _find_dependency(agent, spec)) for spec in specs]
    aliases = _aliases(pairs)
    tokens: dict[str, ExchangedToken] = {}
    errors: dict[str, ResourceError] = {}
    interrupts: list[BaseException] = []  # re-raised alone, never as a group

    async def fetch(spec: str, name: str) -> None:
        try:
            handle = ctx.dependency(name)
            if not isinstance(handle, GivesTokens):
                raise ConfigurationError(
                    f"dependency {name!r} cannot give a token to @grant", setting="dependencies"
                )
            tokens[spec] = await handle.token()
        except KeycardError as exc:
            errors[spec] = error_of(exc)
        except (TaskInterrupt, Exception) as interrupt:  # AUTH_REQUIRED, or a bug
            interrupts.append(interrupt)

    reporting = REPORT_AUTH_REQUIRED.set(report_auth)  # copied into the tasks started below
    try:
        async with anyio.create_task_group() as group:
            for spec, dependency in pairs:
                group.start_soon(fetch, spec, dependency.name)
    finally:
        REPORT_AUTH_REQUIRED.reset(reporting)
    if interrupts:
        raise interrupts[0]
    ordered = {s: tokens[s] for s in specs if s in tokens}
    failed = {s: errors[s] for s in specs if s in errors}
    # Every resource failed for one reason (no delegation configured, an anonymous caller,
    # the token service down): that is the error of the whole context, as in Keycard's.
    reasons = set(failed.values())
    common = next(iter(reasons)) if not ordered and len(reasons) == 1 and len(specs) > 0 else None
    if common is not None and common.error in _GLOBAL_ERRORS:
        return AccessContext(tokens=ordered, errors=failed, aliases=aliases, error=common)
    return AccessContext(tokens=ordered, errors=failed, aliases=aliases)


_GLOBAL_ERRORS = frozenset({"configuration_error", "transport_error"})


def _is_access(param: inspect.Parameter) -> bool:
    annotation = param.annotation
    if annotation is AccessContext:
        return True
    return isinstance(annotation, str) and annotation.split(".")[-1] == "AccessContext"


def _is_context(param: inspect.Parameter) -> bool:
    annotation = param.annotation
    if annotation is Context or (
        isinstance(annotation, str) and annotation.split(".")[-1] == "Context"
    ):
        return True
    return annotation is inspect.Parameter.empty and param.name in {"ctx", "context"}


def grant(
    *resources: str | Sequence[str], on_auth: Literal["interrupt", "report"] = "interrupt"
) -> Callable[[_Method[_R]], _Method[_R]]:
    """Give a skill tokens for ``resources`` (declared dependencies, by name or URL).

    A resource that needs the user first (``consent_required``: an account to connect,
    ``interaction_required``) ends the task in AUTH_REQUIRED with the issuer's link
    (``on_auth="interrupt"``), or is reported like any other failure, with the link in
    its error's ``url`` (``on_auth="report"``: the skill decides).

    Resources are given one by one or as a list (Keycard's ``grant([url1, url2])``). The
    skill takes a parameter annotated :class:`AccessContext`; it is filled before the
    skill runs and is not part of the skill's input schema. A plain (sync) function works
    too: it runs in a worker thread once the tokens are there::

        @skill
        @grant("calendar", "https://mail.example.com")
        async def plan(self, ctx: Context, access: AccessContext, day: str) -> str:
            if access.has_errors():
                return f"partial plan: {access.get_errors()}"
            token = access.access("calendar").access_token
            ...
    """
    flat: list[object] = []
    for item in resources:
        flat.extend(item if isinstance(item, (list, tuple)) else [item])
    if not flat or not all(isinstance(r, str) and r for r in flat):
        raise ConfigurationError("@grant needs one or more resource names or URLs")
    specs = tuple(dict.fromkeys(str(r) for r in flat))
    if on_auth not in ("interrupt", "report"):
        raise ConfigurationError("@grant: on_auth is 'interrupt' or 'report'", setting="on_auth")
    report = on_auth == "report"

    # Typed for coroutine functions; a plain function (Keycard's sync tools) works at run
    # time too, run in a worker thread, but type checkers only know the async form.
    def decorate(func: _Method[_R]) -> _Method[_R]:
        is_async = inspect.iscoroutinefunction(func)
        signature = inspect.signature(func)
        params = list(signature.parameters.values())
        access_params = [p for p in params if _is_access(p)]
        if len(access_params) != 1:
            raise ConfigurationError(
                f"@grant: {func.__qualname__} needs exactly one parameter annotated "
                "AccessContext to receive the tokens",
                setting=func.__qualname__,
            )
        access_name = access_params[0].name
        takes_context = len(params) > 1 and _is_context(params[1])
        kept = [p for p in params if p.name != access_name]
        annotations = {k: v for k, v in func.__annotations__.items() if k != access_name}
        if not takes_context:
            ctx_param = inspect.Parameter(
                "ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Context
            )
            kept.insert(1, ctx_param)
            annotations["ctx"] = Context

        @functools.wraps(func)
        async def wrapper(self: Any, ctx: Context, /, **arguments: Any) -> Any:
            mock = MOCK_ACCESS.get()
            if mock is not None:
                access = mock([(spec, _find_dependency(self, spec)) for spec in specs])
            else:
                access = await collect_access(ctx, self, specs, report_auth=report)
            arguments[access_name] = access
            call = (
                functools.partial(func, self, ctx)
                if takes_context
                else functools.partial(func, self)
            )
            if is_async:
                return await call(**arguments)
            return await anyio.to_thread.run_sync(functools.partial(call, **arguments))

        wrapper.__signature__ = signature.replace(parameters=kept)  # type: ignore[attr-defined]
        wrapper.__annotations__ = annotations
        wrapper.__keycard_grant__ = specs  # type: ignore[attr-defined]
        return wrapper

    return decorate


def mock_factory(
    *,
    default_token: str | None,
    tokens: Mapping[str, str],
    errors: Mapping[str, str | ResourceError],
    expires_at: float,
    global_error: ResourceError | None = None,
) -> MockBuilder:
    """An AccessContext builder for tests (see ``keycard_agents.testing``).

    ``tokens`` and ``errors`` are keyed by what the decorator names, the dependency name
    or the resource URL.
    """

    def lookup(table: Mapping[str, Any], spec: str, dependency: Any) -> Any:
        for key in (spec, dependency.name, dependency.target):
            if key is not None and key in table:
                return table[key]
        return None

    def build(pairs: Sequence[tuple[str, Any]]) -> AccessContext:
        granted: dict[str, ExchangedToken] = {}
        failed: dict[str, ResourceError] = {}
        for spec, dependency in pairs:
            error = lookup(errors, spec, dependency)
            token = lookup(tokens, spec, dependency) or default_token
            if error is not None:
                failed[spec] = (
                    error if isinstance(error, ResourceError) else ResourceError(error, error)
                )
            elif token is not None:
                granted[spec] = ExchangedToken(
                    access_token=token,
                    expires_at=expires_at,
                    scopes=(),
                    resource=dependency.target,
                    expires_in=max(0, round(expires_at - time.time())),
                )
            else:
                failed[spec] = ResourceError(
                    "access_denied", f"mock_access_context has no token for {spec}"
                )
        return AccessContext(
            tokens=granted, errors=failed, aliases=_aliases(pairs), error=global_error
        )

    return build
