"""Token verification details: times in messages are UTC, token profiles refuse bad
configurations with a reason."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from keycard_agents import InvalidTokenError
from keycard_agents.auth import SigningKey, StaticKeys, TokenProfile, verify_jwt

ISS = "https://issuer.test"
AUD = "https://calendar.test"
NOW = 1_700_000_000  # 2023-11-14T22:13:20Z


@pytest.fixture(scope="module")
def es256() -> SigningKey:
    return SigningKey.generate("ES256", clock=lambda: NOW)


@pytest.fixture
def keys(es256: SigningKey) -> StaticKeys:
    return StaticKeys({ISS: {"keys": [es256.public_jwk()]}})


@pytest.fixture
def local_time_far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process runs in a time zone five hours behind UTC."""
    monkeypatch.setenv("TZ", "EST5")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def claims(**overrides: Any) -> dict[str, Any]:
    base = {"iss": ISS, "sub": "alice", "aud": AUD, "exp": NOW + 300, "iat": NOW, "jti": "1"}
    return {**base, **overrides}


async def refusal(token: str, keys: StaticKeys, now: float) -> InvalidTokenError:
    with pytest.raises(InvalidTokenError) as refused:
        await verify_jwt(
            token, keys=keys, issuers=[ISS], audience=AUD, token_types=["at+jwt"], clock=lambda: now
        )
    return refused.value


@pytest.mark.anyio
@pytest.mark.usefixtures("local_time_far_from_utc")
async def test_times_in_refusals_are_utc_whatever_the_local_zone(
    es256: SigningKey, keys: StaticKeys
) -> None:
    expired = await refusal(es256.sign(claims(exp=NOW), typ="at+jwt"), keys, NOW + 120)
    assert expired.check == "expired"
    assert str(expired).startswith("token expired at 2023-11-14T22:13:20Z (120 s ago")
    early = es256.sign(claims(nbf=NOW + 600), typ="at+jwt")
    not_yet = await refusal(early, keys, NOW)
    assert not_yet.check == "not_yet_valid"
    assert str(not_yet).startswith("token is not valid before 2023-11-14T22:23:20Z (600 s")


def test_profiles_refuse_bad_configurations_with_the_reason() -> None:
    for types in ((), "at+jwt"):
        with pytest.raises(ValueError) as refused:  # noqa: PT011 (the message is asserted)
            TokenProfile(token_types=types)  # type: ignore[arg-type]
        assert str(refused.value) == (
            "token_types must be a non-empty sequence of typ values (or None)"
        )
    with pytest.raises(ValueError) as refused:  # noqa: PT011 (the message is asserted)
        TokenProfile(client_claim="")
    assert str(refused.value) == "client_claim must name a claim"
    assert TokenProfile(token_types=(None,)).accepts_typ(None)
    assert not TokenProfile(token_types=(None,)).accepts_typ("at+jwt")
