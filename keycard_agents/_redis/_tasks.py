"""The task store on Redis, shared by the replicas of one agent (A2A 1.0 §3.1.6 streams).

Key layout (``P`` is the prefix plus a digest of the store's namespace, the agent's URL;
``T`` a task id, ``O`` a digest of the owner):

- ``P:task:{T}`` hash: ``rec`` (the record as JSON), ``rev`` (writes so far), ``kind``
  (``run``, ``int`` for interrupted, ``fin``); ``P:task:{T}:lease`` names the replica
  running it and expires unless that replica renews it. One slot per task: every write
  is one script (compare-and-set on ``rev``, refused once ``fin``) that also publishes
  the event to ``P:task-events``.
- ``P:owner:{O}:*``: the owner's book (its tasks by expiry, finished and interrupted
  ones by age, sizes, bytes, creation sequence), one slot per owner: admission,
  eviction and listing are one script each.

Retention: a finished or interrupted task expires ``retention`` seconds after its last
write. A replica that dies leaves its running tasks with a lease that expires; the
next read on any replica ends such a task FAILED (:data:`RUNNER_LOST`).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from coredis.exceptions import ResponseError

from keycard_agents._a2a.errors import InternalError, TaskNotCancelableError
from keycard_agents._a2a.types import (
    Message,
    Part,
    Role,
    StreamResponse,
    Task,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from keycard_agents._errors import StoreUnavailableError
from keycard_agents._logs import get_logger
from keycard_agents._redis._connection import (
    RedisConnection,
    RedisSettings,
    open_redis,
)
from keycard_agents._runtime._shared import TaskConflictError
from keycard_agents._runtime._store import (
    TaskPage,
    TaskQuotaExceededError,
    TaskRecord,
    TaskTooLargeError,
    TaskViewer,
    _decode_cursor,
    _encode_cursor,
    _updated_after,
)

if sys.version_info >= (3, 11):  # pragma: no cover - depends on the interpreter
    from builtins import BaseExceptionGroup
else:  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = ["RUNNER_LOST", "RedisTaskStore", "TaskStoreUnavailableError"]

logger = get_logger("keycard_agents.redis")

#: The message of a task whose replica stopped (killed) while it ran.
RUNNER_LOST = "The replica running this task stopped before it finished; send the request again."

_SAVE = """
local rev = redis.call('HGET', KEYS[1], 'rev')
if ARGV[9] == 'create' then
  if rev then return redis.error_reply('KEYCARD EXISTS') end
  rev = 0
else
  if not rev then return redis.error_reply('KEYCARD GONE') end
  rev = tonumber(rev)
  local kind = redis.call('HGET', KEYS[1], 'kind')
  if kind == 'fin' then return redis.error_reply('KEYCARD FINISHED') end
  if rev ~= tonumber(ARGV[1]) then return redis.error_reply('KEYCARD CONFLICT') end
  if ARGV[9] == 'reap' and (kind ~= 'run' or redis.call('EXISTS', KEYS[2]) == 1) then
    return redis.error_reply('KEYCARD CONFLICT')
  end
end
rev = rev + 1
redis.call('HSET', KEYS[1], 'rec', ARGV[2], 'rev', rev, 'kind', ARGV[3])
if ARGV[3] == 'run' then
  redis.call('SET', KEYS[2], ARGV[8], 'PX', ARGV[4])
  redis.call('PERSIST', KEYS[1])
