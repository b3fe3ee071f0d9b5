"""What a skill sees while it runs: the verified caller and the task helpers (A2A 1.0 §4.1 tasks).

A :class:`Context` carries the verified :class:`~keycard_agents.Principal` (user, actor
chain of RFC 8693 §4.1 ``act`` claims, scopes, ``txn``), the task and context ids, and
helpers that drive the A2A task: progress updates, artifacts, asking for input
(``TASK_STATE_INPUT_REQUIRED``) or for authorization (``TASK_STATE_AUTH_REQUIRED``).
Dependency handles come from a pluggable :class:`DelegationProvider`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any, Protocol, overload

from keycard_agents._a2a.interrupt import TaskInterrupt
from keycard_agents._a2a.parts import File, data_of, files_of, to_parts
from keycard_agents._a2a.types import Message, Part, Role, TaskState, new_id
from keycard_agents._agent._dependencies import AgentDependency, Dependency, HttpDependency
from keycard_agents._agent._handles import AgentCalls, HttpApiCalls
from keycard_agents._errors import ConfigurationError
from keycard_agents._jose._principal import ActorChain, Principal, UserId
from keycard_agents._oauth._resource_server import Caller

#: While set, a dependency that needs the user (``consent_required``, ...) raises its
#: error instead of ending the task in AUTH_REQUIRED: ``@grant(..., on_auth="report")``
#: reports it in the AccessContext, with the link.
REPORT_AUTH_REQUIRED: ContextVar[bool] = ContextVar("keycard_report_auth", default=False)

__all__ = ["ArtifactWriter", "Context", "DelegationProvider", "TaskSink"]


class DelegationProvider(Protocol):
    """Builds the handle a skill uses to call one declared dependency.

    The delegation layer implements this (token exchange per RFC 8693 with the caller's
    token as ``subject_token``); the runtime only routes ``ctx.dependency(name)`` to it.
    """

    def handle(self, dependency: Dependency, *, caller: Caller, context: Context) -> Any: ...


class TaskSink(Protocol):
    """The runtime side of a running task: what Context helpers write to."""

    async def status_update(self, message: Message) -> None: ...

    async def add_artifact(
        self,
        parts: Sequence[Part],
        *,
        name: str | None,
        description: str | None,
        metadata: Mapping[str, Any] | None,
    ) -> None: ...

    async def append_artifact(
        self,
        artifact_id: str,
        parts: Sequence[Part],
        *,
        name: str | None,
        description: str | None,
        metadata: Mapping[str, Any] | None,
        append: bool,
        last_chunk: bool,
    ) -> None: ...


class ArtifactWriter:
    """One artifact sent in chunks (A2A 1.0 ``TaskArtifactUpdateEvent`` ``append`` /
    ``lastChunk``): every chunk carries the same ``artifact_id``; the first starts the
    artifact, later ones append to it, and the one written with ``last=True`` ends it.
    Clients reassemble the chunks (``keycard_agents.ArtifactAssembler``); the task holds
    the whole artifact."""

    def __init__(
        self,
        sink: TaskSink,
        *,
        name: str | None,
        description: str | None,
        metadata: Mapping[str, Any] | None,
    ) -> None:
        self.artifact_id = new_id()
        self._sink = sink
        self._name = name
        self._description = description
        self._metadata = metadata
        self._started = False
        self._finished = False

    async def write(
        self, content: Any, *, media_type: str | None = None, last: bool = False
    ) -> None:
        """Send the next chunk (text, bytes, JSON data or parts); ``last=True`` ends it."""
        if self._finished:
            raise ConfigurationError(
                f"artifact {self.artifact_id} already received its last chunk", setting="last"
            )
        parts = to_parts(content, media_type=media_type)
        if not parts:
            raise ConfigurationError("an artifact chunk needs content; got None", setting="content")
        await self._sink.append_artifact(
            self.artifact_id,
            parts,
            name=self._name,
            description=self._description,
            metadata=self._metadata,
            append=self._started,
            last_chunk=last,
        )
        self._started = True
        self._finished = last


def _text_of(message: Message) -> str:
    return "\n".join(p.text for p in message.parts if p.text is not None)


class Context:
    """Passed to every skill as its first argument after ``self``.

    Interruptions replay: when a task interrupted by :meth:`ask_input` or
    :meth:`require_auth` receives the client's next message, the skill runs again from
    the start with the same arguments, and the n-th ``ask_input`` call returns the n-th
    reply instead of interrupting. Keep side effects before a question idempotent.
    """

    def __init__(
        self,
        *,
        caller: Caller,
        task_id: str,
        context_id: str,
        skill_id: str,
        message: Message,
        sink: TaskSink,
        dependencies: Mapping[str, Dependency],
        delegation: DelegationProvider | None = None,
        replies: Sequence[Message] = (),
    ) -> None:
        self._caller = caller
        self.task_id = task_id
        self.context_id = context_id
        self.skill_id = skill_id
        self.message = message
        self._sink = sink
        self._dependencies = dict(dependencies)
        self._delegation = delegation
        self._replies = list(replies)
        self._interrupts = 0
        self._handles: dict[str, Any] = {}

    # -- who is calling ------------------------------------------------------------

    @property
    def principal(self) -> Principal | None:
        """The verified token's claims, or ``None`` for an anonymous call."""
        return self._caller.principal

    @property
    def user(self) -> UserId | None:
        """The user the call is made for, or ``None`` when anonymous.

        A :class:`~keycard_agents.UserId`: it prints as ``sub`` but is equal only to the
        same ``sub`` from the same origin issuer, so keying data on it never mixes up two
        users who happen to share a name at different identity providers.
        """
        return None if self.principal is None else self.principal.user_id

    @property
    def actors(self) -> ActorChain:
        """Agents that acted before this one, current (most recent) first."""
        return ActorChain() if self.principal is None else self.principal.actors

    @property
    def scopes(self) -> frozenset[str]:
        return frozenset() if self.principal is None else self.principal.scopes

    @property
    def txn(self) -> str | None:
        """The transaction id shared by every hop of the delegation chain."""
        return None if self.principal is None else self.principal.txn

    @property
    def text(self) -> str:
        """The text parts of the message that started this run, joined by newlines."""
        return _text_of(self.message)

    @property
    def files(self) -> list[File]:
        """The files (``raw`` and ``url`` parts) of the message that started this run.

        Their media types are among those the skill accepts (``@skill(input_modes=...)``
        or the agent's ``default_input_modes``): others are refused before the skill runs.
        """
        return files_of(self.message)

    @property
    def data(self) -> list[Any]:
        """The JSON values of the data parts of that message (a typed skill call aside)."""
        return data_of(self.message)

    @property
    def extensions(self) -> frozenset[str]:
        """URIs of the A2A extensions the client activated for this request (§3.3.4)."""
        return self._caller.extensions

    # -- task helpers ----------------------------------------------------------------

    def _agent_message(self, text: str) -> Message:
        return Message(
            message_id=new_id(),
            role=Role.AGENT,
            parts=[Part(text=text)],
            task_id=self.task_id,
            context_id=self.context_id,
        )

    async def update(self, text: str) -> None:
        """Send a progress update: a WORKING status with an agent message."""
        await self._sink.status_update(self._agent_message(text))

    async def artifact(
        self,
        content: Any,
        *,
        name: str | None = None,
        description: str | None = None,
        media_type: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Emit an artifact: text (``str``), bytes, JSON data (pydantic models too) or parts."""
        parts = to_parts(content, media_type=media_type)
        if not parts:
            raise ConfigurationError("an artifact needs content; got None", setting="content")
        await self._sink.add_artifact(parts, name=name, description=description, metadata=metadata)

    def open_artifact(
        self,
        *,
        name: str | None = None,
        description: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> ArtifactWriter:
        """Start an artifact sent in chunks: ``await writer.write(chunk)``, the last one
        with ``last=True``. Streaming clients see each chunk as it is written."""
        return ArtifactWriter(self._sink, name=name, description=description, metadata=metadata)

    async def reject(self, reason: str) -> None:
        """Decline the task: it ends in the terminal state REJECTED with ``reason``."""
        raise TaskInterrupt(TaskState.REJECTED, reason)

    async def ask_input(self, question: str) -> str:
        """Ask the client a question; the task ends in INPUT_REQUIRED until it answers.

        On the replayed run (after the client's reply) this returns the reply's text.
        """
        reply = self._next_reply()
        if reply is not None:
            return _text_of(reply)
        raise TaskInterrupt(TaskState.INPUT_REQUIRED, question)

    async def require_auth(self, reason: str, *, url: str | None = None) -> None:
        """Signal that a credential or consent is needed: the task ends in AUTH_REQUIRED.

        AUTH_REQUIRED is a signal, never a grant: the client obtains the authorization
        out of band and sends a follow-up message to the task, which replays the skill;
        this call then returns. ``url`` is where the user grants it (a connect or consent
        page): the status message carries it as a ``url`` part after the text.
        """
        if self._next_reply() is None:
            raise TaskInterrupt(TaskState.AUTH_REQUIRED, reason, url=url)

    def _next_reply(self) -> Message | None:
        index = self._interrupts
        self._interrupts += 1
        return self._replies[index] if index < len(self._replies) else None

    # -- dependencies ----------------------------------------------------------------

    @overload
    def dependency(self, dependency: AgentDependency) -> AgentCalls: ...
    @overload
    def dependency(self, dependency: HttpDependency) -> HttpApiCalls: ...
    @overload
    def dependency(self, dependency: str | Dependency) -> Any: ...
    def dependency(self, dependency: str | Dependency) -> Any:
        """The handle for calling a declared dependency on the caller's behalf.

        Pass the declared dependency itself for a typed handle (:class:`AgentCalls` for an
        agent, :class:`HttpApiCalls` for an HTTP API), or its name. MCP servers get the
        handle of the ``mcp`` extra (``keycard_agents.mcp.McpServerHandle``).
        """
        name = dependency if isinstance(dependency, str) else dependency.name
        try:
            declared = self._dependencies[name]
        except KeyError:
            known = ", ".join(sorted(self._dependencies)) or "none"
            raise ConfigurationError(
                f"unknown dependency {name!r}: declare it in the agent's `dependencies` "
                f"(declared: {known})",
                setting="dependencies",
            ) from None
        if not isinstance(dependency, str) and dependency != declared:
            raise ConfigurationError(
                f"dependency {name!r} is not the one this agent declares under that name: "
                "pass the declared dependency (or its name)",
                setting="dependencies",
            )
        if self._delegation is None:
            raise ConfigurationError(
                f"no delegation configured: dependency {name!r} needs a delegation provider "
                "(TaskRuntime(..., delegation=...)) to obtain exchanged tokens",
                setting="delegation",
            )
        if name not in self._handles:
            self._handles[name] = self._delegation.handle(
                declared, caller=self._caller, context=self
            )
        return self._handles[name]

    def __repr__(self) -> str:
        return f"Context(task_id={self.task_id!r}, skill={self.skill_id!r}, user={self.user!r})"
