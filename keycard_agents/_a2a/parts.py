"""Content as A2A 1.0 parts (A2A 1.0 §4.1.6 ``Part``: ``text``, ``raw``, ``url``, ``data``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from keycard_agents._a2a.errors import InvalidAgentResponseError
from keycard_agents._a2a.types import Part

__all__ = ["to_parts"]


def to_parts(content: Any, *, media_type: str | None = None) -> list[Part]:
    """Content as A2A parts: str → text, bytes → raw, Part(s) as is, anything else → data."""
    if content is None:
        return []
    if isinstance(content, Part):
        return [content]
    if isinstance(content, (list, tuple)) and content and all(isinstance(p, Part) for p in content):
        return list(content)
    if isinstance(content, str):
        return [Part(text=content, media_type=media_type)]
    if isinstance(content, (bytes, bytearray)):
        return [Part(raw=bytes(content), media_type=media_type or "application/octet-stream")]
    if isinstance(content, BaseModel):
        data = content.model_dump(mode="json", by_alias=True)
    else:
        try:
            data = to_jsonable_python(content)
        except Exception as exc:  # pydantic_core raises its own serialization error
            raise InvalidAgentResponseError(
                f"cannot send a {type(content).__name__} as JSON data"
            ) from exc
    return [Part(data=data, media_type=media_type or "application/json")]
