"""Client authentication (``_clientauth``): the edges a mutation run showed no test
pinned (``dev.py mutation sts``, docs/testing.md)."""

from __future__ import annotations

import base64
import itertools
import uuid

import pytest
from sts_support import ISSUER, JWT_BEARER, World, open_world

from keycard_agents.auth import CLIENT_ASSERTION_TYPE
from keycard_agents.sts import hash_secret

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("user_id", "seen"),
    [("team+b", "team b"), ("team%2Bb", "team+b"), ("a%3Ab", "a:b")],
)
async def test_a_basic_client_id_is_form_decoded(user_id: str, seen: str) -> None:
    """RFC 6749 §2.3.1: the client id is form-urlencoded before base64, so ``+`` is a
    space and ``%2B`` a plus; the audit names the client id as decoded."""
    async with open_world() as w:
        raw = base64.b64encode(f"{user_id}:secret".encode()).decode()
        reply = await w.post_token(
            {"grant_type": "client_credentials"}, headers={"Authorization": f"Basic {raw}"}
        )
        (record,) = await w.service.audit.query()
    assert reply.status_code == 401
    assert reply.json()["error"] == "invalid_client"
    assert record.reason == f"unknown client {seen!r}"


def _basic(user_id: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


async def test_a_basic_secret_is_form_decoded() -> None:
    """A secret with a space and a plus, sent as RFC 6749 §2.3.1 asks: ``+`` and ``%2B``."""
    secret = "two words+one plus 0123456789abcdef"
    agent = {
        "client_id": "s",
        "resource": "https://s.example/",
        "auth": "client_secret",
        "secret_hash": hash_secret(secret, cost=2**4),
    }
    async with open_world(agents=[agent]) as w:
        grant = {"grant_type": "client_credentials"}
        encoded = secret.replace("+", "%2B").replace(" ", "+")
        ok = await w.post_token(grant, headers=_basic("s", encoded))
        raw_plus = await w.post_token(grant, headers=_basic("s", secret.replace(" ", "+")))
    assert ok.status_code == 200, ok.text
    assert raw_plus.status_code == 401  # an unencoded '+' is a space: another secret


async def test_failed_basic_authentications_are_charged_to_their_source() -> None:
    """30 failures from one address, each for another client id (no account reaches its
    own limit), and that address waits, whatever client it names next."""
    async with open_world(limits={"failed_auth_per_source": 30}) as w:
        grant = {"grant_type": "client_credentials"}
        statuses = [
            (await w.post_token(grant, headers=_basic(f"guess-{i}", "x"))).status_code
            for i in range(30)
        ]
        throttled = await w.post_token(grant, headers=_basic("b", "wrong"))
    assert statuses == [401] * 30
    assert throttled.status_code == 429
    assert throttled.json()["error"] == "temporarily_unavailable"
    assert "too many failed attempts from this address" in throttled.json()["error_description"]


def _assertion_of_length(w: World, length: int) -> str:
    """A valid client assertion of agent a, padded with a claim to exactly ``length``
    (base64url cannot make every length: the header's ``typ`` varies too, and both
    forms are accepted)."""
    now = int(w.clock())
    for pad, typ in itertools.product(range(length), (CLIENT_ASSERTION_TYPE, "JWT")):
        claims = {
            "iss": "a",
            "sub": "a",
            "aud": ISSUER,
            "iat": now,
            "exp": now + 60,
            "jti": uuid.uuid4().hex,
            "pad": "p" * pad,
        }
        assertion = w.keys["a"].sign(claims, typ=typ)
        if len(assertion) == length:
            return assertion
    raise AssertionError(f"no assertion of {length} characters")


@pytest.mark.parametrize(("length", "status"), [(8192, 200), (8194, 401)])
async def test_a_client_assertion_may_be_8_kib_long(length: int, status: int) -> None:
    async with open_world() as w:
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": JWT_BEARER,
            "client_assertion": _assertion_of_length(w, length),
        }
        reply = await w.post_token(form)
        records = await w.service.audit.query()
    assert reply.status_code == status, reply.text
    if status == 401:
        assert records[-1].reason == "client_assertion is too large"
