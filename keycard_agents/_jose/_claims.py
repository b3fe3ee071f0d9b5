"""Wire models of the delegation profile, and the JSON Schemas published in ``protocols/``.

The claims of RFC 9068 §2.2 JWT access tokens as our token service issues them, with the
RFC 8693 §4.1 ``act`` claim (outermost = current actor), §4.4 ``may_act`` and the
``txn`` transaction id; and the ``params`` of our A2A delegation extension (A2A 1.0 §4.4.4
``AgentExtension.params``). The models document the wire; the code paths that build the
wire (``_sts._grants``, ``_card``) are checked against these schemas by the test suite.
``protocol_schemas()`` is what ``scripts/gen_schemas.py`` writes to ``protocols/schemas/``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from keycard_agents._a2a.types import AgentCard

__all__ = [
    "SCHEMA_BASE_URI",
    "ActClaim",
    "DelegatedTokenClaims",
    "DelegationDependency",
    "DelegationExtensionParams",
    "DelegationSkill",
    "MayActClaim",
    "SubjectIdentifier",
    "TokenServiceRef",
    "UserTokenClaims",
    "protocol_schemas",
]

#: ``$id`` prefix of the published schemas (an identifier, not a download location).
SCHEMA_BASE_URI = "https://keycard-agents.dev/protocols/schemas/"
_DRAFT = "https://json-schema.org/draft/2020-12/schema"

_SCOPE = r"^[\x21\x23-\x5B\x5D-\x7E]+( [\x21\x23-\x5B\x5D-\x7E]+)*$"


_WIRE = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class _Claims(BaseModel):
    # Issuers may add claims: unknown ones are allowed and ignored by receivers.
    model_config = ConfigDict(extra="allow")


class ActClaim(_Claims):
    """One level of ``act`` (RFC 8693 §4.1): an actor, and the actor before it."""

    sub: str = Field(min_length=1, description="The agent that acted (its client_id).")
    iss: str | None = Field(
        default=None, description="The issuer that recorded this actor (the token service)."
    )
    client_id: str | None = Field(default=None, description="The actor's OAuth client id.")
    act: ActClaim | None = Field(
        default=None, description="The previous actor; absent for the first agent of the chain."
    )


class SubjectIdentifier(_Claims):
    """``sub_id`` (RFC 9493 §4) in the ``iss_sub`` format (§3.2.5): where the user came from."""

    format: Literal["iss_sub"] = Field(description="Always iss_sub in tokens issued here.")
    iss: str = Field(
        min_length=1,
        description="The issuer that authenticated the user: this token service for its own "
        "users, else the trusted issuer of the first subject token. Copied unchanged at "
        "every later hop.",
    )
    sub: str = Field(min_length=1, description="The user as that issuer names it; equals 'sub'.")


class MayActClaim(_Claims):
    """``may_act`` (RFC 8693 §4.4): who may act first for the user."""

    sub: str = Field(min_length=1, description="client_id of the agent allowed to act first.")


class _AccessTokenClaims(_Claims):
    iss: str = Field(min_length=1, description="Issuer identifier (RFC 8414) of the signer.")
    sub: str = Field(min_length=1, description="The user, unchanged across every hop.")
    aud: str | list[str] = Field(
        description="The one resource URL (RFC 8707) the token is for; receivers require "
        "their own URL here. Issued as a string."
    )
    exp: int = Field(description="Expiry, seconds since the epoch.")
    iat: int = Field(description="Issue time, seconds since the epoch.")
    nbf: int | None = Field(default=None, description="Not before; equals iat when issued.")
    jti: str = Field(min_length=1, description="Unique token id (a UUID when issued here).")
    scope: str | None = Field(
        default=None,
        pattern=_SCOPE,
        description="Space-separated scopes (RFC 6749 §3.3).",
    )
    client_id: str | None = Field(default=None, description="The client the token was issued to.")
    txn: str | None = Field(
        default=None, min_length=1, description="One transaction id for the whole chain."
    )


class UserTokenClaims(_AccessTokenClaims):
    """A user token (``typ`` ``at+jwt``): what the first agent receives."""

    may_act: MayActClaim | None = Field(
        default=None, description="The only agent allowed to act first, when present."
    )
    sub_id: SubjectIdentifier | None = Field(
        default=None,
        description="Optional in user tokens (the user is then this issuer's); when present, "
        "its 'sub' must equal 'sub'.",
    )


class DelegatedTokenClaims(_AccessTokenClaims):
    """A delegated token (``typ`` ``at+jwt``), issued by RFC 8693 token exchange."""

    aud: str = Field(min_length=1, description="Exactly one target resource URL (RFC 8707).")
    scope: str = Field(
        pattern=_SCOPE, description="Granted scopes: requested ⊆ subject scopes ∩ target's."
    )
    client_id: str = Field(min_length=1, description="The agent that asked for this token.")
    txn: str = Field(min_length=1, description="The subject token's txn (or a new one).")
    nbf: int = Field(description="Not before; equals iat.")
    act: ActClaim = Field(description="The actor chain, outermost = the current actor.")
    sub_id: SubjectIdentifier = Field(
        description="Where the user came from (RFC 9493 iss_sub): a user is (sub_id.iss, sub)."
    )


class TokenServiceRef(BaseModel):
    """Where callers of the agent get their tokens (``params.tokenService``)."""

    model_config = _WIRE

    issuer: str = Field(description="Issuer identifier of the token service.")
    token_endpoint: str = Field(description="Its token endpoint (RFC 8693 exchange).")
    metadata_url: str = Field(description="Its RFC 8414 metadata URL.")


class DelegationDependency(BaseModel):
    """Something the agent calls on the user's behalf (``params.dependencies[]``)."""

    model_config = _WIRE

    kind: Literal["agent", "mcp", "http"] = Field(description="What the dependency is.")
    name: str = Field(min_length=1, description="Its name, unique within the agent.")
    scopes: list[str] = Field(description="Scopes the agent requests there.")
    description: str | None = Field(default=None, description="Human-readable purpose.")
    url: str | None = Field(
        default=None, description="agent: its URL (optional, else resolved by name); mcp: required."
    )
    resource: str | None = Field(
        default=None,
        description=(
            "http: its resource URL (RFC 8707); mcp: optional, its resource when it "
            "publishes no RFC 9728 metadata."
        ),
    )