else
  redis.call('DEL', KEYS[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
if ARGV[7] ~= '' then
  redis.call('PUBLISH', ARGV[6], 'e ' .. rev .. ' ' .. ARGV[10] .. ' ' .. ARGV[7])
end
return rev
"""

_READ = """
local found = redis.call('HMGET', KEYS[1], 'rec', 'rev', 'kind')
if not found[1] then return false end
return {found[1], found[2], found[3], redis.call('EXISTS', KEYS[2])}
"""

# KEYS: tasks (zset id -> expiry ms), fin (zset id -> ms), int (zset), sizes (hash),
# seq (zset id -> sequence), meta (hash: bytes, seq)
_BOOK_LIB = """
local function forget(id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZREM', KEYS[5], id)
  local size = tonumber(redis.call('HGET', KEYS[4], id) or '0')
  redis.call('HDEL', KEYS[4], id)
  redis.call('HINCRBY', KEYS[6], 'bytes', -size)
end
local function sweep(now)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do forget(id) end
end
"""

# ARGV: now, id, size, max_tasks, max_bytes, may_evict_interrupted (1/0)
_ADMIT = (
    _BOOK_LIB
    + """
local now = tonumber(ARGV[1])
local size = tonumber(ARGV[3])
sweep(now)
local evicted = {}
while redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4])
    or tonumber(redis.call('HGET', KEYS[6], 'bytes') or '0') + size > tonumber(ARGV[5]) do
  local victim = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not victim and ARGV[6] == '1' then victim = redis.call('ZRANGE', KEYS[3], 0, 0)[1] end
  if not victim then
    return redis.error_reply('KEYCARD QUOTA ' .. redis.call('ZCARD', KEYS[1]) .. ' '
      .. (redis.call('HGET', KEYS[6], 'bytes') or '0'))
  end
  forget(victim)
  table.insert(evicted, victim)
end
redis.call('ZADD', KEYS[1], '+inf', ARGV[2])
redis.call('HSET', KEYS[4], ARGV[2], size)
redis.call('HINCRBY', KEYS[6], 'bytes', size)
local seq = redis.call('HINCRBY', KEYS[6], 'seq', 1)
redis.call('ZADD', KEYS[5], seq, ARGV[2])
table.insert(evicted, 1, seq)
return evicted
"""
)

# ARGV: now, id, kind, size, expires_at (ms), drop (1/0)
_BOOK_UPDATE = (
    _BOOK_LIB
    + """
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then return 0 end
if ARGV[6] == '1' then forget(ARGV[2]) return 1 end
local old = tonumber(redis.call('HGET', KEYS[4], ARGV[2]) or '0')
redis.call('HSET', KEYS[4], ARGV[2], ARGV[4])
redis.call('HINCRBY', KEYS[6], 'bytes', tonumber(ARGV[4]) - old)
if ARGV[3] == 'run' then
  redis.call('ZADD', KEYS[1], '+inf', ARGV[2])
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('ZREM', KEYS[3], ARGV[2])
elseif ARGV[3] == 'int' then
  redis.call('ZADD', KEYS[1], ARGV[5], ARGV[2])
  redis.call('ZADD', KEYS[3], ARGV[1], ARGV[2])
  redis.call('ZREM', KEYS[2], ARGV[2])
else
  redis.call('ZADD', KEYS[1], ARGV[5], ARGV[2])
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
  redis.call('ZREM', KEYS[3], ARGV[2])
end
return 1
"""
)

# ARGV: now. Returns the owner's task ids, newest first, with their sequence numbers.
_BOOK_LIST = (
    _BOOK_LIB
    + """
sweep(tonumber(ARGV[1]))
return redis.call('ZREVRANGE', KEYS[5], 0, -1, 'WITHSCORES')
"""
)


class TaskStoreUnavailableError(InternalError):
    """The shared task store (Redis) cannot be reached: HTTP 503, retry later."""

    http_status = 503
    reason = "UNAVAILABLE"
    default_message = "The task store is unavailable; retry later"


def _kind(state: TaskState) -> str:
    if state.is_terminal:
        return "fin"
    if state.is_interrupted:
        return "int"
    return "run"


def _dump(record: TaskRecord) -> str:
    return json.dumps(
        {
            "task": record.task.model_dump(mode="json", by_alias=True, exclude_none=True),
            "owner": record.owner,
            "skill_id": record.skill_id,
            "arguments": record.arguments,
            "replies": [
                m.model_dump(mode="json", by_alias=True, exclude_none=True) for m in record.replies
            ],
            "sequence": record.sequence,
            "scopes": list(record.scopes),
            "size": record.size,
        },
        separators=(",", ":"),
    )


def _load(raw: bytes, revision: int) -> TaskRecord:
    data = json.loads(raw)
    return TaskRecord(
        task=Task.model_validate(data["task"]),
        owner=data["owner"],
        skill_id=data["skill_id"],
        arguments=data["arguments"],
        replies=[Message.model_validate(m) for m in data["replies"]],
        sequence=data["sequence"],
        scopes=tuple(data["scopes"]),
        size=data["size"],
        revision=revision,
    )


class _Watch:
    """One subscriber's view of a task's events (see ``TaskWatch``)."""

    def __init__(self, store: RedisTaskStore, task_id: str, buffer: int) -> None:
        self._store = store
        self.task_id = task_id
        self._after = 0
        self.send: MemoryObjectSendStream[tuple[int, StreamResponse]]
        self._receive: MemoryObjectReceiveStream[tuple[int, StreamResponse]]
        self.send, self._receive = anyio.create_memory_object_stream[tuple[int, StreamResponse]](
            buffer
        )
        self.overflowed = False

    def start_after(self, revision: int) -> None:
        self._after = revision

    async def events(self) -> AsyncIterator[StreamResponse]:
        while True:
            with anyio.move_on_after(self._store.lease / 2) as idle:
                try:
                    revision, event = await self._receive.receive()
                except anyio.EndOfStream:
                    break
            if idle.cancelled_caught:
                # Quiet: if the runner died, or an event was lost while Redis was away,
                # the stored record says how the task ended.
                final = await self._store._ended(self.task_id, self._after)
                if final is not None:
                    yield final
                    return
                continue
            if revision <= self._after:
                continue
            self._after = revision
            yield event
            status = event.status_update
            if status is not None and status.status.state.is_terminal:
                return
        if self.overflowed:
            raise InternalError(
                f"the event stream of task {self.task_id} fell too far behind and was "
                "closed; subscribe again to resume"
            )

    def close(self) -> None:
        self._store._unwatch(self)
        self.send.close()
        self._receive.close()


class RedisTaskStore:
    """Tasks on Redis, shared by replicas: a ``SharedTaskStore`` for :class:`TaskRuntime`.

    ``TaskRuntime(agent, store=RedisTaskStore(settings))`` (or ``serve(..., store=...)``).
    The store connects when the runtime starts (an unreachable Redis is a clear error
    then) and disconnects when it stops.

    Limits per owner, as :class:`~keycard_agents.MemoryTaskStore` enforces them:
    ``max_tasks_per_owner`` (1,000), ``max_bytes_per_owner`` (16 MiB) and
    ``max_anonymous_tasks`` (100, all anonymous callers of all replicas together);
    an owner over its share evicts its own oldest finished task, then its oldest
    interrupted one, else creation fails with HTTP 429. The store-wide bound is Redis'
    own ``maxmemory`` (use the ``noeviction`` policy). ``retention`` (24 h) is how long
    a finished or interrupted task stays readable after its last change; ``lease``
    (15 s) how long a task whose replica stopped renewing it stays WORKING before any
    replica ends it FAILED. ``namespace`` (``create_app`` passes the agent's URL) keeps
    the tasks of different agents sharing one Redis apart: give each agent its own.
    """

    def __init__(
        self,
        settings: RedisSettings | str,
        *,
        max_tasks_per_owner: int = 1_000,
        max_bytes_per_owner: int = 16 * 1024 * 1024,
        max_anonymous_tasks: int = 100,
        retention: float = 24 * 3600.0,
        lease: float = 15.0,
        subscriber_buffer: int = 256,
        clock: Callable[[], float] | None = None,
        namespace: str = "",
    ) -> None:
        self.settings = settings if isinstance(settings, RedisSettings) else RedisSettings(settings)
        limits = {
            "max_tasks_per_owner": max_tasks_per_owner,
            "max_bytes_per_owner": max_bytes_per_owner,
            "max_anonymous_tasks": max_anonymous_tasks,
        }
        for name, value in limits.items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1")
        if retention <= 0 or lease <= 0:
            raise ValueError("retention and lease must be positive")
        self.max_tasks_per_owner = max_tasks_per_owner
        self.max_bytes_per_owner = max_bytes_per_owner
        self.max_anonymous_tasks = max_anonymous_tasks
        self.retention = retention
        self.lease = lease
        self._buffer = subscriber_buffer
        self._clock = clock or time.time
        #: Keeps the tasks of different agents sharing one Redis apart (their URL).
        self.namespace = namespace
        self._ns = hashlib.sha256(namespace.encode()).hexdigest()[:16]
        #: This replica, as its leases name it.
        self.replica = uuid.uuid4().hex[:12]
        self._redis: RedisConnection | None = None
        self._running: set[str] = set()
        self._watches: dict[str, list[_Watch]] = {}
        self._cancel: Callable[[str], None] | None = None
        self._scripts: dict[str, Any] = {}

    # -- lifetime ------------------------------------------------------------------------

    @property
    def channel(self) -> str:
        return f"{self.settings.prefix}:{self._ns}:task-events"

    @property
    def redis(self) -> RedisConnection:
        if self._redis is None:
            raise InternalError(
                "the Redis task store is not connected: it connects while its TaskRuntime runs"
            )
        return self._redis

    @asynccontextmanager
    async def attach(self, cancel: Callable[[str], None]) -> AsyncIterator[None]:
        """Connect, follow the event channel and renew leases while the runtime runs."""
        async with open_redis(self.settings) as redis:
            self._redis = redis
            self._cancel = cancel
            for name, source in (
                ("save", _SAVE),
                ("read", _READ),
                ("admit", _ADMIT),
                ("book", _BOOK_UPDATE),
                ("list", _BOOK_LIST),
            ):
                self._scripts[name] = redis.client.register_script(source)
            following = [anyio.CancelScope(), anyio.CancelScope()]
            try:
                async with anyio.create_task_group() as group:
                    await group.start(self._follow, following[0])
                    group.start_soon(self._renew_leases, following[1])
                    try:
                        yield
                    finally:
                        # Stop inside the subscription, so that it unsubscribes and closes
                        # normally (cancelling around it leaves coredis half-closed).
                        for scope in following:
                            scope.cancel()
            finally:
                self._redis = None
                self._cancel = None
                for watches in list(self._watches.values()):
                    for watch in list(watches):
                        watch.send.close()
                self._watches.clear()

    async def _follow(
        self, following: anyio.CancelScope, *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        client = self.redis.client
        try:
            async with client.pubsub(
                channels=[self.channel], ignore_subscribe_messages=True
            ) as sub:
                task_status.started()
                await self._read(sub, following)
        except BaseExceptionGroup as group:
            # coredis' subscription may find its connection closed when it unsubscribes
            # at shutdown; nothing is lost then, so only that is let go.
            if not following.cancel_called:
                raise
            rest = group.split((anyio.ClosedResourceError, anyio.BrokenResourceError))[1]
            if rest is not None:
                raise rest from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            if not following.cancel_called:
                raise

    async def _read(self, sub: Any, following: anyio.CancelScope) -> None:
        with following:
            async for message in sub:
                data = message.get("data")
                if isinstance(data, bytes):
                    try:
                        self._dispatch(data)
                    except Exception:  # one bad message must not stop the others
                        logger.exception("could not deliver a task event from Redis")

    def _dispatch(self, data: bytes) -> None:
        kind, _, rest = data.partition(b" ")
        if kind == b"c":
            if self._cancel is not None:
                self._cancel(rest.decode())
            return
        if kind != b"e":
            return
        revision, _, rest = rest.partition(b" ")
        task_id, _, payload = rest.partition(b" ")
        watches = self._watches.get(task_id.decode())
        if not watches:
            return
        event = StreamResponse.model_validate_json(payload)
        for watch in list(watches):
            try:
                watch.send.send_nowait((int(revision), event))
            except anyio.WouldBlock:
                watch.overflowed = True
                watch.send.close()
                watches.remove(watch)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                watches.remove(watch)

    async def _renew_leases(self, following: anyio.CancelScope) -> None:
        with following:
            while True:
                await anyio.sleep(self.lease / 3)
                for task_id in list(self._running):
                    try:
                        with self.redis.errors("renewing a task lease"):
                            await self.redis.client.pexpire(
                                self._lease_key(task_id), int(self.lease * 1000)
                            )
                    except StoreUnavailableError:
                        break  # Redis is away: try again on the next round

    # -- keys --------------------------------------------------------------------------------

    def _task_key(self, task_id: str) -> str:
        return self.redis.key(f"{self._ns}:task", task_id)

    def _lease_key(self, task_id: str) -> str:
        return self.redis.key(f"{self._ns}:task", task_id, "lease")

    def _book_keys(self, owner: str | None) -> list[str]:
        tag = hashlib.sha256((owner or "\x00anonymous").encode()).hexdigest()[:32]
        return [
            self.redis.key(f"{self._ns}:owner", tag, part)
            for part in ("tasks", "fin", "int", "sizes", "seq", "meta")
        ]

    async def _call(self, name: str, keys: list[str], args: list[Any], what: str) -> Any:
        try:
            with self.redis.errors(what):
                return await self._scripts[name](keys=keys, args=args)
        except StoreUnavailableError as exc:
            raise TaskStoreUnavailableError(str(exc)) from exc
        except ResponseError as exc:
            text = str(exc)
            if not text.startswith("KEYCARD "):
                raise
            raise _StoreRefusal(text.removeprefix("KEYCARD ")) from exc

    # -- the TaskStore protocol -----------------------------------------------------------

    async def create(self, record: TaskRecord) -> None:
        size = max(record.size, 0)
        owner = record.owner
        if owner is not None and size > self.max_bytes_per_owner:
            raise TaskTooLargeError(
                f"the task holds {size} bytes, over the limit of {self.max_bytes_per_owner} "
                "bytes per caller"
            )
        max_tasks = self.max_anonymous_tasks if owner is None else self.max_tasks_per_owner
        max_bytes = 2**62 if owner is None else self.max_bytes_per_owner
        try:
            admitted = await self._call(
                "admit",
                self._book_keys(owner),
                [self._ms(), record.task.id, size, max_tasks, max_bytes, int(owner is not None)],
                "creating a task",
            )
        except _StoreRefusal as refusal:
            if owner is None:
                raise TaskQuotaExceededError(
                    f"{self.max_anonymous_tasks} anonymous tasks are already running, the "
                    "limit for all anonymous callers together; retry later or send a bearer "
                    "token"
                ) from None
            _, count, held = [*str(refusal).split(), "?", "?"][:3]
            raise TaskQuotaExceededError(
                f"this caller already has {count} tasks ({held} bytes) running; the limits "
                f"per caller are {self.max_tasks_per_owner} tasks and "
                f"{self.max_bytes_per_owner} bytes: wait for some to finish, or cancel them"
            ) from None
        record.sequence = int(admitted[0])
        for victim in admitted[1:]:
            with self.redis.errors("evicting a task"):
                await self.redis.client.delete(
                    [self._task_key(_text(victim)), self._lease_key(_text(victim))]
                )
        await self._write(record, None, mode="create")

    async def get(self, task_id: str) -> TaskRecord | None:
        found = await self._call(
            "read", [self._task_key(task_id), self._lease_key(task_id)], [], "reading a task"
        )
        if not found:
            return None
        raw, revision, kind, leased = found
        record = _load(raw, int(revision))
        if _text(kind) == "run" and not int(leased):
            return await self._reap(record)
        return record

    async def save(self, record: TaskRecord) -> None:
        await self.save_event(record, None)

    async def list(
        self,
        *,
        viewer: TaskViewer,
        context_id: str | None = None,
        state: TaskState | None = None,
        updated_after: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> TaskPage:
        before = _decode_cursor(cursor) if cursor else None
        if viewer.owner is None:
            return TaskPage(records=[], next_cursor=None, total=0)
        listed = await self._call(
            "list", self._book_keys(viewer.owner), [self._ms()], "listing tasks"
        )
        ids = [_text(listed[i]) for i in range(0, len(listed), 2)]
        matching: list[TaskRecord] = []
        for task_id in ids:
            record = await self.get(task_id)
            if (
                record is not None
                and viewer.may_see(record)
                and (context_id is None or record.task.context_id == context_id)
                and (state is None or record.state is state)
                and (updated_after is None or _updated_after(record, updated_after))
            ):
                matching.append(record)
        page_from = [r for r in matching if before is None or r.sequence < before]
        page = page_from[:limit]
        next_cursor = _encode_cursor(page[-1].sequence) if len(page_from) > limit and page else None
        return TaskPage(records=page, next_cursor=next_cursor, total=len(matching))

    # -- the SharedTaskStore protocol ------------------------------------------------------

    async def save_event(self, record: TaskRecord, event: StreamResponse | None) -> None:
        try:
            await self._write(record, event, mode="save")
        except _StoreRefusal as refusal:
            reason = str(refusal)
            if reason == "GONE":
                return  # evicted or expired: a record that is gone stays gone
            if reason == "FINISHED":
                raise TaskNotCancelableError(
                    f"task {record.task.id} already ended on another replica"
                ) from None
            raise TaskConflictError(
                f"task {record.task.id} was changed by another replica at the same time; "
                "read it again"
            ) from None

    def watch(self, task_id: str) -> _Watch:
        watch = _Watch(self, task_id, self._buffer)
        self._watches.setdefault(task_id, []).append(watch)
        return watch

    def _unwatch(self, watch: _Watch) -> None:
        watches = self._watches.get(watch.task_id)
        if watches is not None and watch in watches:
            watches.remove(watch)
            if not watches:
                del self._watches[watch.task_id]

    async def request_cancel(self, task_id: str) -> None:
        try:
            with self.redis.errors("asking for a cancel"):
                await self.redis.client.publish(self.channel, f"c {task_id}")
        except StoreUnavailableError as exc:
            raise TaskStoreUnavailableError(str(exc)) from exc

    # -- internals ----------------------------------------------------------------------------

    def _ms(self) -> int:
        return int(self._clock() * 1000)

    async def _write(self, record: TaskRecord, event: StreamResponse | None, *, mode: str) -> None:
        task_id = record.task.id
        kind = _kind(record.state)
        payload = "" if event is None else event.model_dump_json(by_alias=True, exclude_none=True)
        if kind != "run":
            # This replica stops renewing the lease now, even if the write fails (Redis
            # away, another replica ended the task): the lease then expires and any
            # replica ends the task FAILED, instead of it staying WORKING forever.
            self._running.discard(task_id)
        revision = await self._call(
            "save",
            [self._task_key(task_id), self._lease_key(task_id)],
            [
                record.revision,
                _dump(record),
                kind,
                int(self.lease * 1000),
                int(self.retention * 1000),
                self.channel,
                payload,
                self.replica,
                mode,
                task_id,
            ],
            "saving a task",
        )
        record.revision = int(revision)
        if kind == "run" and mode != "reap":
            self._running.add(task_id)
        else:
            self._running.discard(task_id)
        if mode == "create" and kind == "run":
            return  # admission booked it just so (running, this size): nothing to update
        drop = record.owner is None and kind != "run"
        await self._call(
            "book",
            self._book_keys(record.owner),
            [
                self._ms(),
                task_id,
                kind,
                max(record.size, 0),
                self._ms() + int(self.retention * 1000),
                int(drop),
            ],
            "updating the owner's tasks",
        )
        if drop:  # nobody may read an anonymous task once it stops (as in memory)
            with self.redis.errors("dropping an anonymous task"):
                await self.redis.client.delete([self._task_key(task_id)])

    async def _reap(self, record: TaskRecord) -> TaskRecord:
        """End a task whose replica stopped renewing its lease: FAILED, for everyone."""
        task = record.task
        message = Message(
            message_id=str(uuid.uuid4()),
            role=Role.AGENT,
            parts=[Part(text=RUNNER_LOST)],
            task_id=task.id,
            context_id=task.context_id,
        )
        status = TaskStatus(
            state=TaskState.FAILED,
            message=message,
            timestamp=datetime.fromtimestamp(self._clock(), tz=timezone.utc),
        )
        task.status = status
        task.history.append(message)
        event = StreamResponse(
            status_update=TaskStatusUpdateEvent(
                task_id=task.id, context_id=task.context_id, status=status
            )
        )
        try:
            await self._write(record, event, mode="reap")
        except _StoreRefusal:
            again = await self.get(task.id)  # renewed, or reaped by another replica first
            if again is None:
                raise InternalError(f"task {task.id} disappeared while it was read") from None
            return again
        logger.warning("task %s: its replica stopped; marked FAILED", task.id)
        return record

    async def _ended(self, task_id: str, after: int) -> StreamResponse | None:
        """The final status of a task that ended without us seeing the event, if it did."""
        record = await self.get(task_id)
        if record is None or not record.state.is_terminal or record.revision <= after:
            return None
        task = record.task
        return StreamResponse(
            status_update=TaskStatusUpdateEvent(
                task_id=task.id, context_id=task.context_id, status=task.status
            )
        )

    def __repr__(self) -> str:
        return f"RedisTaskStore({self.settings.redacted_url!r})"


class _StoreRefusal(Exception):
    """A script refused a write (``EXISTS``, ``GONE``, ``FINISHED``, ``CONFLICT``, ``QUOTA``)."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
