"""verify_jwt and TokenVerifier: every check, with the exact ``check`` it reports."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, Key, KeySet, RSAKey

from keycard_agents import (
    ConfigurationError,
    InsufficientScopeError,
    InvalidTokenError,
    IssuerUnreachableError,
)
from keycard_agents._jose._keys import jws_registry
from keycard_agents.auth import (
    ACCESS_TOKEN_TYPE,
    ALGORITHMS,
    CLIENT_ASSERTION_TYPE,
    KeyStore,
    SigningKey,
    StaticKeys,
    TokenVerifier,
    verify_jwt,
)

ISS = "https://issuer.test"
AUD = "https://calendar.test"
NOW = 1_700_000_000
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def signing_keys() -> dict[str, SigningKey]:
    return {alg: SigningKey.generate(alg, clock=lambda: NOW) for alg in ALGORITHMS}


@pytest.fixture
def es256(signing_keys: dict[str, SigningKey]) -> SigningKey:
    return signing_keys["ES256"]


@pytest.fixture
def keys(signing_keys: dict[str, SigningKey]) -> StaticKeys:
    return StaticKeys({ISS: {"keys": [k.public_jwk() for k in signing_keys.values()]}})


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISS,
        "sub": "alice",
        "aud": AUD,
        "exp": NOW + 300,
        "iat": NOW,
        "jti": "jti-1",
        "scope": "calendar.read calendar.write",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def sign_raw(key: Key, header: Mapping[str, Any], payload: Mapping[str, Any], alg: str) -> str:
    """Sign with an arbitrary header (joserfc, allow-listing exactly ``alg``)."""
    registry = jws_registry((alg,))
    return jwt.encode(dict(header), dict(payload), key, registry=registry, default_type=None)


async def verify(token: str, keys: StaticKeys, **options: Any) -> dict[str, Any]:
    options.setdefault("issuers", [ISS])
    options.setdefault("audience", AUD)
    options.setdefault("token_types", [ACCESS_TOKEN_TYPE])
    options.setdefault("clock", lambda: NOW)
    return await verify_jwt(token, keys=keys, **options)


async def expect_check(check: str, token: str, keys: StaticKeys, **options: Any) -> str:
    with pytest.raises(InvalidTokenError) as info:
        await verify(token, keys, **options)
    assert info.value.check == check, str(info.value)
    message = str(info.value)
    if isinstance(token, str) and len(token) > 20:
        assert token not in message
        signature = token.split(".")[-1]
        assert len(signature) < 8 or signature not in message
    return message


# -- success -----------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("alg", ALGORITHMS)
async def test_each_algorithm_verifies(
    alg: str, signing_keys: dict[str, SigningKey], keys: StaticKeys
) -> None:
    token = signing_keys[alg].sign(claims(), typ=ACCESS_TOKEN_TYPE)
    result = await verify(token, keys)
    assert result["sub"] == "alice"
    assert result["aud"] == AUD


@pytest.mark.anyio
async def test_rfc9864_ed25519_name_is_accepted(
    signing_keys: dict[str, SigningKey], keys: StaticKeys
) -> None:
    okp = signing_keys["EdDSA"]
    header = {"alg": "Ed25519", "kid": okp.kid, "typ": "at+jwt"}
    token = sign_raw(okp.key, header, claims(), "Ed25519")
    assert (await verify(token, keys))["sub"] == "alice"


@pytest.mark.anyio
@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/AT+jwt"])
async def test_typ_is_case_insensitive_and_may_carry_application_prefix(
    typ: str, es256: SigningKey, keys: StaticKeys
) -> None:
    token = es256.sign(claims(), typ=typ)
    assert (await verify(token, keys))["jti"] == "jti-1"


@pytest.mark.anyio
async def test_client_assertion_type_verifies_when_asked_for(
    es256: SigningKey, keys: StaticKeys
) -> None:
    token = es256.sign(claims(aud=ISS), typ=CLIENT_ASSERTION_TYPE)
    result = await verify(token, keys, audience=ISS, token_types=[CLIENT_ASSERTION_TYPE])
    assert result["aud"] == ISS


@pytest.mark.anyio
async def test_audience_list_containing_this_resource(es256: SigningKey, keys: StaticKeys) -> None:
    token = es256.sign(claims(aud=["https://other.test", AUD]), typ="at+jwt")
    assert (await verify(token, keys))["aud"] == ["https://other.test", AUD]


@pytest.mark.anyio
async def test_token_without_kid_uses_the_only_fitting_key(
    signing_keys: dict[str, SigningKey], keys: StaticKeys
) -> None:
    es = signing_keys["ES256"]
    token = sign_raw(es.key, {"alg": "ES256", "typ": "at+jwt"}, claims(), "ES256")
    assert (await verify(token, keys))["sub"] == "alice"
    two = StaticKeys({ISS: {"keys": [es.public_jwk(), SigningKey.generate("ES256").public_jwk()]}})
    message = await expect_check("unknown_key", token, two)
    assert "no 'kid'" in message


@pytest.mark.anyio
async def test_act_chain_up_to_the_limit(es256: SigningKey, keys: StaticKeys) -> None:
    act: dict[str, Any] | None = None
    for i in range(5):
        act = {"sub": f"agent-{i}", **({"act": act} if act else {})}
    token = es256.sign(claims(act=act), typ="at+jwt")
    assert (await verify(token, keys))["act"]["sub"] == "agent-4"
    await expect_check("depth", token, keys, max_actor_depth=4)


# -- failures, in check order ------------------------------------------------------


def hostile_cases() -> list[Any]:
    data = json.loads((FIXTURES / "hostile_tokens.json").read_text(encoding="utf-8"))
    return [pytest.param(c["token"], c["check"], id=c["name"]) for c in data["cases"]]


@pytest.mark.anyio
@pytest.mark.parametrize(("token", "check"), hostile_cases())
async def test_hostile_inputs(token: str, check: str, keys: StaticKeys) -> None:
    await expect_check(check, token, keys)


@pytest.mark.anyio
async def test_non_string_token_is_malformed(keys: StaticKeys) -> None:
    await expect_check("malformed", None, keys)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_oversized_token(es256: SigningKey, keys: StaticKeys) -> None:
    token = es256.sign(claims(padding="x" * 9000), typ="at+jwt")
    message = await expect_check("size", token, keys)
    assert "8192" in message
    small = es256.sign(claims(), typ="at+jwt")
    await expect_check("size", small, keys, max_bytes=100)
    assert await verify(token, keys, max_bytes=20000)


@pytest.mark.anyio
async def test_alg_none_is_rejected_before_keys(es256: SigningKey, keys: StaticKeys) -> None:
    header = {"alg": "none", "kid": es256.kid, "typ": "at+jwt"}
    token = f"{b64json(header)}.{b64json(claims())}."
    message = await expect_check("algorithm", token, keys)
    assert "'none' is not allowed" in message


@pytest.mark.anyio
@pytest.mark.parametrize("alg", ["RS256", "ES256"])
async def test_hs256_with_public_key_as_secret_is_rejected(
    alg: str, signing_keys: dict[str, SigningKey], keys: StaticKeys
) -> None:
    """The classic key-confusion attack: HMAC keyed with the issuer's public key."""
    key = signing_keys[alg]
    asymmetric = key.key
    assert isinstance(asymmetric, (RSAKey, ECKey))
    secret = asymmetric.as_pem(private=False)
    header = {"alg": "HS256", "kid": key.kid, "typ": "at+jwt"}
    signing_input = f"{b64json(header)}.{b64json(claims())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64(mac)}"
    message = await expect_check("algorithm", token, keys)
    assert "HS256" in message
    # Even a caller who lists HS256 cannot allow it.
    with pytest.raises(ConfigurationError):
        await verify(token, keys, algorithms=["HS256", "RS256"])