class DelegationSkill(BaseModel):
    """Per-skill data A2A has no field for (``params.skills[id]``)."""

    model_config = _WIRE

    input_schema: dict[str, Any] = Field(
        description="JSON Schema (2020-12) of the skill's arguments object."
    )
    output_schema: dict[str, Any] = Field(
        description="JSON Schema (2020-12) of the skill's result."
    )
    scopes: list[str] = Field(description="Scopes a caller's token must carry.")
    anonymous: bool = Field(description="True when the skill needs no token at all.")


class DelegationExtensionParams(BaseModel):
    """``params`` of the delegation extension in ``capabilities.extensions``."""

    model_config = _WIRE

    dependencies: list[DelegationDependency]
    skills: dict[str, DelegationSkill] = Field(description="Keyed by A2A skill id.")
    token_service: TokenServiceRef | None = None


def _omit_null(node: Any) -> Any:
    """Optional fields are left out of the wire (``exclude_none``), never sent as null."""
    if isinstance(node, list):
        return [_omit_null(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _omit_null(v) for k, v in node.items() if not (k == "default" and v is None)}
    variants = out.get("anyOf")
    if isinstance(variants, list) and {"type": "null"} in variants:
        rest = [v for v in variants if v != {"type": "null"}]
        del out["anyOf"]
        if len(rest) == 1:
            out.update(rest[0])
        else:
            out["anyOf"] = rest
    return out


def _schema(model: type[BaseModel], name: str, title: str) -> dict[str, Any]:
    body = _omit_null(model.model_json_schema(by_alias=True, mode="serialization"))
    body["title"] = title
    return {"$schema": _DRAFT, "$id": SCHEMA_BASE_URI + name, **body}


def protocol_schemas() -> dict[str, dict[str, Any]]:
    """The schemas of ``protocols/schemas/``, by file name, generated from the models."""

    return {
        "agent-card.schema.json": _schema(AgentCard, "agent-card.schema.json", "A2A Agent Card"),
        "delegation-extension-params.schema.json": _schema(
            DelegationExtensionParams,
            "delegation-extension-params.schema.json",
            "keycard-agents delegation extension params",
        ),
        "delegated-token-claims.schema.json": _schema(
            DelegatedTokenClaims,
            "delegated-token-claims.schema.json",
            "Delegated token claims",
        ),
        "user-token-claims.schema.json": _schema(
            UserTokenClaims, "user-token-claims.schema.json", "User token claims"
        ),
    }
