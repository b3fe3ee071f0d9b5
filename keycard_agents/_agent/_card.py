"""The agent's public descriptions: its A2A 1.0 Agent Card (A2A spec §8 "Agent discovery")
and its OAuth 2.0 Protected Resource Metadata (RFC 9728 §2 and §3).

The card lists JSON-RPC and HTTP+JSON interfaces (upper-case bindings, ``protocolVersion``
"1.0"), an ``oauth2`` security scheme pointing at the token service (token endpoint and
RFC 8414 metadata URL), per-skill security requirements, and our delegation extension in
``capabilities.extensions``. A2A skills have no schema field, so the extension's
``params`` carry the JSON Schemas of each skill's input and output, the declared
dependencies and the token service.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keycard_agents._a2a.types import (
    A2A_PROTOCOL_VERSION,
    AgentCapabilities,
    AgentCard,
    AgentExtension,
    AgentInterface,
    AgentSkill,
    ClientCredentialsOAuthFlow,
    OAuth2SecurityScheme,
    OAuthFlows,
    ProtocolBinding,
    SecurityRequirement,
    SecurityScheme,
    StringList,
)
from keycard_agents._agent._agent import Agent, Skill
from keycard_agents._errors import ConfigurationError
from keycard_agents._oauth._urls import authorization_server_metadata_url

__all__ = [
    "DELEGATION_EXTENSION_URI",
    "SECURITY_SCHEME_NAME",
    "build_agent_card",
    "delegation_extension_params",
    "protected_resource_metadata",
]

DELEGATION_EXTENSION_URI = "https://keycard-agents.dev/extensions/delegation/v1"
SECURITY_SCHEME_NAME = "keycard"


def _all_scopes(agent: Agent) -> list[str]:
    scopes: dict[str, None] = {}
    for skill in agent.skills.values():
        scopes.update(dict.fromkeys(skill.scopes))
    return list(scopes)


def chain_scopes(agent: Agent) -> list[str]:
    """What a caller's token needs for the whole chain: the skills' scopes, then the
    scopes the agent delegates to its dependencies.

    A delegated token's scopes are a subset of the subject token's (RFC 8693 §2.1, our
    profile), so a user token without a dependency's scopes fails at the first exchange;
    RFC 9728 ``scopes_supported`` lists them all so a client can request them at sign-in.
    """
    scopes = dict.fromkeys(_all_scopes(agent))
    for dependency in agent.dependencies:
        scopes.update(dict.fromkeys(dependency.scopes))
    return list(scopes)


def _token_service(
    agent: Agent,
    issuer: str | None,
    token_endpoint: str | None,
    metadata_url: str | None,
) -> dict[str, str] | None:
    issuer = issuer or agent.issuer
    if issuer is None:
        return None
    token_endpoint = token_endpoint or agent.token_endpoint
    if token_endpoint is None:
        raise ConfigurationError(
            "the agent card needs the token service's token endpoint: pass token_endpoint",
            setting="token_endpoint",
        )
    metadata_url = metadata_url or agent.metadata_url or authorization_server_metadata_url(issuer)
    return {"issuer": issuer, "tokenEndpoint": token_endpoint, "metadataUrl": metadata_url}


def visible_skills(agent: Agent, viewer_scopes: frozenset[str] | None) -> list[Skill]:
    """The skills a card shows: all but ``extended`` ones on the public card
    (``viewer_scopes`` ``None``); on an authenticated caller's extended card, also the
    extended skills whose scopes the caller's token holds."""
    return [
        s
        for s in agent.skills.values()
        if not s.extended or (viewer_scopes is not None and set(s.scopes) <= viewer_scopes)
    ]


def delegation_extension_params(
    agent: Agent,
    *,
    token_service: dict[str, str] | None = None,
    skills: Sequence[Skill] | None = None,
) -> dict[str, Any]:
    """The ``params`` of our delegation extension (see ``protocols/`` for its schema)."""
    shown = visible_skills(agent, None) if skills is None else skills
    params: dict[str, Any] = {
        "dependencies": [d.to_params() for d in agent.dependencies],
        "skills": {
            s.id: {
                "inputSchema": s.input_schema(),
                "outputSchema": s.output_schema(),
                "scopes": list(s.scopes),
                "anonymous": s.anonymous,
            }
            for s in shown
        },
    }
    if token_service is not None:
        params["tokenService"] = token_service
    return params


def _skill_card(skill: Skill, secured: bool) -> AgentSkill:
    requirements: list[SecurityRequirement] | None = None
    if secured:
        requirements = [
            SecurityRequirement(schemes={})
            if skill.anonymous
            else SecurityRequirement(schemes={SECURITY_SCHEME_NAME: StringList.of(skill.scopes)})
        ]
    return AgentSkill(
        id=skill.id,
        name=skill.name,
        description=skill.description,
        tags=list(skill.tags),
        examples=list(skill.examples) or None,
        input_modes=list(skill.input_modes),
        output_modes=list(skill.output_modes),
        security_requirements=requirements,
    )