@pytest.mark.anyio
async def test_algorithm_outside_a_narrower_allow_list(
    signing_keys: dict[str, SigningKey], keys: StaticKeys
) -> None:
    token = signing_keys["RS256"].sign(claims(), typ="at+jwt")
    await expect_check("algorithm", token, keys, algorithms=["ES256"])


@pytest.mark.anyio
async def test_key_alg_mismatch_es256_header_with_rsa_kid(
    signing_keys: dict[str, SigningKey], keys: StaticKeys
) -> None:
    rsa, es = signing_keys["RS256"], signing_keys["ES256"]
    header = {"alg": "ES256", "kid": rsa.kid, "typ": "at+jwt"}
    token = sign_raw(es.key, header, claims(), "ES256")
    message = await expect_check("algorithm", token, keys)
    assert "RSA" in message


@pytest.mark.anyio
async def test_wrong_typ(es256: SigningKey, keys: StaticKeys) -> None:
    assertion = es256.sign(claims(), typ=CLIENT_ASSERTION_TYPE)
    message = await expect_check("type", assertion, keys)
    assert "'at+jwt'" in message
    plain = es256.sign(claims(), typ="JWT")
    await expect_check("type", plain, keys)
    untyped = sign_raw(es256.key, {"alg": "ES256", "kid": es256.kid}, claims(), "ES256")
    assert "no 'typ'" in await expect_check("type", untyped, keys)


