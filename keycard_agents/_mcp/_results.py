"""MCP tool descriptions and tool results, in our own terms (MCP spec 2025-11-25
"Tools": ``Tool``, ``ToolAnnotations``, ``CallToolResult`` and its content blocks).

A result becomes A2A 1.0 parts (A2A §4.1.6 ``Part``): structured content is a ``data``
part, text a ``text`` part, images and audio ``raw`` parts, resource links ``url`` parts.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import mcp_types

from keycard_agents._a2a.types import Part

__all__ = ["McpTool", "McpToolResult", "result_from_mcp", "tool_from_mcp"]

_MAX_DETAIL = 1000


@dataclass(frozen=True)
class McpTool:
    """One tool as the MCP server lists it."""

    name: str
    title: str | None = None
    description: str | None = None
    input_schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "object"})
    output_schema: Mapping[str, Any] | None = None
    read_only: bool = False
    destructive: bool = False
    idempotent: bool = False
    open_world: bool = False

    @property
    def display_name(self) -> str:
        """MCP display precedence: ``title``, then ``annotations.title``, then ``name``."""
        return self.title or self.name


def tool_from_mcp(tool: mcp_types.Tool) -> McpTool:
    notes = tool.annotations
    return McpTool(
        name=tool.name,
        title=tool.title or (notes.title if notes is not None else None),
        description=tool.description,
        input_schema=dict(tool.input_schema),
        output_schema=dict(tool.output_schema) if tool.output_schema is not None else None,
        read_only=bool(notes is not None and notes.read_only_hint is True),
        destructive=bool(notes is not None and notes.destructive_hint is True),
        idempotent=bool(notes is not None and notes.idempotent_hint is True),
        open_world=bool(notes is not None and notes.open_world_hint is True),
    )


def _decode(data: str) -> bytes | None:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


def _block_part(block: Any) -> Part | None:
    if isinstance(block, mcp_types.TextContent):
        return Part(text=block.text)
    if isinstance(block, (mcp_types.ImageContent, mcp_types.AudioContent)):
        raw = _decode(block.data)
        return None if raw is None else Part(raw=raw, media_type=block.mime_type)
    if isinstance(block, mcp_types.ResourceLink):
        return Part(url=str(block.uri), media_type=block.mime_type, filename=block.name)
    if isinstance(block, mcp_types.EmbeddedResource):
        res = block.resource
        if isinstance(res, mcp_types.TextResourceContents):
            return Part(text=res.text, media_type=res.mime_type)
        raw = _decode(res.blob)
        if raw is None:
            return None
        return Part(raw=raw, media_type=res.mime_type or "application/octet-stream")
    return None


@dataclass(frozen=True)
class McpToolResult:
    """What a tool call returned. ``is_error`` results are returned, not raised, here."""

    is_error: bool
    text: str
    structured: Any = None
    parts: tuple[Part, ...] = ()

    @property
    def detail(self) -> str:
        """The result's text, shortened for a task status message."""
        text = self.text.strip() or "(the tool gave no message)"
        return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"

    def to_parts(self) -> list[Part]:
        """Structured content as one data part (its text echo dropped), else the content."""
        if self.structured is not None:
            others = [p for p in self.parts if p.text is None]
            return [Part(data=self.structured, media_type="application/json"), *others]
        return list(self.parts)


def result_from_mcp(result: mcp_types.CallToolResult) -> McpToolResult:
    texts = [b.text for b in result.content if isinstance(b, mcp_types.TextContent)]
    parts = tuple(p for p in (_block_part(b) for b in result.content) if p is not None)
    return McpToolResult(
        is_error=bool(result.is_error),
        text="\n".join(texts),
        structured=result.structured_content,
        parts=parts,
    )
