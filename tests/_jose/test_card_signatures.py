"""Agent card signatures (A2A 1.0 §8.4) and their 0.3 form, at the module level.

What is signed (the card without ``signatures``, ProtoJSON defaults and empty members left
out, RFC 8785), the detached JWS and its header, and every way ``verify_card`` refuses a
card under each policy, with the reason it gives.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from joserfc import jws

from keycard_agents._jose._card_signature import (
    _signed_content,
    sign_card,
    signature_key_urls,
    verify_card,
)
from keycard_agents._jose._card_signature03 import sign_card_v03, signed_content_v03
from keycard_agents._jose._jcs import canonicalize
from keycard_agents._jose._keys import SigningKey, VerificationKeys, jws_registry
from keycard_agents.a2a import CardSignatureError

JKU = "https://agent.test/.well-known/jwks.json"
WHERE = "https://agent.test/.well-known/agent-card.json"


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate("ES256")


@pytest.fixture(scope="module")
def ed_key() -> SigningKey:
    return SigningKey.generate("EdDSA")


def keys_of(*signers: SigningKey) -> VerificationKeys:
    return VerificationKeys.from_jwks({"keys": [k.public_jwk() for k in signers]})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def header_of(signature: dict[str, Any]) -> Any:
    protected = signature["protected"]
    return json.loads(base64.urlsafe_b64decode(protected + "=" * (-len(protected) % 4)))


def verifies_over(signature: dict[str, Any], content: bytes, signer: SigningKey) -> bool:
    """Check a detached signature independently of the module under test."""
    compact = f"{signature['protected']}.{b64(content)}.{signature['signature']}"
    try:
        jws.deserialize_compact(compact, signer.key, registry=jws_registry((signer.alg,)))
    except Exception:
        return False
    return True


AUTH_CODE = {"authorizationUrl": "https://sts.test/authorize", "tokenUrl": "https://sts.test/t"}
CARD: dict[str, Any] = {
    "name": "echo",
    "description": "",
    "version": "1.0.0",
    "skills": [],
    "defaultInputModes": ["text/plain", ""],
    "nested": {"empty": {}, "list": [], "text": ""},
    "capabilities": {
        "streaming": False,
        "extensions": [
            {"uri": "urn:a", "required": False},
            {"uri": "urn:b", "required": True},
            {"uri": "urn:c", "required": 0},
            "not-an-object",
        ],
    },
    "securitySchemes": {
        "code": {
            "description": "sign-in",
            "oauth2SecurityScheme": {
                "oauth2MetadataUrl": "https://sts.test/.well-known/oauth-authorization-server",
                "flows": {
                    "authorizationCode": {**AUTH_CODE, "pkceRequired": False},
                    "clientCredentials": {"tokenUrl": "https://sts.test/t"},
                },
            },
        },
        "pkce": {
            "oauth2SecurityScheme": {
                "flows": {"authorizationCode": {**AUTH_CODE, "pkceRequired": True}}
            }
        },
        "machines": {
            "oauth2SecurityScheme": {"flows": {"clientCredentials": {"tokenUrl": "https://t"}}}
        },
        "noflows": {"oauth2SecurityScheme": {"description": "no flows"}},
        "bearer": {"httpAuthSecurityScheme": {"scheme": "Bearer"}},
        "odd": "not-an-object",
    },
    "signatures": [{"protected": "eyJ9", "signature": "AAAA"}],
}
# What a signature of CARD covers, written out by hand.
SIGNED: dict[str, Any] = {
    "name": "echo",
    "version": "1.0.0",
    "defaultInputModes": ["text/plain"],
    "capabilities": {
        "streaming": False,
        "extensions": [
            {"uri": "urn:a"},
            {"uri": "urn:b", "required": True},
            {"uri": "urn:c", "required": 0},
            "not-an-object",
        ],
    },
    "securitySchemes": {
        "code": {
            "description": "sign-in",
            "oauth2SecurityScheme": {
                "oauth2MetadataUrl": "https://sts.test/.well-known/oauth-authorization-server",
                "flows": {
                    "authorizationCode": AUTH_CODE,
                    "clientCredentials": {"tokenUrl": "https://sts.test/t"},
                },
            },
        },
        "pkce": {
            "oauth2SecurityScheme": {
                "flows": {"authorizationCode": {**AUTH_CODE, "pkceRequired": True}}
            }
        },
        "machines": {
            "oauth2SecurityScheme": {"flows": {"clientCredentials": {"tokenUrl": "https://t"}}}
        },
        "noflows": {"oauth2SecurityScheme": {"description": "no flows"}},
        "bearer": {"httpAuthSecurityScheme": {"scheme": "Bearer"}},
        "odd": "not-an-object",
    },
}


def test_signed_content_leaves_out_signatures_proto_defaults_and_empty_members() -> None:
    assert _signed_content(CARD) == canonicalize(SIGNED)
    # The input card is not changed on the way.
    assert CARD["capabilities"]["extensions"][0] == {"uri": "urn:a", "required": False}
    assert CARD["securitySchemes"]["code"]["oauth2SecurityScheme"]["flows"][
        "authorizationCode"
    ] == {**AUTH_CODE, "pkceRequired": False}


def test_signed_content_of_cards_without_the_optional_parts() -> None:
    assert _signed_content({"name": "a", "capabilities": {"streaming": True}}) == (
        b'{"capabilities":{"streaming":true},"name":"a"}'
    )
    assert _signed_content({"name": "a", "capabilities": "odd", "securitySchemes": []}) == (
        b'{"capabilities":"odd","name":"a"}'
    )
    assert _signed_content({"capabilities": {"extensions": "odd"}}) == (
        b'{"capabilities":{"extensions":"odd"}}'
    )
    # Nothing left at all: the empty object, not null.
    assert _signed_content({"description": "", "signatures": [{"x": 1}]}) == b"{}"


def test_sign_card_adds_a_detached_jws_over_the_signed_content(key: SigningKey) -> None:
    signed = sign_card(CARD, key, jku=JKU)
    assert {k: v for k, v in signed.items() if k != "signatures"} == {
        k: v for k, v in CARD.items() if k != "signatures"
    }
    previous, added = signed["signatures"]
    assert previous == CARD["signatures"][0]
    assert set(added) == {"protected", "signature"}
    assert header_of(added) == {"alg": "ES256", "kid": key.kid, "typ": "JOSE", "jku": JKU}
    assert verifies_over(added, canonicalize(SIGNED), key)
    assert not verifies_over(added, canonicalize({**SIGNED, "name": "other"}), key)


def test_sign_card_without_jku_and_with_junk_previous_signatures(ed_key: SigningKey) -> None:
    card = {"name": "a", "signatures": ["junk", {"protected": "p", "signature": "s"}]}
    signed = sign_card(card, ed_key)
    assert signed["signatures"][0] == {"protected": "p", "signature": "s"}
    assert len(signed["signatures"]) == 2
    assert header_of(signed["signatures"][1]) == {"alg": "EdDSA", "kid": ed_key.kid, "typ": "JOSE"}
    assert (
        sign_card({"name": "a"}, ed_key, jku="")["signatures"][0]["protected"]
        == (signed["signatures"][1]["protected"])
    )
    assert verifies_over(signed["signatures"][1], b'{"name":"a"}', ed_key)


def test_a_signed_card_verifies_under_each_checking_policy(key: SigningKey) -> None:
    signed = sign_card({k: v for k, v in CARD.items() if k != "signatures"}, key)
    keys = keys_of(key)
    assert verify_card(signed, keys, policy="require", where=WHERE) is True
    assert verify_card(signed, keys, policy="verify-if-present", where=WHERE) is True
    assert verify_card(signed, keys, policy="ignore", where=WHERE) is False
    # Member order and the dropped parts do not matter; any other change does.
    reordered = dict(reversed(list(signed.items())))
    assert verify_card({**reordered, "description": ""}, keys, policy="require", where=WHERE)
    with pytest.raises(CardSignatureError) as refused:
        verify_card({**signed, "version": "2"}, keys, policy="require", where=WHERE)
    assert str(refused.value) == (
        f"the agent card at {WHERE} failed signature verification: "
        "signature 0: does not verify (BadSignatureError)"
    )


def test_unsigned_cards(key: SigningKey) -> None:
    keys = keys_of(key)
    for unsigned in ({"name": "a"}, {"name": "a", "signatures": []}):
        assert verify_card(unsigned, keys, policy="verify-if-present", where=WHERE) is False
        assert verify_card(unsigned, keys, policy="ignore", where=WHERE) is False
        with pytest.raises(CardSignatureError) as refused:
            verify_card(unsigned, keys, policy="require", where=WHERE)
        assert str(refused.value) == (
            f"the agent card at {WHERE} is not signed, and this client requires signed "
            "cards (card_signatures='require')"
        )


def test_ignore_never_looks_at_the_signatures(key: SigningKey) -> None:
    for junk in ("junk", [{"protected": "!", "signature": "!"}], {"a": 1}):
        card = {"name": "a", "signatures": junk}
        assert verify_card(card, keys_of(key), policy="ignore", where=WHERE) is False


def test_signatures_that_are_not_a_list(key: SigningKey) -> None:
    for policy in ("require", "verify-if-present"):
        with pytest.raises(CardSignatureError) as refused:
            verify_card({"signatures": {"a": 1}}, keys_of(key), policy=policy, where=WHERE)
        assert str(refused.value) == f"the agent card at {WHERE} has malformed signatures"


def refusal(card: dict[str, Any], keys: VerificationKeys) -> str:
    with pytest.raises(CardSignatureError) as refused:
        verify_card(card, keys, policy="verify-if-present", where=WHERE)
    prefix = f"the agent card at {WHERE} failed signature verification: "
    text = str(refused.value)
    assert text.startswith(prefix)
    return text[len(prefix) :]


def test_each_bad_signature_is_reported_with_its_reason(
    key: SigningKey, ed_key: SigningKey
) -> None:
    card = sign_card({"name": "a"}, key)
    good = card["signatures"][0]
    hs256 = b64(json.dumps({"alg": "HS256", "kid": key.kid}).encode())
    entries = [
        {"protected": good["protected"]},  # no signature
        "not-an-object",
        {"protected": b64(b"not json"), "signature": good["signature"]},
        {"protected": hs256, "signature": good["signature"]},
        {"protected": good["protected"], "signature": b64(b"\x00" * 64)},
        sign_card({"name": "a"}, ed_key)["signatures"][0],  # a key we do not know
    ]
    assert refusal({"name": "a", "signatures": entries}, keys_of(key)) == (
        "signature 0: malformed (KeyError); signature 1: malformed (TypeError); "
        "signature 2: malformed (JSONDecodeError); signature 3: algorithm 'HS256' not allowed; "
        "signature 4: does not verify (BadSignatureError); signature 5: InvalidTokenError"
    )
    # One good signature among bad ones is enough.
    assert verify_card(
        {"name": "a", "signatures": [*entries, good]}, keys_of(key), policy="require", where=WHERE
    )


def test_a_signature_without_kid_uses_the_only_fitting_key(key: SigningKey) -> None:
    content = _signed_content({"name": "a"})
    compact = jws.serialize_compact(
        {"alg": "ES256", "typ": "JOSE"}, content, key.key, registry=jws_registry(("ES256",))
    )
    protected, _, signature = compact.split(".")
    card = {"name": "a", "signatures": [{"protected": protected, "signature": signature}]}
    assert verify_card(card, keys_of(key), policy="require", where=WHERE) is True


def test_only_the_first_eight_signatures_are_tried(key: SigningKey) -> None:
    good = sign_card({"name": "a"}, key)["signatures"][0]
    bad = {"protected": good["protected"], "signature": b64(b"\x00" * 64)}
    card = {"name": "a", "signatures": [bad] * 8 + [good]}
    reasons = refusal(card, keys_of(key)).split("; ")
    assert reasons == [f"signature {i}: does not verify (BadSignatureError)" for i in range(8)]
    assert verify_card(
        {"name": "a", "signatures": [bad] * 7 + [good]}, keys_of(key), policy="require", where=WHERE
    )


def test_signature_key_urls_lists_the_jku_of_readable_signatures(key: SigningKey) -> None:
    with_jku = sign_card({"name": "a"}, key, jku=JKU)["signatures"][0]
    other = sign_card({"name": "a"}, key, jku="https://b.test/jwks")["signatures"][0]
    without = sign_card({"name": "a"}, key)["signatures"][0]
    entries: list[Any] = [
        with_jku,
        {"signature": "s"},
        {"protected": 7},
        {"protected": b64(b"{bad")},
        {"protected": "%%%"},
        {"protected": b64(b"[1]")},
        {"protected": b64(json.dumps({"jku": 5}).encode())},
        without,
        other,
    ]
    assert signature_key_urls({"signatures": entries}) == [JKU]  # the ninth is not read
    assert signature_key_urls({"signatures": [without, other, with_jku]}) == [
        "https://b.test/jwks",
        JKU,
    ]
    assert signature_key_urls({"name": "a"}) == []
    assert signature_key_urls({"signatures": None}) == []


CARD03: dict[str, Any] = {
    "name": "écho",
    "protocolVersion": "0.3.0",
    "preferredTransport": "JSONRPC",
    "description": "",
    "skills": [],
    "capabilities": {"streaming": False},
    "securitySchemes": {
        "bearer": {"type": "http", "scheme": "bearer"},
        "oauth": {"type": "oauth2", "flows": {}, "description": "x"},
        "odd": "not-an-object",
    },
    "signatures": [{"protected": "p", "signature": "s"}],
}


def test_v03_signed_content_leaves_out_schema_defaults_and_escapes_non_ascii() -> None:
    assert signed_content_v03(CARD03) == (
        b'{"capabilities":{"streaming":false},"name":"\\u00e9cho","securitySchemes":'
        b'{"bearer":{"scheme":"bearer"},"oauth":{"description":"x"},"odd":"not-an-object"}}'
    )
    # Values other than the defaults are signed, and the input is not changed.
    other = {**CARD03, "protocolVersion": "0.2.5", "preferredTransport": "GRPC", "url": "u"}
    assert json.loads(signed_content_v03(other)) == {
        "capabilities": {"streaming": False},
        "name": "écho",
        "preferredTransport": "GRPC",
        "protocolVersion": "0.2.5",
        "securitySchemes": {
            "bearer": {"scheme": "bearer"},
            "oauth": {"description": "x"},
            "odd": "not-an-object",
        },
        "url": "u",
    }
    assert CARD03["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert signed_content_v03({"securitySchemes": "odd", "description": ""}) == (
        b'{"securitySchemes":"odd"}'
    )
    assert signed_content_v03({"signatures": []}) == b"{}"


def test_v03_card_is_signed_over_its_content_and_replaces_signatures(key: SigningKey) -> None:
    signed = sign_card_v03(CARD03, key, jku=JKU)
    assert {k: v for k, v in signed.items() if k != "signatures"} == {
        k: v for k, v in CARD03.items() if k != "signatures"
    }
    (signature,) = signed["signatures"]
    assert set(signature) == {"protected", "signature"}
    assert header_of(signature) == {"alg": "ES256", "kid": key.kid, "typ": "JOSE", "jku": JKU}
    assert verifies_over(signature, signed_content_v03(CARD03), key)
    assert not verifies_over(signature, _signed_content(CARD03), key)
    (plain,) = sign_card_v03(CARD03, key)["signatures"]
    assert header_of(plain) == {"alg": "ES256", "kid": key.kid, "typ": "JOSE"}


def test_eddsa_signatures_verify_and_sign_the_03_card(ed_key: SigningKey) -> None:
    # EdDSA is outside joserfc's default algorithms: our registries must allow it.
    assert verify_card(
        sign_card({"name": "a"}, ed_key), keys_of(ed_key), policy="require", where=WHERE
    )
    (signature,) = sign_card_v03(CARD03, ed_key)["signatures"]
    assert header_of(signature)["alg"] == "EdDSA"
    assert verifies_over(signature, signed_content_v03(CARD03), ed_key)


def test_the_signature_names_its_key_among_several(key: SigningKey) -> None:
    second = SigningKey.generate("ES256")
    card = sign_card({"name": "a"}, second)
    assert verify_card(card, keys_of(key, second), policy="require", where=WHERE) is True


def test_a_private_header_parameter_does_not_stop_verification(key: SigningKey) -> None:
    header = {"alg": "ES256", "kid": key.kid, "typ": "JOSE", "x-note": "hi"}
    compact = jws.serialize_compact(
        header, _signed_content({"name": "a"}), key.key, registry=jws_registry(("ES256",))
    )
    protected, _, signature = compact.split(".")
    card = {"name": "a", "signatures": [{"protected": protected, "signature": signature}]}
    assert verify_card(card, keys_of(key), policy="require", where=WHERE) is True


def test_key_urls_after_an_unreadable_signature_are_still_listed(key: SigningKey) -> None:
    with_jku = sign_card({"name": "a"}, key, jku=JKU)["signatures"][0]
    assert signature_key_urls({"signatures": [{"signature": "s"}, with_jku]}) == [JKU]
    assert signature_key_urls({"signatures": [{"protected": b64(b"[1]")}, with_jku]}) == [JKU]