@pytest.mark.anyio
async def test_wrong_issuer(es256: SigningKey, keys: StaticKeys) -> None:
    token = es256.sign(claims(iss="https://evil.test"), typ="at+jwt")
    message = await expect_check("issuer", token, keys)
    assert "https://evil.test" in message
    assert ISS in message


@pytest.mark.anyio
async def test_missing_or_non_string_iss(es256: SigningKey, keys: StaticKeys) -> None:
    await expect_check("claims", es256.sign(claims(iss=None), typ="at+jwt"), keys)
    await expect_check("claims", es256.sign(claims(iss=7), typ="at+jwt"), keys)


@pytest.mark.anyio
async def test_unknown_kid(keys: StaticKeys) -> None:
    stranger = SigningKey.generate("ES256")
    token = stranger.sign(claims(), typ="at+jwt")
    message = await expect_check("unknown_key", token, keys)
    assert stranger.kid in message


@pytest.mark.anyio
async def test_forged_signature_with_another_key_under_a_known_kid(
    es256: SigningKey, keys: StaticKeys
) -> None:
    forger = SigningKey.generate("ES256")
    header = {"alg": "ES256", "kid": es256.kid, "typ": "at+jwt"}
    token = sign_raw(forger.key, header, claims(), "ES256")
    await expect_check("signature", token, keys)


@pytest.mark.anyio
@pytest.mark.parametrize("alg", ALGORITHMS)
async def test_tampered_payload_fails_signature(
    alg: str, signing_keys: dict[str, SigningKey], keys: StaticKeys
) -> None:
    header, _, signature = signing_keys[alg].sign(claims(), typ="at+jwt").split(".")
    tampered = f"{header}.{b64json(claims(sub='mallory'))}.{signature}"
    await expect_check("signature", tampered, keys)


@pytest.mark.anyio
async def test_garbage_signature_fails_signature(es256: SigningKey, keys: StaticKeys) -> None:
    header, payload, _ = es256.sign(claims(), typ="at+jwt").split(".")
    await expect_check("signature", f"{header}.{payload}.AAAA", keys)
    await expect_check("signature", f"{header}.{payload}.", keys)


@pytest.mark.anyio
async def test_crit_header_is_refused(es256: SigningKey, keys: StaticKeys) -> None:
    header = {"alg": "ES256", "kid": es256.kid, "typ": "at+jwt", "crit": ["exp"], "exp": 1}
    token = f"{b64json(header)}.{b64json(claims())}.c2ln"
    await expect_check("malformed", token, keys)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "extension",
    [{"b64": True, "crit": ["b64"]}, {"b64": True}, {"crit": ["exp"], "exp": NOW + 300}],
    ids=["b64-critical", "b64", "crit"],
)
async def test_jws_extensions_are_refused_even_when_correctly_signed(
    extension: dict[str, Any], es256: SigningKey, keys: StaticKeys
) -> None:
    """RFC 7515 §4.1.11 / RFC 7797: a header that needs an extension understood (``crit``,
    ``b64``) is refused, even though the signature is good and the payload is unchanged."""
    header = {"alg": "ES256", "kid": es256.kid, "typ": "at+jwt", **extension}
    signing_input = f"{b64json(header)}.{b64json(claims())}"
    signature = jws_registry(("ES256",)).get_alg("ES256").sign(signing_input.encode(), es256.key)
    token = f"{signing_input}.{b64(signature)}"
    message = await expect_check("malformed", token, keys)
    assert "crit/b64" in message


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["sub", "aud", "exp", "iat", "jti"])
async def test_missing_required_claim(name: str, es256: SigningKey, keys: StaticKeys) -> None:
    token = es256.sign(claims(**{name: None}), typ="at+jwt")
    message = await expect_check("claims", token, keys)
    assert name in message


@pytest.mark.anyio
async def test_required_claims_are_configurable(es256: SigningKey, keys: StaticKeys) -> None:
    token = es256.sign(claims(jti=None), typ="at+jwt")
    result = await verify(token, keys, required_claims=("iss", "sub", "aud", "exp"))
    assert "jti" not in result


