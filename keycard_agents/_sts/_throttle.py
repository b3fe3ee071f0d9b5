"""Brute-force protection for the token service's credential checks.

RFC 6749 §10.10 (credential guessing: the service must protect against it), RFC 6585 §4
(``429 Too Many Requests`` with ``Retry-After``, RFC 9110 §10.2.3), RFC 9700 §4.16
(client authentication). Every check of a client secret, a user's password or the admin
token goes through one :class:`CredentialGuard`:

- failed checks are counted per source address and per account (client id, user name,
  admin) in token buckets; an empty bucket answers 429 before any hash is computed;
- a slow (scrypt) hash runs in a worker thread, at most ``hash_workers`` at a time, so a
  flood of wrong secrets never blocks the event loop (token exchanges by
  ``private_key_jwt`` agents, ``/jwks.json`` and the rest keep their latency); a fast
  ``sha256$`` client-secret hash (a microsecond) is checked in line;
- an unknown account is checked against a dummy hash as costly as a real one, so the
  response time does not tell which accounts exist.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
from starlette.requests import Request

from keycard_agents._errors import OAuthError

from ._config import Limits
from ._secrets import dummy_hash_like, dummy_is_fast, is_fast_hash, verify_secret

if TYPE_CHECKING:
    from ._shared import SharedServiceState

__all__ = [
    "CredentialGuard",
    "DummyHash",
    "FailureThrottle",
    "TooManyAttemptsError",
    "request_source",
]

_TOO_MANY = (
    "too many failed attempts from this address or for this account: wait for the "
    "Retry-After seconds, then check the credential before trying again"
)
_BUSY = "the token service is checking too many credentials right now: retry shortly"


def request_source(request: Request) -> str | None:
    """The peer address of ``request`` (the key of per-source limits), or ``None``.

    This is the TCP peer: behind a reverse proxy every client shares the proxy's address.
    """
    client = request.client
    return None if client is None else f"ip:{client.host}"


class TooManyAttemptsError(OAuthError):
    """A credential check refused without being made: HTTP 429 (throttled) or 503 (busy).

    ``retry_after`` is the number of seconds after which an attempt will be considered
    (the ``Retry-After`` header of the answer).
    """

    def __init__(self, description: str, *, retry_after: float, status_code: int = 429) -> None:
        super().__init__("temporarily_unavailable", description, status_code=status_code)
        self.retry_after = max(1, math.ceil(retry_after))


class FailureThrottle:
    """Token buckets of failed attempts, one per key, in bounded memory.

    Each key may fail ``limit`` times in a row; a failure costs one token and tokens come
    back at ``limit / window`` per second. Keys whose bucket is full again are forgotten;
    beyond ``max_keys`` the least recently touched keys are forgotten first.
    """

    def __init__(
        self,
        *,
        limit: int,
        window: float,
        clock: Callable[[], float],
        max_keys: int = 100_000,
    ) -> None:
        self._limit = float(limit)
        self._rate = limit / window
        self._clock = clock
        self._max = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}

    def _level(self, key: str, now: float) -> float:
        entry = self._buckets.get(key)
        if entry is None:
            return self._limit
        tokens, at = entry
        return min(self._limit, tokens + max(0.0, now - at) * self._rate)

    def wait(self, key: str) -> float:
        """Seconds until ``key`` may make an attempt (0 when it may now)."""
        level = self._level(key, self._clock())
        return 0.0 if level >= 1.0 else (1.0 - level) / self._rate

    def take(self, key: str) -> None:
        """Charge one attempt to ``key`` (refunded by :meth:`give_back` on success)."""
        now = self._clock()
        self._store(key, self._level(key, now) - 1.0, now)

    def give_back(self, key: str) -> None:
        now = self._clock()
        level = self._level(key, now) + 1.0
        if level >= self._limit:
            self._buckets.pop(key, None)
        else:
            self._store(key, level, now)

    def _store(self, key: str, level: float, now: float) -> None:
        self._buckets.pop(key, None)  # re-insert: the dict order is least recently touched
        self._buckets[key] = (level, now)
        if len(self._buckets) > self._max:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        full = [k for k in self._buckets if self._level(k, now) >= self._limit]
        for key in full:
            del self._buckets[key]
        keep = int(self._max * 0.9)
        while len(self._buckets) > keep:
            del self._buckets[next(iter(self._buckets))]

    def __len__(self) -> int:
        return len(self._buckets)


class DummyHash:
    """What an unknown account is checked against, made on first use (in a worker
    thread) to cost as much as the costliest of ``stored``."""

    def __init__(self, stored: Iterable[str]) -> None:
        self._stored = tuple(stored)
        self._value: str | None = None
        #: Whether the dummy is a fast hash (checked in line, like the hashes it stands for).
        self.fast = dummy_is_fast(self._stored)

    def get(self) -> str:
        if self._value is None:
            self._value = dummy_hash_like(self._stored)
        return self._value


def _check_hash(presented: str, stored: str | None, dummy: DummyHash) -> bool:
    try:
        ok = verify_secret(presented, stored if stored is not None else dummy.get())
    except ValueError:
        return False
    return ok and stored is not None


class _Flight:
    """A slow hash check that others with the same question wait for."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.result: bool | None = None  # None: no answer (refused or cancelled)
        self.refused: TooManyAttemptsError | None = None

    def answer(self) -> bool | None:
        """The check's answer for one that waited (raises the refusal it got, if any);
        ``None`` when it ended without one (cancelled): the waiter asks again."""
        if self.refused is not None:
            refused = self.refused
            raise TooManyAttemptsError(
                refused.error_description,
                retry_after=refused.retry_after,
                status_code=refused.status_code,
            )
        return self.result