def build_agent_card(
    agent: Agent,
    *,
    base_url: str | None = None,
    issuer: str | None = None,
    token_endpoint: str | None = None,
    metadata_url: str | None = None,
    streaming: bool = True,
    extended_agent_card: bool = False,
    viewer_scopes: frozenset[str] | None = None,
    push_notifications: bool = False,
) -> AgentCard:
    """The A2A 1.0 Agent Card for ``agent``.

    Skills declared ``@skill(extended=True)`` are left out, except on an extended card
    built for a caller (``viewer_scopes``: its token's scopes) that holds their scopes;
    an agent with such skills offers the extended card.

    ``base_url`` defaults to ``agent.url``; the token service settings default to the
    agent's own (``issuer``, ``token_endpoint``, ``metadata_url``). Without an issuer the
    card has no security schemes (an agent whose skills are all anonymous).
    """
    url = (base_url or agent.url or "").rstrip("/")
    if not url:
        raise ConfigurationError(
            "the agent card needs the agent's URL: pass Agent(url=...) or base_url",
            setting="url",
        )
    token_service = _token_service(agent, issuer, token_endpoint, metadata_url)
    shown = visible_skills(agent, viewer_scopes)
    extended_agent_card = extended_agent_card or any(s.extended for s in agent.skills.values())
    security_schemes: dict[str, SecurityScheme] | None = None
    security_requirements: list[SecurityRequirement] | None = None
    if token_service is not None:
        scheme = OAuth2SecurityScheme(
            description=(
                "Bearer access tokens (RFC 9068) issued by the token service for this "
                "agent's URL as audience; agents obtain them by RFC 8693 token exchange."
            ),
            flows=OAuthFlows(
                client_credentials=ClientCredentialsOAuthFlow(
                    token_url=token_service["tokenEndpoint"],
                    scopes={
                        scope: f"Required by a skill of {agent.agent_name}"
                        for scope in _all_scopes(agent)
                    },
                )
            ),
            oauth2_metadata_url=token_service["metadataUrl"],
        )
        security_schemes = {SECURITY_SCHEME_NAME: SecurityScheme(oauth2_security_scheme=scheme)}
        if not any(s.anonymous for s in agent.skills.values()):
            security_requirements = [
                SecurityRequirement(schemes={SECURITY_SCHEME_NAME: StringList.of([])})
            ]
    extension = AgentExtension(
        uri=DELEGATION_EXTENSION_URI,
        description=(
            "keycard-agents delegation: calls carry RFC 8693 delegated tokens with nested "
            "act claims; params list the token service, dependencies and skill schemas."
        ),
        required=False,
        params=delegation_extension_params(agent, token_service=token_service, skills=shown),
    )
    return AgentCard(
        name=agent.agent_name,
        description=agent.agent_description,
        supported_interfaces=[
            AgentInterface(
                url=url,
                protocol_binding=ProtocolBinding.JSONRPC,
                protocol_version=A2A_PROTOCOL_VERSION,
            ),
            AgentInterface(
                url=url,
                protocol_binding=ProtocolBinding.HTTP_JSON,
                protocol_version=A2A_PROTOCOL_VERSION,
            ),
        ],
        version=agent.version,
        provider=agent.provider,
        documentation_url=agent.documentation_url,
        icon_url=agent.icon_url,
        capabilities=AgentCapabilities(
            streaming=streaming,
            push_notifications=push_notifications,
            extended_agent_card=extended_agent_card,
            extensions=[extension, *agent.extensions],
        ),
        security_schemes=security_schemes,
        security_requirements=security_requirements,
        default_input_modes=list(agent.default_input_modes),
        default_output_modes=list(agent.default_output_modes),
        skills=[_skill_card(s, token_service is not None) for s in shown],
    )


def protected_resource_metadata(
    agent: Agent,
    *,
    resource: str | None = None,
    authorization_servers: Sequence[str] | None = None,
) -> dict[str, Any]:
    """RFC 9728 §2 metadata for the agent as a protected resource.

    ``resource`` defaults to ``agent.url``, ``authorization_servers`` to ``[agent.issuer]``;
    ``scopes_supported`` is :func:`chain_scopes` (what a caller needs for the whole chain).
    """
    resource = resource or agent.url
    if not resource:
        raise ConfigurationError(
            "protected resource metadata needs the agent's URL: pass Agent(url=...)",
            setting="url",
        )
    if authorization_servers is None:
        authorization_servers = [agent.issuer] if agent.issuer else []
    metadata: dict[str, Any] = {
        "resource": resource,
        "authorization_servers": list(authorization_servers),
        "scopes_supported": chain_scopes(agent),
        "bearer_methods_supported": ["header"],
        "resource_name": agent.agent_name,
    }
    if agent.documentation_url:
        metadata["resource_documentation"] = agent.documentation_url
    return metadata
