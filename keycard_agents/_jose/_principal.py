"""The verified identity behind a request: the user and the chain of agents acting.

Implements the reading side of RFC 8693 §4.1 (``act``: the outermost actor is the
current one, nested ``act`` claims are earlier actors), the claims of RFC 9068
(JWT access tokens) that an agent authorizes on, and the user's origin from an RFC 9493
§3.2.5 ``iss_sub`` subject identifier in ``sub_id``: a user is (origin issuer, ``sub``),
never ``sub`` alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from typing import Any, overload

__all__ = ["Actor", "ActorChain", "Principal", "UserId"]


class UserId(str):
    """A user as (origin issuer, ``sub``): the text is ``sub``, the identity is both.

    Two users with the same ``sub`` from different issuers are different users, so a
    ``UserId`` is equal only to a ``UserId`` of the same issuer and subject (and hashes
    accordingly), never to a bare string: compare ``user.sub`` and ``user.issuer`` to
    test for a name. It formats, prints and serializes to JSON as the bare ``sub``.
    """

    issuer: str

    def __new__(cls, sub: str, *, issuer: str) -> UserId:
        self = super().__new__(cls, sub)
        self.issuer = issuer
        return self

    @property
    def sub(self) -> str:
        """The subject, as the origin issuer names the user."""
        return str.__str__(self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, UserId):
            return self.issuer == other.issuer and self.sub == other.sub
        return False

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((self.issuer, self.sub))

    def __repr__(self) -> str:
        return f"UserId({self.sub!r}, issuer={self.issuer!r})"

    def __getnewargs_ex__(self) -> tuple[tuple[str], dict[str, str]]:
        return (self.sub,), {"issuer": self.issuer}


@dataclass(frozen=True)
class Actor:
    """One agent that acted in a delegation chain (one level of ``act``)."""

    sub: str
    iss: str | None = None
    client_id: str | None = None

    def __str__(self) -> str:
        return self.sub


class ActorChain(Sequence[Actor]):
    """The actors of a token, current (outermost ``act``) first, then earlier ones."""

    __slots__ = ("_actors",)

    def __init__(self, actors: Sequence[Actor] = ()) -> None:
        self._actors = tuple(actors)

    @classmethod
    def from_act_claim(cls, act: Mapping[str, Any] | None) -> ActorChain:
        """Flatten a nested ``act`` claim. The claim must already be validated."""
        actors: list[Actor] = []
        node = act
        while node is not None:
            actors.append(
                Actor(
                    sub=str(node["sub"]),
                    iss=node.get("iss"),
                    client_id=node.get("client_id"),
                )
            )
            node = node.get("act")
        return cls(actors)

    def to_act_claim(self) -> dict[str, Any] | None:
        """Build the nested ``act`` claim for this chain (``None`` when empty)."""
        claim: dict[str, Any] | None = None
        for actor in reversed(self._actors):
            node: dict[str, Any] = {"sub": actor.sub}
            if actor.iss is not None:
                node["iss"] = actor.iss
            if actor.client_id is not None:
                node["client_id"] = actor.client_id
            if claim is not None:
                node["act"] = claim
            claim = node
        return claim

    @property
    def current(self) -> Actor | None:
        """The agent acting now, or ``None`` when the user calls directly."""
        return self._actors[0] if self._actors else None

    @property
    def depth(self) -> int:
        return len(self._actors)

    def subjects(self) -> tuple[str, ...]:
        """Actor subjects, current first."""
        return tuple(a.sub for a in self._actors)

    @overload
    def __getitem__(self, index: int) -> Actor: ...
    @overload
    def __getitem__(self, index: slice) -> ActorChain: ...
    def __getitem__(self, index: int | slice) -> Actor | ActorChain:
        if isinstance(index, slice):
            return ActorChain(self._actors[index])
        return self._actors[index]

    def __len__(self) -> int:
        return len(self._actors)

    def __iter__(self) -> Iterator[Actor]:
        return iter(self._actors)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ActorChain):
            return self._actors == other._actors
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._actors)

    def __repr__(self) -> str:
        return f"ActorChain({list(self.subjects())!r})"


def _utc(ts: int | float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc)


@dataclass(frozen=True)
class Principal:
    """A verified access token: who the user is and which agents act for them.

    Authorize on the top-level claims (``user``, ``scopes``, ``audience``) and on
    ``actors.current`` only; earlier actors are evidence for audit.
    Holds claims, never the token itself.

    ``user`` is the ``sub`` claim; ``origin`` the issuer the user came from (the
    ``iss`` of an ``iss_sub`` ``sub_id``, else the token's own ``iss``). Key anything
    per user on :attr:`user_id`, which is both.
    """

    user: str
    issuer: str
    audience: tuple[str, ...]
    scopes: frozenset[str]
    actors: ActorChain = field(default_factory=ActorChain)
    client_id: str | None = None
    txn: str | None = None
    jti: str | None = None
    expires_at: int | None = None
    issued_at: int | None = None
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    origin: str = ""

    def __post_init__(self) -> None:
        if not self.origin:
            object.__setattr__(self, "origin", self.issuer)

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> Principal:
        """Build from claims that have already been verified and validated."""
        aud = claims.get("aud")
        audience = (aud,) if isinstance(aud, str) else tuple(aud or ())
        scope = claims.get("scope") or ""
        sub_id = claims.get("sub_id")
        origin = str(claims["iss"])
        if isinstance(sub_id, Mapping) and sub_id.get("format") == "iss_sub":
            origin = str(sub_id["iss"])
        return cls(
            user=str(claims["sub"]),
            issuer=str(claims["iss"]),
            audience=audience,
            scopes=frozenset(scope.split()),
            actors=ActorChain.from_act_claim(claims.get("act")),
            client_id=claims.get("client_id"),
            txn=claims.get("txn"),
            jti=claims.get("jti"),
            expires_at=claims.get("exp"),
            issued_at=claims.get("iat"),
            claims=dict(claims),
            origin=origin,
        )

    @property
    def user_id(self) -> UserId:
        """The user as (origin issuer, ``sub``)."""
        return UserId(self.user, issuer=self.origin)

    @cached_property  # a cached Principal (a token seen again) computes it once
    def task_owner(self) -> str:
        """Who this principal is for task ownership: the user with its origin and the
        actor chain (each actor with its issuer), as one canonical string."""
        actors = [[a.sub, a.iss or ""] for a in self.actors]
        return json.dumps([self.origin, self.user, actors], separators=(",", ":"))

    @property
    def expires(self) -> datetime | None:
        return _utc(self.expires_at)

    @property
    def chain(self) -> tuple[str, ...]:
        """The path in call order: user, then each actor from first to current."""
        return (self.user, *reversed(self.actors.subjects()))

    def render_chain(self, *, receiver: str | None = None, arrow: str = " → ") -> str:
        """``alice → planner``: the user, then actors in the order they acted.

        Pass ``receiver`` (the agent holding this token) to end the path with it:
        ``alice → planner → calendar``.
        """
        path = self.chain if receiver is None else (*self.chain, receiver)
        return arrow.join(path)

    def has_scopes(self, required: Sequence[str] | frozenset[str]) -> bool:
        return set(required) <= self.scopes

    def __str__(self) -> str:
        return self.render_chain()