@pytest.mark.anyio
@pytest.mark.parametrize(
    "bad",
    [
        {"exp": "tomorrow"},
        {"exp": True},
        {"iat": None, "nbf": "0"},
        {"aud": 7},
        {"aud": [AUD, 7]},
        {"sub": 42},
        {"sub": ""},
        {"scope": ["calendar.read"]},
        {"jti": 1},
        {"client_id": {"x": 1}},
        {"txn": 5},
    ],
    ids=repr,
)
async def test_ill_typed_claims(bad: dict[str, Any], es256: SigningKey, keys: StaticKeys) -> None:
    await expect_check("claims", es256.sign(claims(**bad), typ="at+jwt"), keys)


@pytest.mark.anyio
async def test_wrong_audience_string_and_list(es256: SigningKey, keys: StaticKeys) -> None:
    token = es256.sign(claims(aud="https://b.test"), typ="at+jwt")
    message = await expect_check("audience", token, keys, audience="https://c.test")
    assert message == "token audience 'https://b.test' is not this resource 'https://c.test'"
    listed = es256.sign(claims(aud=["https://a.test", "https://b.test"]), typ="at+jwt")
    await expect_check("audience", listed, keys, audience="https://c.test")
    # A prefix or a substring is not a match.
    await expect_check("audience", es256.sign(claims(aud=AUD + "/x"), typ="at+jwt"), keys)


@pytest.mark.anyio
async def test_expired_with_leeway(es256: SigningKey, keys: StaticKeys) -> None:
    token = es256.sign(claims(exp=NOW - 30, iat=NOW - 600), typ="at+jwt")
    assert await verify(token, keys)  # within the default 60 s leeway
    message = await expect_check("expired", token, keys, leeway=10)
    assert "leeway 10 s" in message
    await expect_check("expired", token, keys, clock=lambda: NOW + 31)


@pytest.mark.anyio
async def test_not_yet_valid(es256: SigningKey, keys: StaticKeys) -> None:
    token = es256.sign(claims(nbf=NOW + 120), typ="at+jwt")
    await expect_check("not_yet_valid", token, keys)
    assert await verify(token, keys, leeway=180)


@pytest.mark.anyio
async def test_issued_in_the_future(es256: SigningKey, keys: StaticKeys) -> None:
    token = es256.sign(claims(iat=NOW + 120), typ="at+jwt")
    await expect_check("issued_in_future", token, keys)
    assert await verify(token, keys, leeway=120)


@pytest.mark.anyio
async def test_act_nested_past_the_limit(es256: SigningKey, keys: StaticKeys) -> None:
    act: dict[str, Any] = {"sub": "agent-0"}
    for i in range(1, 6):
        act = {"sub": f"agent-{i}", "act": act}
    token = es256.sign(claims(act=act), typ="at+jwt")
    message = await expect_check("depth", token, keys)
    assert "5" in message


@pytest.mark.anyio
@pytest.mark.parametrize(
    "act",
    [
        "planner",
        ["planner"],
        {},
        {"sub": 5},
        {"iss": ISS},
        {"sub": "planner", "act": "router"},
        {"sub": "planner", "act": {"sub": None}},
        {"sub": "planner", "iss": 1},
    ],
    ids=repr,
)
async def test_malformed_act(act: Any, es256: SigningKey, keys: StaticKeys) -> None:
    await expect_check("claims", es256.sign(claims(act=act), typ="at+jwt"), keys)


@pytest.mark.anyio
async def test_resolver_transport_failure_propagates(es256: SigningKey) -> None:
    class Down:
        async def resolve(self, *, issuer: str, kid: str | None, alg: str) -> Key:
            raise IssuerUnreachableError("could not reach issuer https://issuer.test: down")

        def known(self, *, issuer: str, kid: str | None) -> bool:
            return False

    with pytest.raises(IssuerUnreachableError):
        await verify_jwt(
            es256.sign(claims(), typ="at+jwt"),
            keys=Down(),
            issuers=[ISS],
            audience=AUD,
            token_types=[ACCESS_TOKEN_TYPE],
            clock=lambda: NOW,
        )


# -- TokenVerifier -----------------------------------------------------------------


