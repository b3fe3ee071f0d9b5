"""Whether a verified token speaks for a user or only for a client.

RFC 9068 §2.2: for grants where no resource owner is involved, such as the client
credentials grant (RFC 6749 §4.4), ``sub`` SHOULD be the client's identifier. A token
whose ``sub`` is its own client (``client_id``, or the claim the issuer's token profile
names) and that carries no ``act`` therefore has no user behind it; so has a token with
the ``gty`` claim ``client-credentials`` some issuers add. Issuers that give a service
account a subject of its own (Keycloak) are not recognized here.
"""

from __future__ import annotations

from keycard_agents._jose._principal import Principal

__all__ = ["subject_is_client"]

_CLIENT_GRANTS = frozenset({"client-credentials", "client_credentials"})


def subject_is_client(principal: Principal) -> bool:
    """True when ``principal`` is a client acting for itself (no user, no delegation)."""
    if principal.claims.get("gty") in _CLIENT_GRANTS:
        return True
    return (
        not principal.actors
        and principal.client_id is not None
        and (principal.user == principal.client_id)
    )
