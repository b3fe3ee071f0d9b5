"""MemoryTaskStore on its own: who sees a task, the limits per owner and overall, fair
eviction, finished tasks at rest, and paging (edges a mutation run found unpinned)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from keycard_agents import Principal
from keycard_agents._runtime._store import _decode_cursor, _encode_cursor
from keycard_agents.a2a import (
    InternalError,
    InvalidParamsError,
    Message,
    Part,
    Role,
    Task,
    TaskState,
    TaskStatus,
)
from keycard_agents.runtime import (
    CapacityExceededError,
    MemoryTaskStore,
    TaskQuotaExceededError,
    TaskRecord,
    TaskTooLargeError,
    TaskViewer,
)

pytestmark = pytest.mark.anyio

ISS = "https://sts.test"
T0 = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)
ALICE = TaskViewer(owner="alice", scopes=frozenset({"notes"}))
_ids = iter(range(1_000_000))


def record(
    owner: str | None = "alice",
    state: TaskState = TaskState.WORKING,
    *,
    size: int = 0,
    scopes: tuple[str, ...] = (),
    context: str = "ctx",
    at: datetime | None = None,
    task_id: str | None = None,
) -> TaskRecord:
    task = Task(
        id=task_id or f"t{next(_ids)}",
        context_id=context,
        status=TaskStatus(state=state, timestamp=at),
    )
    return TaskRecord(task=task, owner=owner, skill_id="notes", scopes=scopes, size=size)


async def stored(store: MemoryTaskStore, *records: TaskRecord) -> list[TaskRecord]:
    for each in records:
        await store.create(each)
    return list(records)


async def move(store: MemoryTaskStore, rec: TaskRecord, state: TaskState) -> None:
    rec.task = rec.task.model_copy(update={"status": TaskStatus(state=state)})
    await store.save(rec)


async def ids(store: MemoryTaskStore, viewer: TaskViewer = ALICE, **filters: Any) -> list[str]:
    return [r.task.id for r in (await store.list(viewer=viewer, **filters)).records]


async def present(store: MemoryTaskStore, *records: TaskRecord) -> list[bool]:
    return [await store.get(r.task.id) is not None for r in records]


# -- visibility -------------------------------------------------------------------------


def test_a_task_is_seen_only_by_its_owner_holding_every_scope_it_required() -> None:
    viewer = TaskViewer(owner="alice", scopes=frozenset({"a", "b"}))
    assert viewer.may_see_task_of("alice", ("a", "b"))
    assert viewer.may_see_task_of("alice", ())
    assert not viewer.may_see_task_of("alice", ("a", "c"))
    assert not viewer.may_see_task_of("bob", ())
    assert not viewer.may_see_task_of(None, ())
    assert not TaskViewer(owner=None).may_see_task_of(None, ())
    assert TaskViewer.of(None) == TaskViewer(owner=None)


def test_a_principal_sees_its_own_tasks_through_its_viewer() -> None:
    alice = Principal(user="alice", issuer=ISS, audience=("x",), scopes=frozenset({"notes"}))
    bob = Principal(user="bob", issuer=ISS, audience=("x",), scopes=frozenset({"notes"}))
    viewer = TaskViewer.of(alice)
    assert viewer.may_see_task_of(alice.task_owner, ("notes",))
    assert not viewer.may_see_task_of(bob.task_owner, ("notes",))
    assert not viewer.may_see_task_of(alice.task_owner, ("admin",))


# -- finished tasks at rest ---------------------------------------------------------------


async def test_a_finished_task_reads_back_whole() -> None:
    store = MemoryTaskStore()
    rec = record(scopes=("notes",), size=120)
    rec.arguments = {"text": "hello"}
    rec.replies = [Message(message_id="m1", role=Role.USER, parts=[Part(text="yes")])]
    await store.create(rec)
    rec.task = rec.task.model_copy(
        update={"status": TaskStatus(state=TaskState.COMPLETED, timestamp=T0)}
    )
    await store.save(rec)
    back = await store.get(rec.task.id)
    assert back is not None
    assert back.task == rec.task
    assert (back.owner, back.skill_id, back.scopes, back.size) == (
        "alice",
        "notes",
        ("notes",),
        120,
    )
    assert back.arguments == {"text": "hello"}
    assert back.replies == rec.replies
    assert back.sequence == rec.sequence == 1
    listed = (await store.list(viewer=ALICE)).records
    assert [(r.task, r.owner, r.sequence) for r in listed] == [(rec.task, "alice", 1)]
    assert await store.get("unknown") is None


async def test_a_task_id_is_stored_once() -> None:
    store = MemoryTaskStore()
    (first,) = await stored(store, record(task_id="same"))
    with pytest.raises(InternalError, match=r"^task id same already exists$"):
        await store.create(record("bob", task_id="same"))
    assert await store.get("same") is first
    assert len(store) == 1


# -- the limits of one owner --------------------------------------------------------------


async def test_an_owner_makes_room_with_its_finished_tasks_before_its_waiting_ones() -> None:
    store = MemoryTaskStore(max_tasks_per_owner=2)
    done, waiting = await stored(store, record(), record())
    await move(store, done, TaskState.COMPLETED)
    await move(store, waiting, TaskState.INPUT_REQUIRED)
    third = record()
    await store.create(third)
    assert await present(store, done, waiting, third) == [False, True, True]
    fourth = record()  # nothing finished left: the waiting task goes
    await store.create(fourth)
    assert await present(store, waiting, third, fourth) == [False, True, True]
    with pytest.raises(TaskQuotaExceededError) as caught:  # both running
        await store.create(record())
    assert caught.value.http_status == 429
    assert len(store) == 2


async def test_an_owner_over_its_bytes_gives_up_its_oldest_finished_tasks() -> None:
    store = MemoryTaskStore(max_bytes_per_owner=100)
    first, second = await stored(store, record(size=40), record(size=40))
    for rec in (first, second):
        await move(store, rec, TaskState.COMPLETED)
    assert store.bytes == 80
    third = record(size=60)
    await store.create(third)  # 140 > 100: the oldest (40) goes, 100 is within the limit
    assert await present(store, first, second, third) == [False, True, True]
    assert store.bytes == 100
    with pytest.raises(TaskTooLargeError, match="over the limit of 100 bytes per caller"):
        await store.create(record(size=101))
    await store.create(record("bob", size=100))  # another owner's share is its own
    assert store.bytes == 200


async def test_a_task_that_runs_again_is_never_evicted_as_finished() -> None:
    store = MemoryTaskStore(max_tasks_per_owner=2)
    again, done = await stored(store, record(), record())
    await move(store, again, TaskState.COMPLETED)
    await move(store, again, TaskState.WORKING)  # saved back as running
    await move(store, done, TaskState.COMPLETED)
    await store.create(record())
    assert await present(store, again, done) == [True, False]
    with pytest.raises(TaskQuotaExceededError):
        await store.create(record())


# -- the limits of the whole store -----------------------------------------------------


async def test_a_full_store_evicts_the_oldest_finished_task_of_the_owner_holding_most() -> None:
    store = MemoryTaskStore(max_tasks=5)
    # bob (alphabetically after alice) holds fewer tasks: alice's oldest goes
    a1, a2, a3, b1 = await stored(store, record(), record(), record(), record("bob"))
    for rec in (a1, a2, b1):
        await move(store, rec, TaskState.COMPLETED)
    await store.create(record("carol"))  # 5 tasks: full from now on
    await store.create(record("carol"))
    assert await present(store, a1, a2, a3, b1) == [False, True, True, True]
    await store.create(record("carol"))  # alice (2) and carol (2) lead; only alice has finished
    assert await present(store, a2, a3, b1) == [False, True, True]
    await store.create(record("carol"))  # carol leads, nothing of hers finished: bob's goes
    assert await present(store, b1) == [False]
    assert len(store) == 5


async def test_on_a_tie_the_owner_holding_tasks_longest_gives_first() -> None:
    store = MemoryTaskStore(max_tasks=4)
    a1, _, b1, _ = await stored(store, record(), record(), record("bob"), record("bob"))
    for rec in (a1, b1):
        await move(store, rec, TaskState.COMPLETED)
    await store.create(record("carol"))
    assert await present(store, a1, b1) == [False, True]


async def test_an_owner_whose_tasks_all_went_queues_again_from_the_back() -> None:
    store = MemoryTaskStore(max_tasks=3)
    a0, b0, c0 = await stored(store, record(), record("bob"), record("carol"))
    await move(store, a0, TaskState.COMPLETED)
    await move(store, b0, TaskState.COMPLETED)
    await store.create(record("dave"))  # alice and bob tie; alice came first
    assert await present(store, a0, b0) == [False, True]
    a1 = record()  # alice is back, after carol and dave; bob's is the only finished task
    await store.create(a1)
    assert await present(store, b0) == [False]
    await move(store, a1, TaskState.COMPLETED)
    await move(store, c0, TaskState.COMPLETED)
    await store.create(record("eve"))  # alice and carol tie; carol has held tasks longer
    assert await present(store, a1, c0) == [True, False]


async def test_a_stale_finished_entry_does_not_stop_the_search_for_room() -> None:
    store = MemoryTaskStore(max_tasks=4)
    a1, _, b1, _ = await stored(store, record(), record(), record("bob"), record())
    await move(store, a1, TaskState.COMPLETED)
    await move(store, a1, TaskState.WORKING)  # alice's only "finished" task runs again
    await move(store, b1, TaskState.COMPLETED)
    await store.create(record("carol"))  # alice holds most but has nothing finished
    assert await present(store, a1, b1) == [True, False]


async def test_a_full_store_takes_the_requesters_own_waiting_task_never_anothers() -> None:
    store = MemoryTaskStore(max_tasks=3)
    mine, theirs, running = await stored(store, record(), record("bob"), record("bob"))
    await move(store, mine, TaskState.AUTH_REQUIRED)
    await move(store, theirs, TaskState.INPUT_REQUIRED)
    newer = record()
    await store.create(newer)
    assert await present(store, mine, theirs, running, newer) == [False, True, True, True]
    with pytest.raises(CapacityExceededError) as caught:  # alice has nothing to give up
        await store.create(record())
    assert caught.value.http_status == 503
    with pytest.raises(CapacityExceededError):  # nor has dave, who holds nothing yet
        await store.create(record("dave"))
    with pytest.raises(CapacityExceededError):  # nor the anonymous callers
        await store.create(record(None))
    assert len(store) == 3


async def test_the_store_bytes_are_a_limit_too() -> None:
    store = MemoryTaskStore(max_bytes=100)
    old, kept = await stored(store, record(size=50), record("bob", size=50))
    await move(store, old, TaskState.FAILED)
    await store.create(record("carol", size=50))
    assert await present(store, old, kept) == [False, True]
    assert store.bytes == 100
    with pytest.raises(CapacityExceededError, match=r"holds 2 tasks \(100 bytes\)"):
        await store.create(record("dave", size=1))


async def test_evicted_tasks_give_back_their_count_and_bytes() -> None:
    store = MemoryTaskStore(max_tasks_per_owner=2, max_bytes_per_owner=1000)
    first, second = await stored(store, record(size=300), record(size=200))
    await move(store, first, TaskState.COMPLETED)
    await move(store, second, TaskState.REJECTED)
    assert (len(store), store.bytes) == (2, 500)
    third = record(size=100)
    await store.create(third)
    assert (len(store), store.bytes) == (2, 300)
    await move(store, third, TaskState.CANCELED)
    for _ in range(3):  # each new task evicts exactly one finished one
        newest = record(size=100)
        await store.create(newest)
        await move(store, newest, TaskState.COMPLETED)
        assert (len(store), store.bytes) == (2, 200)
    await store.create(record(size=901))  # needs both gone: 100 + 901 > 1000
    assert (len(store), store.bytes) == (1, 901)
    # alice's book was emptied and made anew: her count starts from zero again
    store2 = MemoryTaskStore(max_tasks_per_owner=1)
    only = record()
    await store2.create(only)
    await move(store2, only, TaskState.COMPLETED)
    await store2.create(record())
    assert (len(store2), store2.bytes) == (1, 0)


async def test_a_task_that_grows_is_counted_at_its_new_size() -> None:
    store = MemoryTaskStore()
    rec = record(size=10)
    await store.create(rec)
    rec.size = 70
    await store.save(rec)
    assert store.bytes == 70
    await move(store, rec, TaskState.COMPLETED)
    assert store.bytes == 70
    await store.save(record(size=5))  # unknown task: nothing happens
    assert (len(store), store.bytes) == (1, 70)
    rec.size = -1  # a count below zero is zero
    await store.save(rec)
    assert store.bytes == 0
    await store.create(record(size=-1))
    assert (len(store), store.bytes) == (2, 0)


# -- anonymous tasks ----------------------------------------------------------------------


async def test_anonymous_tasks_are_dropped_once_they_stop_and_share_one_quota() -> None:
    store = MemoryTaskStore(max_anonymous_tasks=2)
    first, second = await stored(store, record(None, size=10), record(None, size=10))
    with pytest.raises(TaskQuotaExceededError, match="anonymous"):
        await store.create(record(None))
    await move(store, first, TaskState.INPUT_REQUIRED)
    await move(store, second, TaskState.COMPLETED)
    assert (len(store), store.bytes) == (0, 0)
    await stored(store, record(None), record(None))


# -- listing and paging ---------------------------------------------------------------------


async def test_pages_go_from_newest_to_oldest_and_end_without_a_token() -> None:
    store = MemoryTaskStore()
    made = await stored(store, *(record() for _ in range(5)))
    newest_first = [r.task.id for r in reversed(made)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await store.list(viewer=ALICE, limit=2, cursor=cursor)
        assert page.total == 5
        seen += [r.task.id for r in page.records]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert (seen, pages) == (newest_first, 3)
    exact = await store.list(viewer=ALICE, limit=5)
    assert exact.next_cursor is None  # nothing after the last page
    assert [r.task.id for r in exact.records] == newest_first


async def test_a_page_is_50_tasks_by_default() -> None:
    store = MemoryTaskStore()
    await stored(store, *(record() for _ in range(51)))
    page = await store.list(viewer=ALICE)
    assert (len(page.records), page.total) == (50, 51)
    assert page.next_cursor is not None
    assert len((await store.list(viewer=ALICE, cursor=page.next_cursor)).records) == 1


def test_page_tokens_are_url_safe_and_read_back_their_position() -> None:
    for sequence in [*range(0, 2000), 123_456_789]:
        token = _encode_cursor(sequence)
        assert re.fullmatch(r"[A-Za-z0-9_-]+", token), token
        assert _decode_cursor(token) == sequence


@pytest.mark.parametrize(
    "token", ["%%%", "djE", _encode_cursor(1)[:-1] + "*", "djI6NQ", "djE6eA", "_w"]
)
async def test_a_bad_page_token_is_an_invalid_param_naming_the_field(token: str) -> None:
    store = MemoryTaskStore()
    with pytest.raises(InvalidParamsError) as caught:
        await store.list(viewer=ALICE, cursor=token)
    assert caught.value.data == {
        "errors": [{"field": "pageToken", "message": "not a valid page token"}]
    }


async def test_listings_filter_by_context_state_and_strictly_later_updates() -> None:
    store = MemoryTaskStore()
    early, late, other = await stored(
        store,
        record(at=T0),
        record(at=T0 + timedelta(seconds=5)),
        record(context="elsewhere", at=T0 + timedelta(seconds=5)),
    )
    await stored(store, record("bob", at=T0), record(scopes=("admin",), at=T0))
    assert await ids(store, context_id="ctx") == [late.task.id, early.task.id]
    assert await ids(store, updated_after=T0) == [other.task.id, late.task.id]
    assert await ids(store, updated_after=T0 + timedelta(seconds=5)) == []
    await move(store, early, TaskState.COMPLETED)  # its new status has no timestamp
    assert await ids(store, state=TaskState.COMPLETED) == [early.task.id]
    assert await ids(store, state=TaskState.WORKING, context_id="ctx") == [late.task.id]
    assert await ids(store, updated_after=T0 - timedelta(seconds=1)) == [
        other.task.id,
        late.task.id,
    ]
    done = await store.get(early.task.id)
    assert done is not None
    done.task = done.task.model_copy(
        update={"status": TaskStatus(state=TaskState.COMPLETED, timestamp=T0)}
    )
    await store.save(done)
    assert await ids(store, updated_after=T0) == [other.task.id, late.task.id]
    assert early.task.id in await ids(store, updated_after=T0 - timedelta(seconds=1))


# -- configuration ------------------------------------------------------------------------


async def test_the_default_limits() -> None:
    """10,000 tasks, 1,000 per owner, 100 anonymous ones running at once."""
    store = MemoryTaskStore()
    assert (store.max_bytes, store.max_bytes_per_owner) == (256 * 1024 * 1024, 16 * 1024 * 1024)
    for _ in range(100):
        await store.create(record(None))
    with pytest.raises(TaskQuotaExceededError, match=r"^100 anonymous tasks are already running"):
        await store.create(record(None))
    for _ in range(1000):
        await store.create(record("alice"))
    with pytest.raises(TaskQuotaExceededError, match="limits per caller are 1000 tasks"):
        await store.create(record("alice"))
    for owner in range(8):
        for _ in range(1000):
            await store.create(record(f"owner-{owner}"))
    for _ in range(900):
        await store.create(record("bob"))
    assert len(store) == 10_000
    with pytest.raises(CapacityExceededError, match=r"\(limits: 10000 tasks"):
        await store.create(record("carol"))


@pytest.mark.parametrize(
    "name",
    ["max_tasks", "max_tasks_per_owner", "max_bytes", "max_bytes_per_owner", "max_anonymous_tasks"],
)
def test_each_limit_must_be_at_least_one(name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be at least 1$"):
        MemoryTaskStore(**{name: 0})
    assert getattr(MemoryTaskStore(**{name: 1}), name) == 1


async def test_a_store_of_one_task_holds_one() -> None:
    store = MemoryTaskStore(
        max_tasks=1,
        max_tasks_per_owner=1,
        max_bytes=1,
        max_bytes_per_owner=1,
        max_anonymous_tasks=1,
    )
    (only,) = await stored(store, record(size=1))
    with pytest.raises(TaskQuotaExceededError):
        await store.create(record())
    await move(store, only, TaskState.COMPLETED)
    await store.create(record(size=1))
    assert (len(store), store.bytes) == (1, 1)


async def test_tasks_are_numbered_in_the_order_they_were_stored() -> None:
    store = MemoryTaskStore()
    made = await stored(store, record(), record("bob"), record(None), record())
    assert [r.sequence for r in made] == [1, 2, 3, 4]


async def test_the_oldest_interrupted_task_is_the_one_interrupted_first() -> None:
    store = MemoryTaskStore(max_tasks_per_owner=2)
    w1, w2 = await stored(store, record(), record())
    await move(store, w1, TaskState.INPUT_REQUIRED)
    await move(store, w2, TaskState.INPUT_REQUIRED)
    await move(store, w1, TaskState.WORKING)  # answered ...
    await move(store, w1, TaskState.INPUT_REQUIRED)  # ... and asking again: now the newer
    await store.create(record())
    assert await present(store, w1, w2) == [True, False]


async def test_a_full_store_evicts_as_many_finished_tasks_as_the_new_one_needs() -> None:
    store = MemoryTaskStore(max_bytes=100)
    first, second, running = await stored(
        store, record(size=40), record("bob", size=40), record("carol", size=20)
    )
    for rec in (first, second):
        await move(store, rec, TaskState.COMPLETED)
    await store.create(record("dave", size=70))  # 170 bytes: one finished task is not enough
    assert await present(store, first, second, running) == [False, False, True]
    assert store.bytes == 90


async def test_a_full_store_takes_as_many_of_the_requesters_waiting_tasks_as_needed() -> None:
    store = MemoryTaskStore(max_bytes=100)
    w1, w2, running = await stored(store, record(size=40), record(size=40), record("bob", size=20))
    for rec in (w1, w2):
        await move(store, rec, TaskState.INPUT_REQUIRED)
    await store.create(record(size=70))
    assert await present(store, w1, w2, running) == [False, False, True]
    assert store.bytes == 90
