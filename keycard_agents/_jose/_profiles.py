"""What a trusted issuer's access tokens look like: its token profile.

The default is RFC 9068 (JWT access tokens): header ``typ`` ``at+jwt`` (§2.1, the explicit
typing of RFC 8725 §3.11), a ``jti`` in every token (§2.2) and the client in
``client_id`` (§2.2). Our own token service issues exactly that, and receivers hold every
issuer to it unless the issuer is configured with another profile. Issuers that predate
RFC 9068 differ: Keycloak access tokens carry ``typ`` ``JWT``, name the client in ``azp``
(OpenID Connect Core §2) and may lack ``jti``.

Relaxing a profile weakens a specific check, per issuer, and nothing else:

* ``token_types`` other than ``at+jwt`` give up explicit typing for that issuer: any JWT it
  signs with the same key and ``typ`` (an ID token, a logout token) is only told apart from
  an access token by its other claims (``aud`` must still be this resource). ``None`` in
  ``token_types`` accepts a token without ``typ`` at all.
* ``require_jti=False`` accepts tokens without ``jti``: such a token cannot be told apart
  from another one in audit records and cannot be revoked by id.
* ``client_claim`` only says where the client is named; it is evidence, not a check.

Signature, algorithm allow-list, issuer, audience, lifetime, size and ``act`` checks are
never relaxed.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_PROFILE", "TokenProfile", "accepted_types", "normalize_typ"]

_REQUIRED_RFC9068 = ("iss", "sub", "aud", "exp", "iat", "jti")


def normalize_typ(value: str) -> str:
    """Media types compare case-insensitively, with or without ``application/``."""
    value = value.lower()
    return value[len("application/") :] if value.startswith("application/") else value


@dataclass(frozen=True)
class TokenProfile:
    """The shape of one issuer's access tokens; the default is RFC 9068.

    ``token_types``: accepted JOSE ``typ`` values (``None`` for no ``typ`` header);
    ``require_jti``: whether every token must carry ``jti``; ``client_claim``: the claim
    naming the client the token was issued to (``client_id``, or ``azp`` for Keycloak).
    """

    token_types: tuple[str | None, ...] = ("at+jwt",)
    require_jti: bool = True
    client_claim: str = "client_id"
    _normalized: frozenset[str | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        types = self.token_types
        if isinstance(types, str) or not types:
            raise ValueError("token_types must be a non-empty sequence of typ values (or None)")
        if not self.client_claim:
            raise ValueError("client_claim must name a claim")
        normalized = frozenset(None if t is None else normalize_typ(t) for t in types)
        object.__setattr__(self, "_normalized", normalized)

    @property
    def strict(self) -> bool:
        """True for the RFC 9068 default (nothing relaxed)."""
        return self._normalized == {"at+jwt"} and self.require_jti

    def accepts_typ(self, typ: object) -> bool:
        if typ is None:
            return None in self._normalized
        return isinstance(typ, str) and normalize_typ(typ) in self._normalized

    def required_claims(self, base: Iterable[str] = _REQUIRED_RFC9068) -> tuple[str, ...]:
        return tuple(c for c in base if c != "jti" or self.require_jti)

    def client_of(self, claims: Mapping[str, Any]) -> str | None:
        value = claims.get(self.client_claim)
        return value if isinstance(value, str) else None

    def describe_types(self) -> str:
        return " or ".join(
            "no 'typ'" if t is None else repr(t)
            for t in sorted(self._normalized, key=lambda t: t or "")
        )


DEFAULT_PROFILE = TokenProfile()


def accepted_types(profiles: Collection[TokenProfile]) -> frozenset[str | None]:
    """Every ``typ`` some profile accepts (the first, issuer-independent type check)."""
    accepted: set[str | None] = set()
    for profile in profiles:
        accepted |= profile._normalized
    return frozenset(accepted)
