"""JWS registries allow exactly their algorithms and are built on first use; a key set
that cannot be read names its issuer (details the mutation run found open).

The registry caches are replaced by empty ones here: the process may already hold every
registry the other tests use, and the first use of an allow-list is what is tested.
"""

from __future__ import annotations

from typing import Any

import pytest
from joserfc.errors import UnsupportedAlgorithmError

from keycard_agents import ConfigurationError
from keycard_agents._jose import _jwt, _keys
from keycard_agents._jose._keys import jws_registry
from keycard_agents.auth import SigningKey, StaticKeys, verify_jwt

ISS = "https://issuer.test"
AUD = "https://calendar.test"
NOW = 1_700_000_000


def claims() -> dict[str, Any]:
    return {"iss": ISS, "sub": "alice", "aud": AUD, "exp": NOW + 300, "iat": NOW, "jti": "1"}


@pytest.mark.parametrize("refused", ["RS256", "EdDSA", "HS256", "none", "XS999"])
def test_a_registry_hands_out_only_the_algorithms_it_allows(refused: str) -> None:
    registry = jws_registry(["ES256"])
    assert registry.get_alg("ES256").name == "ES256"
    with pytest.raises(UnsupportedAlgorithmError) as raised:
        registry.get_alg(refused)
    assert raised.value.description == f"Algorithm of '{refused}' is not allowed"


def test_each_algorithm_signs_with_a_registry_of_its_own_made_on_first_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache: dict[str, Any] = {}
    monkeypatch.setattr(_keys, "_SIGN_REGISTRIES", cache)
    for alg in ("ES256", "EdDSA"):
        key = SigningKey.generate(alg, clock=lambda: NOW)
        assert key.sign(claims(), typ="at+jwt").count(".") == 2
        assert key.sign(claims(), typ="at+jwt").count(".") == 2
    assert set(cache) == {"ES256", "EdDSA"}
    with pytest.raises(UnsupportedAlgorithmError):
        cache["ES256"].get_alg("EdDSA")


@pytest.mark.anyio
async def test_verification_makes_the_registry_of_an_allow_list_on_first_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_jwt, "_REGISTRIES", {})
    key = SigningKey.generate("ES256", clock=lambda: NOW)
    keys = StaticKeys({ISS: {"keys": [key.public_jwk()]}})
    token = key.sign(claims(), typ="at+jwt")
    for _ in range(2):  # made by the first call, found by the second
        verified = await verify_jwt(
            token,
            keys=keys,
            issuers=[ISS],
            audience=AUD,
            token_types=["at+jwt"],
            algorithms=["ES256", "PS256"],
            clock=lambda: NOW,
        )
        assert verified == claims()
    registry = _jwt.registry_for(frozenset({"ES256", "PS256"}))
    assert registry.get_alg("PS256").name == "PS256"
    with pytest.raises(UnsupportedAlgorithmError):
        registry.get_alg("RS256")


@pytest.mark.parametrize(
    ("jwks", "reason"),
    [
        ({"nokeys": []}, f"JWKS of issuer {ISS!r} has no 'keys' array"),
        ({"keys": [5]}, f"JWKS of issuer {ISS!r} member 0 is not a JSON object"),
    ],
)
def test_an_unreadable_key_set_names_its_issuer(jwks: dict[str, Any], reason: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        StaticKeys({ISS: jwks})
    assert str(refused.value) == reason
    assert refused.value.setting == "keys"
