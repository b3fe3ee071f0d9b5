"""Delegation policy for token exchange: protocols/delegation-profile.md §5, checks 3 to 6.

RFC 8693 §1.1 / §4.1 (``act`` chains: the new actor wraps the subject's chain),
§4.4 (``may_act`` names who may act first), §2.2.2 (a subject token the policy refuses
is unacceptable: ``invalid_request``; ``invalid_target``, ``invalid_scope``), RFC 8707 §2
(exactly one target), RFC 6749 §3.3 (scope narrowing), RFC 9493 §3.2.5 / §4 (the
``iss_sub`` ``sub_id`` that records which issuer the user came from). Pure functions over
already verified claims: easy to test, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from keycard_agents._errors import DelegationDeniedError, OAuthError
from keycard_agents._jose._principal import Actor, ActorChain
from keycard_agents._sts._config import RegisteredAgent, TokenServiceConfig

__all__ = [
    "check_audience",
    "check_chain",
    "check_first_hop",
    "check_target",
    "narrow_scopes",
    "parse_scope",
    "subject_audience",
    "subject_identifier",
]


def parse_scope(value: object) -> tuple[str, ...]:
    """Space-separated scope string to an ordered tuple without duplicates."""
    if not isinstance(value, str):
        return ()
    return tuple(dict.fromkeys(value.split()))


def _show(value: object, limit: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_audience(claims: Mapping[str, Any], agent: RegisteredAgent) -> None:
    """Audience chaining: the subject token must be addressed to this agent alone."""
    aud = claims.get("aud")
    if isinstance(aud, list) and len(aud) == 1:
        aud = aud[0]
    if isinstance(aud, str) and aud in agent.all_resources:
        return
    raise DelegationDeniedError(
        "invalid_request",
        f"subject_token is addressed to {_show(aud)}, not to agent {agent.client_id!r} "
        f"({', '.join(agent.all_resources)}): an agent may only exchange tokens that were "
        "sent to it",
    )


def subject_audience(unverified: Mapping[str, Any], agent: RegisteredAgent) -> str:
    """Which of the agent's resources to verify a subject token's audience against.

    An agent may have several resources (its A2A and MCP endpoints); the token's own
    ``aud`` picks one only when it is one of them, and the verification then checks it.
    """
    aud = unverified.get("aud")
    if isinstance(aud, list) and len(aud) == 1:
        aud = aud[0]
    return aud if isinstance(aud, str) and aud in agent.all_resources else agent.resource


def subject_identifier(claims: Mapping[str, Any], issuer: str) -> dict[str, Any]:
    """The ``sub_id`` to put in a delegated token: where the user came from (RFC 9493).

    A subject token of this service keeps its ``sub_id`` unchanged (the verifier checked
    that it names the same ``sub``); one without is a user of this service. A token of a
    trusted external issuer names its own user: its origin is its ``iss``, and it may
    neither claim another issuer's user nor bring actors of its own (only this service
    records actors, after checking ``may_act_first`` and the dependencies).
    """
    sub, token_issuer = str(claims["sub"]), str(claims["iss"])
    sub_id = claims.get("sub_id")
    iss_sub = isinstance(sub_id, Mapping) and sub_id.get("format") == "iss_sub"
    if token_issuer == issuer:
        if iss_sub:
            assert isinstance(sub_id, Mapping)
            return dict(sub_id)
        return {"format": "iss_sub", "iss": issuer, "sub": sub}
    if claims.get("act") is not None:
        raise DelegationDeniedError(
            "invalid_request",
            f"subject_token of external issuer {_show(token_issuer)} carries an 'act' claim: "
            "only this token service records actors; exchange the user's own token, "
            "without act",
        )
    if iss_sub:
        assert isinstance(sub_id, Mapping)
        if sub_id.get("iss") != token_issuer:
            raise DelegationDeniedError(
                "invalid_request",
                f"subject_token of issuer {_show(token_issuer)} claims a user of issuer "
                f"{_show(sub_id.get('iss'))} (sub_id): an issuer may only name its own users",
            )
    return {"format": "iss_sub", "iss": token_issuer, "sub": sub}


def check_first_hop(claims: Mapping[str, Any], agent: RegisteredAgent) -> None:
    """On the first hop (no ``act`` yet): ``may_act`` and ``may_act_first`` allow this agent."""
    if claims.get("act") is not None:
        return
    if not agent.may_act_first:
        raise DelegationDeniedError(
            "unauthorized_client",
            f"agent {agent.client_id!r} may not act first on a user's token: set "
            f"agents[{agent.client_id}].may_act_first = true or route through another agent",
        )
    may_act = claims.get("may_act")
    if may_act is None:
        return
    if not isinstance(may_act, Mapping) or not isinstance(may_act.get("sub"), str):
        raise DelegationDeniedError(
            "invalid_request", "subject_token has a malformed 'may_act' claim (RFC 8693 §4.4)"
        )
    if may_act["sub"] != agent.client_id:
        raise DelegationDeniedError(
            "invalid_request",
            f"subject_token allows only {_show(may_act['sub'])} to act for the user "
            f"(may_act), not agent {agent.client_id!r}: sign in for {agent.resource} instead",
        )


def check_target(
    config: TokenServiceConfig, agent: RegisteredAgent, resources: Sequence[str]
) -> tuple[str, tuple[str, ...]]:
    """Exactly one registered, declared target; returns it and the scopes it accepts."""
    if not resources:
        raise OAuthError(
            "invalid_request",
            "missing 'resource': send the target's URL (RFC 8707), or its name in 'audience'",
        )
    if len(resources) > 1:
        raise DelegationDeniedError(
            "invalid_target",
            f"{len(resources)} resources requested: exchange for exactly one target per request",
        )
    target = resources[0]
    accepted = config.accepted_scopes(target)
    if accepted is None:
        raise DelegationDeniedError(
            "invalid_target",
            f"unknown resource {_show(target)}: register it under [[agents]] or [[resources]]",
        )
    if target not in agent.dependencies:
        raise DelegationDeniedError(
            "invalid_target",
            f"agent {agent.client_id!r} may not call {target!r}: add it to "
            f"agents[{agent.client_id}].dependencies",
        )
    return target, accepted


def check_chain(
    config: TokenServiceConfig,
    claims: Mapping[str, Any],
    agent: RegisteredAgent,
    issuer: str,
    *,
    target: str | None = None,
) -> ActorChain:
    """The resulting actor chain (current first), within depth and repetition limits.

    Without ``allow_repeated_agents`` no agent may appear twice in the path user → actors
    → target: neither the requesting agent among earlier actors, nor the target agent
    among the actors (A → B → A is a loop whether or not A acts again).
    """
    previous = ActorChain.from_act_claim(claims.get("act"))
    if agent.client_id in previous.subjects() and not config.allow_repeated_agents:
        raise DelegationDeniedError(
            "invalid_request",
            f"agent {agent.client_id!r} already acted in this chain "
            f"({' → '.join(reversed(previous.subjects()))}); loops are refused unless "
            "allow_repeated_agents = true",
        )

    chain = ActorChain((Actor(sub=agent.client_id, iss=issuer), *previous))
    receiver = None if target is None else config.agent_for_resource(target)
    if (
        receiver is not None
        and receiver.client_id in chain.subjects()
        and not config.allow_repeated_agents
    ):
        path = " → ".join((*reversed(chain.subjects()), receiver.client_id))
        # RFC 8693 §2.2.2: a target the service is unwilling to issue for: invalid_target.
        raise DelegationDeniedError(
            "invalid_target",
            f"the chain {path} comes back to agent {receiver.client_id!r}; loops are refused "
            "unless allow_repeated_agents = true",
        )
    if chain.depth > config.max_chain_depth:
        raise DelegationDeniedError(
            "invalid_request",
            f"the delegation chain would be {chain.depth} agents deep; max_chain_depth is "
            f"{config.max_chain_depth}: shorten the chain or raise max_chain_depth",
        )
    return chain


def narrow_scopes(
    requested: str | None, subject_scopes: Sequence[str], accepted: Sequence[str], target: str
) -> tuple[str, ...]:
    """requested ⊆ (subject ∩ accepted); default: the whole intersection; never empty."""
    allowed = tuple(s for s in subject_scopes if s in accepted)
    if requested is None:
        if not allowed:
            raise DelegationDeniedError(
                "invalid_scope",
                f"the subject token's scopes ({' '.join(subject_scopes) or 'none'}) share "
                f"nothing with what {target} accepts ({' '.join(accepted) or 'none'})",
            )
        return allowed
    wanted = parse_scope(requested)
    if not wanted:
        raise OAuthError("invalid_request", "scope is empty: omit it or name at least one scope")
    extra = [s for s in wanted if s not in allowed]
    if extra:
        missing = [s for s in extra if s not in subject_scopes]
        refused = [s for s in extra if s not in accepted]
        if refused:
            remedy = (
                f"{target} does not accept {' '.join(refused)!r}: register the scope for it "
                "(resources[].scopes or the target agent's scopes) or stop requesting it"
            )
        else:
            remedy = (
                f"the user's token does not carry {' '.join(missing)!r}: the client must "
                "request it when the user signs in (the first agent's RFC 9728 "
                "scopes_supported lists what the whole chain needs)"
            )
        raise DelegationDeniedError(
            "invalid_scope",
            f"scope {' '.join(extra)!r} exceeds what may be delegated to {target} "
            f"(subject token scopes ∩ accepted = {' '.join(allowed) or 'none'}): {remedy}",
        )
    return wanted
