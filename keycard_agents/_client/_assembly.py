"""Reassembling artifacts sent in chunks (A2A 1.0 §4.2 ``TaskArtifactUpdateEvent``).

An agent may stream an artifact in pieces: every event carries the same ``artifactId``;
``append: true`` adds the event's parts to what came before, ``lastChunk: true`` marks the
final piece. An event without ``append`` starts (or replaces) the artifact; one without
``lastChunk`` is taken as complete, as servers that do not chunk send them.
"""

from __future__ import annotations

from keycard_agents._a2a.errors import InvalidAgentResponseError
from keycard_agents._a2a.types import Artifact, StreamResponse

__all__ = ["ArtifactAssembler"]


class ArtifactAssembler:
    """Feed it the events of a stream; it holds the task's artifacts, chunks joined.

    ``add(event)`` returns the artifact an event completed (its last chunk), else ``None``;
    :attr:`artifacts` lists them in the order they started. A ``task`` event (the
    stream's first, or a resubscription's) resets them to that snapshot.
    """

    def __init__(self) -> None:
        self._artifacts: dict[str, Artifact] = {}
        self._open: set[str] = set()

    @property
    def artifacts(self) -> list[Artifact]:
        return list(self._artifacts.values())

    def is_complete(self, artifact_id: str) -> bool:
        """Whether the artifact's last chunk has arrived."""
        return artifact_id in self._artifacts and artifact_id not in self._open

    def add(self, event: StreamResponse) -> Artifact | None:
        if event.task is not None:
            self._artifacts = {a.artifact_id: a.model_copy(deep=True) for a in event.task.artifacts}
            self._open.clear()
            return None
        update = event.artifact_update
        if update is None:
            return None
        chunk = update.artifact
        held = self._artifacts.get(chunk.artifact_id)
        if update.append:
            if held is None:
                raise InvalidAgentResponseError(
                    f"artifact {chunk.artifact_id[:64]!r}: a chunk to append arrived before "
                    "the artifact started"
                )
            held.parts.extend(chunk.parts)
        else:
            held = chunk.model_copy(deep=True)
            self._artifacts[chunk.artifact_id] = held
        if update.last_chunk is False:
            self._open.add(chunk.artifact_id)
            return None
        self._open.discard(chunk.artifact_id)
        return held
