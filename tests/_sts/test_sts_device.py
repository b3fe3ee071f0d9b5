"""The device authorization grant (RFC 8628) at the token service, through its real app."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sts_support import ISSUER, PASSWORD, A, claims_of, open_world

from keycard_agents._sts import _device

pytestmark = pytest.mark.anyio

DEVICE = "urn:ietf:params:oauth:grant-type:device_code"


async def _start(client: httpx.AsyncClient, **extra: str) -> dict[str, Any]:
    reply = await client.post(
        "/device_authorization", data={"client_id": "app", "resource": A, **extra}
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers["cache-control"] == "no-store"
    body: dict[str, Any] = reply.json()
    return body


async def _poll(client: httpx.AsyncClient, device_code: str) -> httpx.Response:
    return await client.post(
        "/token", data={"grant_type": DEVICE, "device_code": device_code, "client_id": "app"}
    )


async def test_metadata_advertises_the_device_grant() -> None:
    async with open_world() as w:
        metadata = (await w.client.get("/.well-known/oauth-authorization-server")).json()
    assert metadata["device_authorization_endpoint"].endswith("/device_authorization")
    assert DEVICE in metadata["grant_types_supported"]


async def test_a_device_signs_in_after_the_user_approves_it() -> None:
    async with open_world() as w:
        start = await _start(w.client, scope="read")
        assert re.fullmatch(
            r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}", start["user_code"]
        )
        assert start["verification_uri"].endswith("/device")
        assert start["verification_uri_complete"].endswith(
            "user_code=" + start["user_code"].replace("-", "-")
        )
        assert start["interval"] == 5
        assert start["expires_in"] == 600
        pending = await _poll(w.client, start["device_code"])
        assert pending.status_code == 400
        assert pending.json()["error"] == "authorization_pending"
        assert start["user_code"] in pending.json()["error_description"]
        hurried = await _poll(w.client, start["device_code"])
        assert hurried.json()["error"] == "slow_down"
        # the person, on another device: the page, a wrong password, then the right one
        page = await w.client.get("/device", params={"user_code": start["user_code"]})
        assert page.status_code == 200
        assert f"value='{start['user_code']}'" in page.text
        code = start["user_code"].lower().replace("-", " ")  # forgiving about case and dashes
        form = {"user_code": code, "username": "alice", "action": "allow"}
        wrong = await w.client.post("/device", data={**form, "password": "nope"})
        assert wrong.status_code == 401
        ok = await w.client.post("/device", data={**form, "password": PASSWORD})
        assert ok.status_code == 200
        assert "Device signed in" in ok.text
        w.clock.advance(20)
        issued = await _poll(w.client, start["device_code"])
        assert issued.status_code == 200, issued.text
        claims = claims_of(issued.json()["access_token"])
        again = await _poll(w.client, start["device_code"])  # a device code works once
        records = await w.service.audit.query()
    assert claims["sub"] == "alice"
    assert claims["aud"] == A
    assert claims["scope"] == "read"
    assert claims["may_act"] == {"sub": "a"}
    assert len(claims["txn"]) == 32
    assert again.json()["error"] == "invalid_grant"
    # polling answers are not audited; the issuance is, once
    device = [r for r in records if r.grant_type == DEVICE]
    assert [(r.decision, r.error) for r in device] == [
        ("issued", None),
        ("denied", "invalid_grant"),
    ]


async def test_refused_expired_and_unknown_codes() -> None:
    async with open_world() as w:
        start = await _start(w.client)
        refused = await w.client.post(
            "/device", data={"user_code": start["user_code"], "action": "deny"}
        )
        assert "Sign-in refused" in refused.text
        denied = await _poll(w.client, start["device_code"])
        assert denied.json()["error"] == "access_denied"
        late = await _start(w.client)
        w.clock.advance(601)
        expired = await _poll(w.client, late["device_code"])
        assert expired.json()["error"] in ("expired_token", "invalid_grant")
        unknown = await w.client.post("/device", data={"user_code": "BCDF-GHJK", "action": "allow"})
        assert unknown.status_code == 400
        bad_target = await w.client.post(
            "/device_authorization", data={"client_id": "app", "resource": A.rstrip("/")}
        )
        assert bad_target.json()["error"] == "invalid_target"
        assert "only by a trailing '/'" in bad_target.json()["error_description"]
        agent = await w.client.post("/device_authorization", data={"resource": A, **w.auth("b")})
        assert agent.json()["error"] == "unauthorized_client"


def _wrong_codes(right: str, count: int) -> list[str]:
    """``count`` well-formed user codes, none of them ``right``."""
    codes = [f"BCDF-GHJ{c}" for c in "KLMNPQRSTVWXZ"]
    return [c for c in codes if c != right][:count]


async def test_guessing_user_codes_is_throttled_per_address() -> None:
    # RFC 8628 §5.1: wrong user codes are counted against the address that sends them.
    limits = {"failed_auth_per_source": 3, "failed_auth_per_account": 1000, "throttle_delay": 0}
    async with open_world(limits=limits) as w:
        start = await _start(w.client, scope="read")
        for code in _wrong_codes(start["user_code"], 3):
            guess = await w.client.post("/device", data={"user_code": code, "action": "deny"})
            assert guess.status_code == 400
            assert "Unknown or expired code." in guess.text
        # The guesser's address has no attempt left: even the right code is not looked at,
        # so the device is not refused, and the answer says when to come back.
        stopped = await w.client.post(
            "/device", data={"user_code": start["user_code"], "action": "deny"}
        )
        assert stopped.status_code == 429
        assert "Too many wrong codes or sign-ins: try again in" in stopped.text
        # ... and its sign-ins share that allowance (one budget per address).
        approve = {
            "user_code": start["user_code"],
            "username": "alice",
            "password": PASSWORD,
            "action": "allow",
        }
        assert (await w.client.post("/device", data=approve)).status_code == 429
        # The person, from their own address, approves their device as usual.
        elsewhere = httpx.ASGITransport(app=w.service.app, client=("192.0.2.7", 40000))
        async with httpx.AsyncClient(transport=elsewhere, base_url=ISSUER) as person:
            for _ in range(4):  # a right code costs nothing, however often it is shown
                page = await person.post(
                    "/device", data={"user_code": start["user_code"], "username": "alice"}
                )
                assert page.status_code == 401  # no password: refused, code not charged
            ok = await person.post("/device", data=approve)
        assert ok.status_code == 200, ok.text
        assert "Device signed in" in ok.text
        w.clock.advance(20)
        issued = await _poll(w.client, start["device_code"])
    assert issued.status_code == 200, issued.text
    assert claims_of(issued.json()["access_token"])["sub"] == "alice"


async def test_at_most_so_many_sign_ins_wait_and_user_codes_never_repeat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_device, "_MAX_PENDING", 3)
    # The draws: the second sign-in first gets the first one's code, then a fresh one.
    # (The refused fourth one draws a code too.)
    draws: Iterator[str] = iter("B" * 8 + "B" * 8 + "C" * 8 + "D" * 8 + "F" * 8 + "G" * 8)
    monkeypatch.setattr("keycard_agents._sts._device.secrets.choice", lambda _: next(draws))
    async with open_world() as w:
        codes = [(await _start(w.client))["user_code"] for _ in range(3)]
        assert codes == ["BBBB-BBBB", "CCCC-CCCC", "DDDD-DDDD"]
        full = await w.client.post(
            "/device_authorization", data={"client_id": "app", "resource": A}
        )
        assert full.status_code == 429
        assert full.json()["error"] == "slow_down"
        w.clock.advance(601)  # the three expire: room again
        assert (await _start(w.client))["user_code"] == "GGGG-GGGG"