class CountingKeys:
    """Wraps a resolver and counts resolve() calls; ``withdrawn`` kids become unknown."""

    def __init__(self, inner: StaticKeys) -> None:
        self.inner = inner
        self.resolves = 0
        self.withdrawn: set[str] = set()

    async def resolve(self, *, issuer: str, kid: str | None, alg: str) -> Key:
        self.resolves += 1
        if kid in self.withdrawn:
            raise InvalidTokenError("withdrawn", check="unknown_key")
        return await self.inner.resolve(issuer=issuer, kid=kid, alg=alg)

    def known(self, *, issuer: str, kid: str | None) -> bool:
        return kid not in self.withdrawn and self.inner.known(issuer=issuer, kid=kid)


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.anyio
async def test_verifier_returns_principal_and_checks_scopes(
    es256: SigningKey, keys: StaticKeys
) -> None:
    act = {"sub": "planner", "iss": ISS}
    token = es256.sign(claims(act=act, client_id="planner", txn="t-1"), typ="at+jwt")
    verifier = TokenVerifier(issuers=[ISS], keys=keys, clock=lambda: NOW)
    principal = await verifier.verify(token, audience=AUD, required_scopes=["calendar.read"])
    assert principal.user == "alice"
    assert principal.actors.current is not None
    assert principal.actors.current.sub == "planner"
    assert principal.txn == "t-1"
    assert principal.render_chain(receiver="calendar") == "alice → planner → calendar"
    with pytest.raises(InsufficientScopeError) as info:
        await verifier.verify(token, audience=AUD, required_scopes=["calendar.read", "mail.send"])
    assert info.value.required == ("calendar.read", "mail.send")
    assert info.value.missing == ("mail.send",)
    assert token not in str(info.value)
    await verifier.aclose()


@pytest.mark.anyio
async def test_verifier_only_accepts_access_tokens(es256: SigningKey, keys: StaticKeys) -> None:
    verifier = TokenVerifier(issuers=[ISS], keys=keys, clock=lambda: NOW)
    assertion = es256.sign(claims(), typ=CLIENT_ASSERTION_TYPE)
    with pytest.raises(InvalidTokenError) as info:
        await verifier.verify(assertion, audience=AUD)
    assert info.value.check == "type"


@pytest.mark.anyio
async def test_cache_hit_skips_key_resolution(es256: SigningKey, keys: StaticKeys) -> None:
    counting = CountingKeys(keys)
    verifier = TokenVerifier(issuers=[ISS], keys=counting, clock=lambda: NOW)
    token = es256.sign(claims(), typ="at+jwt")
    first = await verifier.verify(token, audience=AUD)
    second = await verifier.verify(token, audience=AUD)
    assert first == second
    assert counting.resolves == 1


@pytest.mark.anyio
async def test_cache_hit_still_rejects_an_expired_token(
    es256: SigningKey, keys: StaticKeys
) -> None:
    clock = Clock()
    verifier = TokenVerifier(issuers=[ISS], keys=keys, clock=clock, leeway=5)
    token = es256.sign(claims(exp=NOW + 60), typ="at+jwt")
    await verifier.verify(token, audience=AUD)
    clock.now = NOW + 64
    await verifier.verify(token, audience=AUD)  # still within leeway
    clock.now = NOW + 66
    with pytest.raises(InvalidTokenError) as info:
        await verifier.verify(token, audience=AUD)
    assert info.value.check == "expired"
    with pytest.raises(InvalidTokenError) as again:
        await verifier.verify(token, audience=AUD)
    assert again.value.check == "expired"


@pytest.mark.anyio
async def test_cache_hit_still_checks_audience_and_scopes(
    es256: SigningKey, keys: StaticKeys
) -> None:
    verifier = TokenVerifier(issuers=[ISS], keys=keys, clock=lambda: NOW)
    token = es256.sign(claims(), typ="at+jwt")
    await verifier.verify(token, audience=AUD)
    with pytest.raises(InvalidTokenError) as info:
        await verifier.verify(token, audience="https://other.test")
    assert info.value.check == "audience"
    with pytest.raises(InsufficientScopeError):
        await verifier.verify(token, audience=AUD, required_scopes=["admin"])


@pytest.mark.anyio
async def test_cache_hit_rechecks_when_key_is_withdrawn(
    es256: SigningKey, keys: StaticKeys
) -> None:
    counting = CountingKeys(keys)
    verifier = TokenVerifier(issuers=[ISS], keys=counting, clock=lambda: NOW)
    token = es256.sign(claims(), typ="at+jwt")
    await verifier.verify(token, audience=AUD)
    counting.withdrawn.add(es256.kid)
    with pytest.raises(InvalidTokenError) as info:
        await verifier.verify(token, audience=AUD)
    assert info.value.check == "unknown_key"
    assert counting.resolves == 2


