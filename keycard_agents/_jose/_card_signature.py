"""Agent Card signatures (A2A 1.0 §8.4 ``AgentCardSignature``; RFC 7515 JWS, RFC 8785 JCS).

The signed content is the card without its ``signatures`` member, in the form the
official A2A SDKs verify (ProtoJSON, so a plain boolean at ``false`` is omitted; empty
strings, lists and objects removed), canonicalized with RFC 8785. Each signature is a
JWS with a detached payload (RFC 7515 Appendix F): its ``protected`` header (``alg``,
``kid``, ``typ: JOSE`` and ``jku``, the agent's JWK Set) and its ``signature``, both
base64url. A verifier rebuilds the signing input from the
card it received, so any change to the card after signing fails verification.

Clients choose a policy: ``require`` (refuse an unsigned card or one whose signatures
all fail), ``verify-if-present`` (refuse only a signed card that fails) or ``ignore``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any, Literal

from joserfc import jws
from joserfc.errors import JoseError

from keycard_agents._a2a.errors import InvalidAgentResponseError
from keycard_agents._jose._jcs import canonicalize
from keycard_agents._jose._keys import (
    ALGORITHMS,
    SigningKey,
    VerificationKeys,
    jws_registry,
    show_untrusted,
)

__all__ = [
    "CARD_SIGNATURE_POLICIES",
    "CardSignatureError",
    "CardSignaturePolicy",
    "detached_signature",
    "sign_card",
    "verify_card",
]

CardSignaturePolicy = Literal["require", "verify-if-present", "ignore"]
CARD_SIGNATURE_POLICIES: tuple[str, ...] = ("require", "verify-if-present", "ignore")
_MAX_SIGNATURES = 8


class CardSignatureError(InvalidAgentResponseError):
    """An agent card's signature is missing (under ``require``) or does not verify."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _without_empty(value: Any) -> Any:
    """Drop empty strings, lists and objects, recursively (``None`` when all is empty)."""
    if isinstance(value, dict):
        kept = {k: c for k, v in value.items() if (c := _without_empty(v)) is not None}
        return kept or None
    if isinstance(value, list):
        items = [c for v in value if (c := _without_empty(v)) is not None]
        return items or None
    if isinstance(value, str) and not value:
        return None
    return value


def _proto_defaults_omitted(card: dict[str, Any]) -> dict[str, Any]:
    """The card as ProtoJSON shows it: the two plain (presence-less) scalars of the card's
    schema are omitted at their default, ``false``."""
    capabilities = card.get("capabilities")
    if isinstance(capabilities, dict) and isinstance(capabilities.get("extensions"), list):
        extensions = [
            {k: v for k, v in e.items() if not (k == "required" and v is False)}
            if isinstance(e, dict)
            else e
            for e in capabilities["extensions"]
        ]
        card = {**card, "capabilities": {**capabilities, "extensions": extensions}}
    schemes = card.get("securitySchemes")
    if isinstance(schemes, dict):
        cleaned: dict[str, Any] = {}
        for name, scheme in schemes.items():
            flow = (
                scheme.get("oauth2SecurityScheme", {}).get("flows", {}).get("authorizationCode")
                if isinstance(scheme, dict)
                else None
            )
            if isinstance(flow, dict) and flow.get("pkceRequired") is False:
                oauth2 = scheme["oauth2SecurityScheme"]
                flows = {
                    **oauth2["flows"],
                    "authorizationCode": {k: v for k, v in flow.items() if k != "pkceRequired"},
                }
                scheme = {**scheme, "oauth2SecurityScheme": {**oauth2, "flows": flows}}
            cleaned[name] = scheme
        card = {**card, "securitySchemes": cleaned}
    return card


def _signed_content(card: Mapping[str, Any]) -> bytes:
    """What a signature covers (the form A2A SDKs verify): the card without
    ``signatures``, proto defaults and empty strings, lists and objects left out,
    canonicalized with RFC 8785."""
    body = _proto_defaults_omitted({k: v for k, v in card.items() if k != "signatures"})
    return canonicalize(_without_empty(body) or {})


def detached_signature(content: bytes, key: SigningKey, *, jku: str | None) -> dict[str, str]:
    """A card's ``signatures`` entry: a JWS of ``content`` by ``key`` with the payload
    detached (``protected`` and ``signature``; a verifier recomputes the content)."""
    header: dict[str, Any] = {"alg": key.alg, "kid": key.kid, "typ": "JOSE"}
    if jku:
        header["jku"] = jku
    compact = jws.serialize_compact(header, content, key.key, registry=jws_registry((key.alg,)))
    protected, _, signature = compact.split(".")
    return {"protected": protected, "signature": signature}


def sign_card(
    card: Mapping[str, Any], key: SigningKey, *, jku: str | None = None
) -> dict[str, Any]:
    """``card`` (JSON data) with a signature by ``key`` added to its ``signatures``."""
    previous = [s for s in card.get("signatures") or [] if isinstance(s, Mapping)]
    signature = detached_signature(_signed_content(card), key, jku=jku)
    return {**card, "signatures": [*previous, signature]}


def signature_key_urls(card: Mapping[str, Any]) -> list[str]:
    """The ``jku`` URLs the card's signatures name (unverified: check their origin)."""
    urls = []
    for entry in (card.get("signatures") or [])[:_MAX_SIGNATURES]:
        try:
            header = json.loads(_unb64(entry["protected"]))
        except (KeyError, TypeError, ValueError, binascii.Error):
            continue
        if isinstance(header, dict) and isinstance(header.get("jku"), str):
            urls.append(header["jku"])
    return urls


def verify_card(
    card: Mapping[str, Any], keys: VerificationKeys, *, policy: CardSignaturePolicy, where: str
) -> bool:
    """Check ``card``'s signatures against ``keys`` under ``policy``.

    Returns whether a signature verified; raises CardSignatureError when the policy
    refuses the card. One valid signature from a known key is enough.
    """
    signatures = card.get("signatures")
    if policy == "ignore":
        return False
    if not signatures:
        if policy == "require":
            raise CardSignatureError(
                f"the agent card at {where} is not signed, and this client requires signed "
                "cards (card_signatures='require')"
            )
        return False
    if not isinstance(signatures, list):
        raise CardSignatureError(f"the agent card at {where} has malformed signatures")
    content = _b64(_signed_content(card))
    problems: list[str] = []
    for index, entry in enumerate(signatures[:_MAX_SIGNATURES]):
        try:
            protected, signature = entry["protected"], entry["signature"]
            header = json.loads(_unb64(protected))
            alg, kid = header["alg"], header.get("kid")
            if alg not in ALGORITHMS:
                problems.append(f"signature {index}: algorithm {show_untrusted(alg)} not allowed")
                continue
            key = keys.find(issuer=where, kid=kid, alg=alg)
            jws.deserialize_compact(
                f"{protected}.{content}.{signature}", key, registry=jws_registry((alg,))
            )
            return True
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            problems.append(f"signature {index}: malformed ({type(exc).__name__})")
        except JoseError as exc:
            problems.append(f"signature {index}: does not verify ({type(exc).__name__})")
        except InvalidAgentResponseError:
            raise
        except Exception as exc:  # an unknown kid (InvalidTokenError) and the like
            problems.append(f"signature {index}: {type(exc).__name__}")
    raise CardSignatureError(
        f"the agent card at {where} failed signature verification: " + "; ".join(problems)
    )
