"""Content as A2A 1.0 parts (A2A 1.0 §4.1.6 ``Part``: ``text``, ``raw``, ``url``, ``data``).

Also the media type of a part and whether a list of input modes accepts it (A2A 1.0
§4.4 ``defaultInputModes`` / skill ``inputModes``, media types as in RFC 6838 with
``type/*`` and ``*/*`` wildcards), and the files of a message in typed form.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from keycard_agents._a2a.errors import InvalidAgentResponseError
from keycard_agents._a2a.types import Part

__all__ = ["File", "accepts", "data_of", "files_of", "is_skill_call", "part_media_type", "to_parts"]


@dataclass(frozen=True)
class File:
    """A file a client sent: its bytes (``content``) or a ``url`` to fetch, and its type."""

    media_type: str
    filename: str | None = None
    content: bytes | None = None
    url: str | None = None


def is_skill_call(part: Part) -> bool:
    """A typed skill call: a data part ``{"skill": ..., "arguments": ...}``."""
    return isinstance(part.data, Mapping) and "skill" in part.data


def part_media_type(part: Part) -> str:
    """The media type of ``part``: its ``mediaType``, else what its kind implies.

    Text is ``text/plain``, data ``application/json``, bytes and URLs without a type
    ``application/octet-stream``. Parameters (``; charset=...``) are dropped.
    """
    declared = (part.media_type or "").split(";", 1)[0].strip().lower()
    if declared:
        return declared
    if part.text is not None:
        return "text/plain"
    if part.data is not None:
        return "application/json"
    return "application/octet-stream"


def accepts(modes: Iterable[str], media_type: str) -> bool:
    """Whether one of ``modes`` (``type/subtype``, ``type/*`` or ``*/*``) covers ``media_type``."""
    kind = media_type.split("/", 1)[0]
    for mode in modes:
        mode = mode.split(";", 1)[0].strip().lower()
        if mode in ("*/*", media_type) or (mode.endswith("/*") and mode[:-2] == kind):
            return True
    return False


def files_of(message: Any) -> list[File]:
    """The ``raw`` and ``url`` parts of ``message`` as :class:`File` values."""
    return [
        File(
            media_type=part_media_type(p),
            filename=p.filename,
            content=p.raw,
            url=p.url,
        )
        for p in message.parts
        if p.raw is not None or p.url is not None
    ]


def data_of(message: Any) -> list[Any]:
    """The JSON values of ``message``'s data parts, typed skill calls left out."""
    return [p.data for p in message.parts if p.data is not None and not is_skill_call(p)]


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
