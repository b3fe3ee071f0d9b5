"""The audit trail query API and delegation trees, on records of a real token service."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sts_support import T0, A, B, C, D, open_world
from trace_support import run_scenario

from keycard_agents._audit._tree import build_tree
from keycard_agents.audit import (
    AgentAuditRecord,
    AgentAuditStore,
    AuditRecorder,
    AuditTrail,
    ChainSummary,
    DelegationTree,
    JsonlAgentAuditStore,
    MemoryAgentAuditStore,
    TraceNotFoundError,
    TrailEntry,
)

pytestmark = pytest.mark.anyio


async def test_txn_query_returns_the_full_tree_with_the_denied_hops_and_reasons() -> None:
    async with open_world() as w:
        s = await run_scenario(w)
        w.service.trail.add_agent_store(s.store)
        tree = await w.service.trail.tree(s.txn)

    assert tree.txn == s.txn
    assert tree.user == "alice"
    assert [h.path for h in tree.hops] == [("alice", "a")]
    first = tree.hops[0]
    assert first.decision == "issued"  # the sign-in
    assert first.resource == A
    assert first.task_id == "task-a"
    assert first.skill == "trip"
    assert first.status == "failed"
    assert first.reason == "could not book: calendar write access was denied"

    by_path = {(h.path, h.denied): h for h in tree.walk()}
    assert set(by_path) == {
        (("alice", "a"), False),
        (("alice", "a", "b"), False),
        (("alice", "a", "b", "c"), False),
        (("alice", "a", "b", D), True),
        (("alice", "a", "c"), True),
    }
    ab = by_path[("alice", "a", "b"), False]
    assert ab.status == "ok"
    assert ab.scopes_granted == ("read", "write")
    assert ab.task_id == "task-b"
    assert [c.path[-1] for c in ab.children] == ["c", D]
    assert {e.source for e in ab.entries} == {"token-service", "agent"}
    assert ab.jti is not None

    bc = by_path[("alice", "a", "b", "c"), False]
    assert bc.scopes_granted == ("read",)
    assert bc.outcome == "completed"
    assert bc.skill == "lookup"
    assert bc.duration is not None
    assert bc.duration == pytest.approx(0.022, abs=1e-6)

    bd = by_path[("alice", "a", "b", D), True]
    assert bd.status == "denied"
    assert bd.caller == "b"
    assert bd.error == "invalid_target"
    assert bd.reason is not None
    assert "may not call" in bd.reason
    assert D in bd.reason
    assert bd.scopes_granted is None
    assert bd.scopes_denied == ("read",)
    # the token service's denial and b's own record of the call are one hop
    assert sorted(e.source for e in bd.entries) == ["agent", "token-service"]

    ac = by_path[("alice", "a", "c"), True]
    assert ac.status == "denied"
    assert ac.error == "invalid_scope"
    assert ac.scopes_denied == ("write",)
    assert ac.reason is not None
    assert "exceeds what may be delegated" in ac.reason

    assert tree.count("denied") == 2
    assert tree.agents == ("a", "b", "c", D)
    assert tree.unplaced == []


async def test_tree_from_the_token_service_alone_names_agents_from_the_config() -> None:
    async with open_world() as w:
        s = await run_scenario(w)
        tree = await w.service.trail.tree(s.txn)  # no agent stores added
    paths = {h.path for h in tree.walk()}
    assert ("alice", "a", "b", "c") in paths
    assert ("alice", "a", "b", D) in paths
    bd = next(h for h in tree.walk() if h.denied and h.target == D)
    assert bd.reason is not None
    assert "may not call" in bd.reason
    assert bd.outcome is None
    assert bd.decision == "denied"


async def test_tree_from_agents_alone_learns_names_from_their_records() -> None:
    async with open_world() as w:
        s = await run_scenario(w)
    trail = AuditTrail(agents=[s.store])
    tree = await trail.tree(s.txn)
    paths = {h.path for h in tree.walk()}
    assert ("alice", "a", "b", "c") in paths  # C mapped to "c" from c's served record
    assert ("alice", "a", "b") in paths
    denied = [h for h in tree.walk() if h.status == "denied"]
    assert [h.target for h in denied] == [D]
    assert denied[0].reason is not None
    assert "may not call" in denied[0].reason


async def test_unknown_txn_is_a_clear_error() -> None:
    async with open_world() as w:
        await run_scenario(w)
        with pytest.raises(TraceNotFoundError, match="no audit record for txn 'nope'"):
            await w.service.trail.tree("nope")


async def test_query_by_user_agent_and_time_range_merges_both_sources() -> None:
    async with open_world() as w:
        s = await run_scenario(w)
        trail = w.service.trail
        trail.add_agent_store(s.store)
        everything = await trail.query(txn=s.txn)
        assert [e.time for e in everything] == sorted(e.time for e in everything)
        assert {e.source for e in everything} == {"token-service", "agent"}
        assert len(everything) == 5 + 6  # sign-in + 4 exchanges; 3 served + 3 calls

        by_user = await trail.query(user="alice")
        assert {e.txn for e in by_user} == {s.txn}
        assert await trail.query(user="bob") == []

        by_c = await trail.query(agent="c")
        # c's own record, b's call to c, the exchanges for c (issued and denied)
        assert all(e.agent == "c" or "c" in (e.actors or ()) or e.target == C for e in by_c)
        assert sorted((e.source, e.kind, e.outcome) for e in by_c) == [
            ("agent", "call", "completed"),
            ("agent", "served", "completed"),
            ("token-service", "exchange", "denied"),
            ("token-service", "exchange", "issued"),
        ]
        by_b = await trail.query(agent="b")
        assert {e.kind for e in by_b} >= {"exchange", "call", "served"}

        early = await trail.query(until=T0 + 0.012)
        assert early
        assert all(e.time <= T0 + 0.012 for e in early)
        late = await trail.query(since=T0 + 0.05)
        assert late
        assert all(e.time >= T0 + 0.05 for e in late)
        assert await trail.query(limit=3) == everything[-3:]
        assert await trail.query(limit=0) == []


async def test_chains_summarise_recent_transactions_newest_first() -> None:
    async with open_world() as w:
        first = await run_scenario(w)
        w.clock.advance(10)
        second_token = await w.user_token(scope="read")
        r = await w.exchange("a", second_token, B)
        assert r.status_code == 200
        chains = await w.service.trail.chains()
        assert [c.txn for c in chains][1] == first.txn
        newest = chains[0]
        assert isinstance(newest, ChainSummary)
        assert (newest.user, newest.hops, newest.denied) == ("alice", 2, 0)
        older = chains[1]
        assert (older.hops, older.denied) == (5, 2)
        assert older.agents == ("a", "b", "c", D)
        only_c = await w.service.trail.chains(agent="c")
        assert [c.txn for c in only_c] == [first.txn]
        assert await w.service.trail.chains(user="nobody") == []
        assert len(await w.service.trail.chains(limit=1)) == 1


async def test_hops_missing_from_the_trail_are_added_as_unknown() -> None:
    async with open_world() as w:
        # a user token minted directly (no sign-in record), then one exchange
        user = w.service.issue_user_token("alice", audience=A, scopes=["read"], txn="t-1")
        r = await w.exchange("a", user, B)
        assert r.status_code == 200
        tree = await w.service.trail.tree("t-1")
    assert len(tree.hops) == 1
    root = tree.hops[0]
    assert root.path == ("alice", "a")
    assert root.status == "unknown"
    assert root.entries == []
    assert [c.path for c in root.children] == [("alice", "a", "b")]
    assert root.children[0].status == "ok"


def test_entries_without_a_place_are_kept_aside() -> None:
    entry = TrailEntry(
        source="token-service", kind="token-request", time=1.0, outcome="denied", txn="x"
    )
    tree = build_tree("x", [entry])
    assert tree.hops == []
    assert tree.unplaced == [entry]


async def test_tree_survives_a_json_round_trip() -> None:
    async with open_world() as w:
        s = await run_scenario(w)
        w.service.trail.add_agent_store(s.store)
        tree = await w.service.trail.tree(s.txn)
    data = json.loads(json.dumps(tree.to_dict()))
    again = DelegationTree.from_dict(data)
    assert again.to_dict() == tree.to_dict()
    assert data["hops"][0]["children"][0]["children"][1]["status"] == "denied"
    with pytest.raises(ValueError, match="txn"):
        DelegationTree.from_dict({"hops": []})


async def test_recorder_keeps_identifiers_only_and_fills_times(tmp_path: Path) -> None:
    async with open_world() as w:
        s = await run_scenario(w, store=MemoryAgentAuditStore())
    records = await s.store.query()
    assert isinstance(s.store, MemoryAgentAuditStore)
    assert len(s.store) == 6
    dumped = json.dumps([r.model_dump() for r in records])
    assert s.user_token not in dumped
    assert s.user_token.split(".")[2] not in dumped
    served_b = next(r for r in records if r.kind == "served" and r.agent == "b")
    assert served_b.actors == ("a",)
    assert served_b.resource == B
    assert served_b.ended is not None
    assert served_b.ended > served_b.time
    assert served_b.jti is not None


async def test_recorder_without_principal_and_repr() -> None:
    clock_value = [100.0]
    recorder = AuditRecorder(agent="solo", clock=lambda: clock_value[0])
    assert isinstance(recorder.store, AgentAuditStore)
    assert recorder.now() == 100.0
    record = await recorder.record_served(
        principal=None, task_id="t", skill="ping", outcome="completed", started=99.0
    )
    assert (record.user, record.txn, record.actors, record.ended) == (None, None, (), 100.0)
    call = await recorder.record_call(
        principal=None, target=C, outcome="failed", started=99.5, scopes_requested=["a", "a"]
    )
    assert call.scopes_requested == ("a",)
    assert repr(recorder) == "AuditRecorder(agent='solo', store=MemoryAgentAuditStore)"


async def test_jsonl_agent_store_round_trip_skips_damaged_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "agent.jsonl"
    store = JsonlAgentAuditStore(path)
    assert await store.query() == []
    recorder = AuditRecorder(agent="b", store=store, clock=lambda: 5.0)
    await recorder.record_call(principal=None, target=C, outcome="completed", started=1.0)
    with path.open("a", encoding="utf-8") as fh:
        fh.write('{"kind": "call", "agent": "b", "ti')  # a crash mid-line
    await recorder.record_call(principal=None, target=D, outcome="denied", started=2.0)
    with path.open("a", encoding="utf-8") as fh:
        fh.write("\nnot json\n\n")
    records = await store.query()
    assert [r.target for r in records] == [C, D]
    assert [r.target for r in await store.query(since=1.5)] == [D]
    assert [r.target for r in await store.query(until=1.5)] == [C]
    assert await store.query(agent="x") == []
    assert await store.query(limit=0) == []


async def test_memory_agent_store_is_bounded_and_filters() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        MemoryAgentAuditStore(max_records=0)
    store = MemoryAgentAuditStore(max_records=2)
    for i in range(3):
        await store.append(
            AgentAuditRecord(
                kind="served",
                agent="a",
                time=float(i),
                outcome="completed",
                txn=f"t{i}",
                user="u",
                actors=("x",),
            )
        )
    assert [r.txn for r in await store.query()] == ["t1", "t2"]
    assert [r.txn for r in await store.query(agent="x")] == ["t1", "t2"]
    assert await store.query(txn="t0") == []
    assert await store.query(user="v") == []