class CredentialGuard:
    """Throttled, off-the-event-loop checks of secrets against stored hashes."""

    def __init__(
        self,
        limits: Limits,
        *,
        clock: Callable[[], float],
        shared: SharedServiceState | None = None,
    ) -> None:
        self.limits = limits
        #: With replicas, failed attempts are counted in the shared state (all replicas).
        self._shared = shared
        self._clock = clock
        self._by_source = FailureThrottle(
            limit=limits.failed_auth_per_source, window=limits.failed_auth_window, clock=clock
        )
        self._by_account = FailureThrottle(
            limit=limits.failed_auth_per_account, window=limits.failed_auth_window, clock=clock
        )
        self._limiter = anyio.CapacityLimiter(limits.hash_workers)
        # Slow checks running now, by (account, stored hash, digest of the presented secret).
        self._flights: dict[tuple[str, str | None, bytes], _Flight] = {}

    def _keys(self, account: str | None, source: str | None) -> list[tuple[FailureThrottle, str]]:
        keys = [] if account is None else [(self._by_account, account)]
        if source is not None:
            keys.append((self._by_source, source))
        return keys

    @property
    def waiting(self) -> int:
        """How many credential checks wait for a free worker right now."""
        return self._limiter.statistics().tasks_waiting

    @property
    def running(self) -> int:
        """How many credential checks run in worker threads right now."""
        return int(self._limiter.borrowed_tokens)

    def retry_after(self, *, account: str | None, source: str | None) -> float:
        """Seconds before ``account`` from ``source`` may try again (0: it may now)."""
        return max((throttle.wait(key) for throttle, key in self._keys(account, source)), default=0)

    async def check_hash(
        self,
        presented: str,
        stored: str | None,
        *,
        account: str,
        source: str | None,
        dummy: DummyHash,
    ) -> bool:
        """Whether ``presented`` matches the hash ``stored``; ``stored=None`` (unknown
        account) costs the same and is ``False``. Raises :class:`TooManyAttemptsError`.

        A slow hash is computed once for checks of the same secret against the same hash
        that arrive while it runs: they wait for its answer. A busy agent whose secret is
        on scrypt then neither pays a hash per request nor crowds out its own attempts
        (each check in flight holds one of them), and a repeated guess teaches nothing a
        single one does not; different secrets are each checked and charged.
        """
        fast = is_fast_hash(stored) if stored is not None else dummy.fast

        def verify() -> bool:
            return _check_hash(presented, stored, dummy)

        if fast:
            return await self.check(verify, account=account, source=source, inline=True)
        question = (account, stored, hashlib.sha256(presented.encode("utf-8", "replace")).digest())
        while (running := self._flights.get(question)) is not None:
            await running.done.wait()
            if (answer := running.answer()) is not None:
                return answer
        flight = self._flights[question] = _Flight()
        try:
            flight.result = await self.check(verify, account=account, source=source)
            return flight.result
        except TooManyAttemptsError as refused:
            flight.refused = refused
            raise
        finally:
            del self._flights[question]
            flight.done.set()

    async def check(
        self,
        verify: Callable[[], bool],
        *,
        account: str | None,
        source: str | None,
        inline: bool = False,
    ) -> bool:
        """Run ``verify`` if ``account`` and ``source`` may try now: in a worker thread, or
        on the event loop when ``inline`` (a check that costs a fast hash).

        ``account=None``: a guess that belongs to no account (a device's user code), charged
        to the source only, so that nobody can lock the others out by guessing wrong.
        A failure is charged to both; a success is not. Raises
        :class:`TooManyAttemptsError` (429, or 503 when too many checks wait already).
        """
        if self._shared is not None:
            return await self._check_shared(verify, account=account, source=source, inline=inline)
        keys = self._keys(account, source)
        wait = max((throttle.wait(key) for throttle, key in keys), default=0)
        if wait > 0:
            # Answer late: a guesser that waits for each answer (they all do) slows down to
            # one attempt per delay and connection, and a sleeping request costs no CPU.
            await anyio.sleep(self.limits.throttle_delay)
            raise TooManyAttemptsError(_TOO_MANY, retry_after=wait)
        if inline:
            # Nothing else runs between the look at the buckets and the check (no await):
            # only a failure needs to be charged.
            ok = verify()
            if not ok:
                for throttle, key in keys:
                    throttle.take(key)
            return ok
        if self.waiting >= self.limits.hash_queue:
            raise TooManyAttemptsError(_BUSY, retry_after=1, status_code=503)
        # The attempt is charged while the hash runs in a thread (other checks of the same
        # account run meanwhile) and given back if it succeeds.
        for throttle, key in keys:
            throttle.take(key)
        ok = await anyio.to_thread.run_sync(verify, limiter=self._limiter)
        if ok:
            for throttle, key in keys:
                throttle.give_back(key)
        return ok

    async def _check_shared(
        self, verify: Callable[[], bool], *, account: str | None, source: str | None, inline: bool
    ) -> bool:
        """:meth:`check`, with the buckets in the shared state (every replica's failures).

        Every step is one script on all the buckets of the check (the account's and the
        source's): other requests (here and at the other replicas) run between the round
        trips, so a failure is charged in the same step that reads the buckets
        (``reserve``: take one attempt from each, or answer how long to wait). A fast
        hash is checked first: a failure then reserves, a success only looks (``wait``)
        and takes nothing, so the concurrent requests of a busy client never crowd each
        other out. A slow hash is gated: the attempt is reserved before the hash runs and
        given back when it succeeds. Either way an empty bucket answers 429, whatever the
        credential.
        """
        limits = self.limits
        buckets = (
            [] if account is None else [(f"account:{account}", limits.failed_auth_per_account)]
        )
        if source is not None:
            buckets.append((f"source:{source}", limits.failed_auth_per_source))
        shared = self._shared
        assert shared is not None

        async def step(what: str) -> float:
            if not buckets:  # no account, no address: nothing to count against
                return 0.0
            return await shared.buckets(
                buckets, window=limits.failed_auth_window, now=self._clock(), step=what
            )

        if inline:
            ok = verify()
            wait = await step("wait" if ok else "reserve")
        else:
            wait = await step("reserve")
        if wait > 0:
            await anyio.sleep(limits.throttle_delay)
            raise TooManyAttemptsError(_TOO_MANY, retry_after=wait)
        if inline:
            return ok
        if self.waiting >= limits.hash_queue:
            await step("give_back")
            raise TooManyAttemptsError(_BUSY, retry_after=1, status_code=503)
        ok = await anyio.to_thread.run_sync(verify, limiter=self._limiter)
        if ok:
            await step("give_back")
        return ok
