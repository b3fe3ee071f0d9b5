"""The token service's in-memory audit store: rows the garbage collector does not track,
read back in append order across the three kinds, identical denials kept once."""

from __future__ import annotations

import gc

import pytest

from keycard_agents._audit._sts_records import AuditRecord, MemoryAuditStore

pytestmark = pytest.mark.anyio


def _issued(at: float, *, user: str = "alice") -> AuditRecord:
    i = int(at)
    return AuditRecord(
        time=at,
        grant_type="urn:ietf:params:oauth:grant-type:token-exchange",
        decision="issued",
        txn=f"txn-{i % 2}",
        user=user,
        user_issuer="https://sts.example",
        actors=("planner",),
        client_id="planner",
        target="https://calendar.example/",
        scopes_granted=("read",),
        jti=f"jti-{i}",
    )


def _junk(at: float, grant: str = "junk") -> AuditRecord:
    return AuditRecord(time=at, grant_type=grant, decision="denied", error="unsupported_grant_type")


def _refused(at: float) -> AuditRecord:
    return AuditRecord(
        time=at,
        grant_type="urn:ietf:params:oauth:grant-type:token-exchange",
        decision="denied",
        client_id="mailer",
        error="invalid_target",
    )


def _wrong_secret(at: float) -> AuditRecord:
    return AuditRecord(
        time=at, grant_type="client_credentials", decision="denied", error="invalid_client"
    )


async def test_records_read_back_in_append_order_across_kinds_and_filtered() -> None:
    store = MemoryAuditStore(max_records=4, max_denied=3, max_unauthenticated=2)
    appended = []
    for i in range(12):
        record = (_issued, _refused, lambda at: _junk(at, f"junk-{at:g}"))[i % 3](float(i))
        appended.append(record)
        await store.append(record)
    # Each kind keeps its newest: issued 0,3,6,9 (4), refusals 1,4,7,10 -> 4,7,10,
    # junk 2,5,8,11 -> 8,11.
    kept = [r for r in appended if r.time in {0, 3, 6, 9, 4, 7, 10, 8, 11}]
    assert len(store) == 9
    assert await store.query(limit=100) == kept
    assert await store.query(limit=2) == kept[-2:]
    assert await store.query(txn="txn-0", limit=100) == [appended[0], appended[6]]
    assert await store.query(user="alice", since=3, until=6.5) == [appended[3], appended[6]]
    assert await store.query(agent="planner", limit=1) == [appended[9]]
    assert await store.query(agent="nobody") == []
    assert await store.query(limit=0) == []


async def test_identical_denials_are_kept_once_with_a_count_until_their_record_goes() -> None:
    store = MemoryAuditStore(max_unauthenticated=2, coalesce_window=60.0)
    for at in (1.0, 2.0, 5.0):
        await store.append(_junk(at))
    await store.append(_wrong_secret(6.0))  # another denial naming no client: its own count
    await store.append(_wrong_secret(7.0))
    records = await store.query()
    assert [(r.error, r.repeated, r.time, r.last_time) for r in records] == [
        ("unsupported_grant_type", 3, 1.0, 5.0),
        ("invalid_client", 2, 6.0, 7.0),
    ]
    assert await store.query(since=4.0) == records[1:]  # a record's time is its first
    await store.append(_junk(70.0))  # past the window: a record of its own
    await store.append(_junk(71.0, "other"))
    await store.append(_junk(72.0, "third"))  # pushes out the first two junk records
    await store.append(_junk(1.5))  # the record it matched is gone: kept afresh
    junk = [r for r in await store.query() if r.error == "unsupported_grant_type"]
    assert [(r.grant_type, r.repeated, r.time) for r in junk] == [
        ("third", 1, 72.0),
        ("junk", 1, 1.5),
    ]


async def test_resting_records_are_not_tracked_by_the_garbage_collector() -> None:
    store = MemoryAuditStore()
    for i in range(200):
        await store.append(_issued(i) if i % 2 else _refused(float(i)))
    gc.collect()
    gc.collect()  # a tuple is untracked once the tuples inside it are
    resting = [entry for kept in store._kept.values() for entry in kept]
    assert len(resting) == 200
    assert not any(gc.is_tracked(entry) for entry in resting)