@pytest.mark.anyio
async def test_cache_is_bounded_lru(es256: SigningKey, keys: StaticKeys) -> None:
    counting = CountingKeys(keys)
    verifier = TokenVerifier(issuers=[ISS], keys=counting, clock=lambda: NOW, cache_size=2)
    a, b, c = (es256.sign(claims(jti=j), typ="at+jwt") for j in "abc")
    await verifier.verify(a, audience=AUD)
    await verifier.verify(b, audience=AUD)
    await verifier.verify(a, audience=AUD)  # a is now most recent
    await verifier.verify(c, audience=AUD)  # evicts b
    assert counting.resolves == 3
    await verifier.verify(a, audience=AUD)
    assert counting.resolves == 3
    await verifier.verify(b, audience=AUD)
    assert counting.resolves == 4
    verifier.clear_cache()
    await verifier.verify(a, audience=AUD)
    assert counting.resolves == 5


@pytest.mark.anyio
async def test_failures_are_not_cached(es256: SigningKey, keys: StaticKeys) -> None:
    counting = CountingKeys(keys)
    verifier = TokenVerifier(issuers=[ISS], keys=counting, clock=lambda: NOW)
    token = es256.sign(claims(aud="https://b.test"), typ="at+jwt")
    for _ in range(2):
        with pytest.raises(InvalidTokenError):
            await verifier.verify(token, audience=AUD)
    assert counting.resolves == 2


@pytest.mark.anyio
async def test_verifier_with_key_store_across_rotation(tmp_path: Path) -> None:
    clock = Clock()
    store = KeyStore(tmp_path / "keys", clock=clock, retention=600)
    verifier = TokenVerifier(issuers=[ISS], keys=store.resolver(ISS), clock=clock)
    # exp beyond retention (a misconfiguration) shows the key, not the expiry, deciding.
    old = store.current.sign(claims(exp=NOW + 900), typ="at+jwt")
    old_kid = store.current.kid
    await verifier.verify(old, audience=AUD)
    store.rotate()
    new = store.current.sign(claims(jti="new", exp=NOW + 900), typ="at+jwt")
    assert store.current.kid != old_kid
    await verifier.verify(new, audience=AUD)
    clock.now = NOW + 500
    await verifier.verify(old, audience=AUD)  # cached, key still published
    clock.now = NOW + 601
    store.prune()
    with pytest.raises(InvalidTokenError) as info:
        await verifier.verify(old, audience=AUD)
    assert info.value.check == "unknown_key"
    assert (await verifier.verify(new, audience=AUD)).jti == "new"


def test_verifier_configuration_errors(keys: StaticKeys) -> None:
    with pytest.raises(ConfigurationError):
        TokenVerifier(issuers=[], keys=keys)
    with pytest.raises(ConfigurationError):
        TokenVerifier(issuers=[ISS], keys=keys, algorithms=["none"])
    with pytest.raises(ConfigurationError):
        TokenVerifier(issuers=[ISS], keys=keys, leeway=-1)
    assert "issuer.test" in repr(TokenVerifier(issuers=[ISS], keys=keys))


@pytest.mark.anyio
async def test_static_keys_unknown_issuer(es256: SigningKey, keys: StaticKeys) -> None:
    other = StaticKeys({"https://other.test": {"keys": [es256.public_jwk()]}})
    token = es256.sign(claims(), typ="at+jwt")
    await expect_check("unknown_key", token, other)
    assert not other.known(issuer=ISS, kid=es256.kid)
    assert other.known(issuer="https://other.test", kid=es256.kid)
    assert other.issuers == ("https://other.test",)


@pytest.mark.anyio
async def test_ill_typed_registered_header_is_malformed(
    es256: SigningKey, keys: StaticKeys
) -> None:
    header = {"alg": "ES256", "kid": es256.kid, "typ": "at+jwt", "jku": 5}
    token = f"{b64json(header)}.{b64json(claims())}.c2ln"
    await expect_check("malformed", token, keys)


@pytest.mark.anyio
async def test_static_keys_accepts_a_keyset_and_cache_can_be_disabled(es256: SigningKey) -> None:
    keyset = KeySet.import_key_set({"keys": [es256.public_jwk()]})
    counting = CountingKeys(StaticKeys({ISS: keyset}))
    verifier = TokenVerifier(issuers=[ISS], keys=counting, clock=lambda: NOW, cache_size=0)
    token = es256.sign(claims(), typ="at+jwt")
    await verifier.verify(token, audience=AUD)
    await verifier.verify(token, audience=AUD)
    assert counting.resolves == 2
