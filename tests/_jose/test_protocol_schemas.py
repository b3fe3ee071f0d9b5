"""The JSON Schemas published in ``protocols/schemas/`` are what the claims models generate.

The published files are the wire contract other implementations validate against; any
change to how the models are turned into schemas (an optional field sent as ``null``, a
lost ``$id`` or title) must show up as a difference from the checked-in files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from keycard_agents._jose._claims import SCHEMA_BASE_URI, _omit_null, protocol_schemas

SCHEMAS = Path(__file__).resolve().parents[2] / "protocols" / "schemas"
TITLES = {
    "agent-card.schema.json": "A2A Agent Card",
    "delegation-extension-params.schema.json": "keycard-agents delegation extension params",
    "delegated-token-claims.schema.json": "Delegated token claims",
    "user-token-claims.schema.json": "User token claims",
}


def published(name: str) -> dict[str, Any]:
    return dict(json.loads((SCHEMAS / name).read_text(encoding="utf-8")))


def test_every_published_schema_is_generated_and_nothing_else() -> None:
    assert sorted(protocol_schemas()) == sorted(p.name for p in SCHEMAS.glob("*.json"))


@pytest.mark.parametrize("name", sorted(TITLES))
def test_generated_schema_equals_the_published_file(name: str) -> None:
    generated = protocol_schemas()[name]
    assert generated == published(name)
    assert generated["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert generated["$id"] == SCHEMA_BASE_URI + name
    assert generated["title"] == TITLES[name]


def test_optional_fields_are_described_without_null() -> None:
    # A field that may be absent is never allowed to be null on the wire.
    node = {
        "anyOf": [{"type": "string"}, {"type": "null"}],
        "default": None,
        "description": "d",
    }
    assert _omit_null(node) == {"type": "string", "description": "d"}
    several = {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}
    assert _omit_null(several) == {"anyOf": [{"type": "string"}, {"type": "integer"}]}
    # Only a null default goes; other defaults and null-free unions stay, at any depth.
    kept = {"default": 0, "anyOf": [{"type": "string"}, {"type": "integer"}]}
    assert _omit_null({"properties": {"x": kept}, "items": [kept]}) == {
        "properties": {"x": kept},
        "items": [kept],
    }
    assert _omit_null({"a": [{"anyOf": [{"$ref": "#/x"}, {"type": "null"}]}]}) == {
        "a": [{"$ref": "#/x"}]
    }
    assert _omit_null("text") == "text"
