"""Audit trail: every issuance and denial is recorded; queries; JSONL round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
from sts_support import T0, A, B, C, claims_of, open_world

from keycard_agents.sts import AuditRecord, AuditStore, JsonlAuditStore, MemoryAuditStore

pytestmark = pytest.mark.anyio


async def test_every_issuance_and_denial_is_recorded() -> None:
    async with open_world() as w:
        user = await w.user_token(scope="read write")
        txn = claims_of(user)["txn"]
        hop1 = await w.exchange("a", user, B)
        assert hop1.status_code == 200
        hop2 = await w.exchange("b", hop1.json()["access_token"], C, scope="read")
        assert hop2.status_code == 200
        denied = await w.exchange("b", hop1.json()["access_token"], C, scope="write")
        assert denied.status_code == 400
        garbage = await w.client.post("/token", content=b"\xff", headers={"content-type": "x/y"})
        assert garbage.status_code == 400

        records = await w.service.audit.query()
        assert [r.decision for r in records] == ["issued", "issued", "issued", "denied", "denied"]
        login, r1, r2, r3, r4 = records
        assert (login.grant_type, login.user, login.client_id) == (
            "authorization_code",
            "alice",
            "app",
        )
        assert login.target == A
        assert r1.actors == ("a",)
        assert r1.target == B
        assert r1.scopes_granted == ("read", "write")
        assert r1.jti == claims_of(hop1.json()["access_token"])["jti"]
        assert r2.actors == ("b", "a")
        assert r2.scopes_requested == ("read",)
        assert r2.scopes_granted == ("read",)
        assert (r3.error, r3.scopes_requested, r3.scopes_granted, r3.jti) == (
            "invalid_scope",
            ("write",),
            None,
            None,
        )
        assert r3.reason is not None
        assert "write" in r3.reason
        # denied before anything could be read: unknown fields stay None
        assert (r4.error, r4.grant_type, r4.user, r4.client_id, r4.txn) == (
            "invalid_request",
            None,
            None,
            None,
            None,
        )
        assert {r.txn for r in records[:4]} == {txn}

        by_txn = await w.service.audit.query(txn=txn)
        assert len(by_txn) == 4
        assert len(await w.service.audit.query(user="alice")) == 4
        assert len(await w.service.audit.query(user="bob")) == 0
        assert len(await w.service.audit.query(agent="a")) == 3  # r1, r2 (as actor), r3
        assert await w.service.audit.query(txn=txn, limit=1) == [r3]
        assert w.service.stats.issued == 3
        assert w.service.stats.denied == 2


async def test_denial_at_client_auth_names_the_client_but_no_user() -> None:
    async with open_world() as w:
        reply = await w.client.post(
            "/token", data={"grant_type": "client_credentials"}, auth=("b", "nope")
        )
        assert reply.status_code == 401
        (record,) = await w.service.audit.query()
        assert record.decision == "denied"
        assert record.error == "invalid_client"
        assert record.grant_type == "client_credentials"
        assert record.user is None
        assert "nope" not in record.model_dump_json()


def _record(i: int, **kw: object) -> AuditRecord:
    fields: dict[str, object] = {
        "time": T0 + i,
        "decision": "issued",
        "txn": f"t{i % 2}",
        "user": "alice" if i % 3 else "bob",
        "actors": ("a",),
        "client_id": "a",
    }
    fields.update(kw)
    return AuditRecord.model_validate(fields)


async def test_memory_store_is_bounded_and_filters() -> None:
    store = MemoryAuditStore(max_records=5)
    assert isinstance(store, AuditStore)
    for i in range(8):
        await store.append(_record(i))
    assert len(store) == 5
    all_records = await store.query()
    assert [r.time for r in all_records] == [T0 + i for i in range(3, 8)]
    assert [r.time for r in await store.query(since=T0 + 5, until=T0 + 6)] == [T0 + 5, T0 + 6]
    assert all(r.txn == "t1" for r in await store.query(txn="t1"))
    assert [r.time for r in await store.query(user="bob")] == [T0 + 3, T0 + 6]
    assert await store.query(agent="zzz") == []
    assert len(await store.query(limit=2)) == 2


async def test_jsonl_store_round_trip_and_truncated_tail(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "sts.jsonl"
    store = JsonlAuditStore(path)
    assert isinstance(store, AuditStore)
    assert await store.query() == []
    records = [_record(i, error=None, reason=None) for i in range(3)]
    for record in records:
        await store.append(record)
    assert await JsonlAuditStore(path).query() == records
    # a crash mid-write leaves half a line: reading skips it, appending starts a new line
    with path.open("a", encoding="utf-8") as fh:
        fh.write('{"time": 1, "decis')
    assert await store.query() == records
    extra = _record(9, decision="denied", error="invalid_grant", reason="r")
    await store.append(extra)
    assert await store.query() == [*records, extra]
    assert await store.query(user="bob", txn="t0") == [records[0]]


async def test_service_writes_to_a_jsonl_store(tmp_path: Path) -> None:
    from sts_support import Clock, make_config

    from keycard_agents.sts import TokenService

    store = JsonlAuditStore(tmp_path / "audit.jsonl")
    config, _ = make_config()
    service = TokenService(config, audit=store, clock=Clock())
    assert service.audit is store
    import httpx

    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url="https://sts.example") as client:
        await client.post("/token", data={"grant_type": "nope"})
    (record,) = await JsonlAuditStore(tmp_path / "audit.jsonl").query()
    assert record.error == "unsupported_grant_type"
