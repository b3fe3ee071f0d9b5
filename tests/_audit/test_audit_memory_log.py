"""The agents' in-memory audit log: records rest as untracked tuples, queries read them back."""

from __future__ import annotations

import gc

import pytest

from keycard_agents.audit import AgentAuditRecord, MemoryAgentAuditStore

pytestmark = pytest.mark.anyio


def _record(
    i: int, *, user: str = "alice", actors: tuple[str, ...] = ("planner",)
) -> AgentAuditRecord:
    return AgentAuditRecord(
        kind="served",
        agent="calendar",
        resource="https://calendar.example/",
        time=float(i),
        ended=float(i) + 0.5,
        txn=f"txn-{i % 3}",
        user=user,
        actors=actors,
        task_id=f"task-{i}",
        skill="book",
        outcome="completed",
        jti=f"jti-{i}",
    )


async def test_records_read_back_equal_and_filtered_newest_last() -> None:
    store = MemoryAgentAuditStore(max_records=50)
    records = [_record(i, user="bob" if i % 2 else "alice") for i in range(60)]
    for record in records:
        await store.append(record)
    assert len(store) == 50
    assert await store.query(limit=100) == records[10:]
    assert await store.query(limit=3) == records[-3:]
    assert await store.query(txn="txn-1", user="bob", limit=100) == [
        r for r in records[10:] if r.txn == "txn-1" and r.user == "bob"
    ]
    assert await store.query(since=20, until=22.5) == records[20:23]
    assert await store.query(agent="planner", limit=2) == records[-2:]
    assert await store.query(agent="calendar", limit=1) == records[-1:]
    assert await store.query(agent="nobody") == []
    assert await store.query(limit=0) == []


async def test_resting_records_are_not_tracked_by_the_garbage_collector() -> None:
    store = MemoryAgentAuditStore()
    for i in range(100):
        await store.append(_record(i))
    gc.collect()
    gc.collect()  # a tuple is untracked once the tuples inside it are
    resting = list(store._records)
    assert len(resting) == 100
    assert not any(gc.is_tracked(entry) for entry in resting)
