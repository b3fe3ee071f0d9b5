"""One query API over the whole audit trail: token service plus agents.

Merges the token service's decisions (protocols/delegation-profile.md §5: one record per issuance or
denial at the RFC 8693 token endpoint) with each agent's record of the calls it served
and made, queryable by ``txn``, user, agent and time range, and builds the delegation
tree of a transaction from them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from keycard_agents._audit._agent_records import AgentAuditRecord, AgentAuditStore
from keycard_agents._audit._sts_records import AuditRecord, AuditStore
from keycard_agents._audit._tree import DelegationTree, TrailEntry, build_tree
from keycard_agents._errors import TraceNotFoundError

__all__ = ["AuditTrail", "ChainSummary", "entry_from_agent", "entry_from_token_service"]

_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 (a URN)
#: Each source is read whole (filters applied) and cut after merging: a record's
#: ``time`` is when its call started, so write order is not time order.
_ALL = 10_000_000
_KINDS = {
    _TOKEN_EXCHANGE: "exchange",
    "authorization_code": "sign-in",
    "client_credentials": "actor-token",
    # A user connecting, refreshing or disconnecting a third-party account (connections).
    "connection:connect": "connect",
    "connection:refresh": "refresh",
    "connection:disconnect": "disconnect",
}


def entry_from_token_service(record: AuditRecord) -> TrailEntry:
    """A token service :class:`~keycard_agents._audit._sts_records.AuditRecord` as a trail entry."""
    kind = _KINDS.get(record.grant_type or "", "token-request")
    agent = record.client_id if kind in ("exchange", "actor-token") else None
    return TrailEntry(
        source="token-service",
        kind=kind,
        time=record.time,
        outcome=record.decision,
        txn=record.txn,
        user=record.user,
        agent=agent,
        actors=record.actors,
        target=record.target,
        client_id=record.client_id,
        resource=record.resource if agent is not None else None,
        scopes_requested=record.scopes_requested,
        scopes_granted=record.scopes_granted,
        error=record.error,
        reason=record.reason,
        jti=record.jti,
        connection=record.connection,
    )


def entry_from_agent(record: AgentAuditRecord) -> TrailEntry:
    """An agent's :class:`~._records.AgentAuditRecord` as a trail entry."""
    return TrailEntry(
        source="agent",
        kind=record.kind,
        time=record.time,
        ended=record.ended,
        outcome=record.outcome,
        txn=record.txn,
        user=record.user,
        agent=record.agent,
        actors=record.actors,
        target=record.target,
        resource=record.resource,
        dependency=record.dependency,
        task_id=record.task_id,
        skill=record.skill,
        scopes_requested=record.scopes_requested,
        scopes_granted=record.scopes_granted,
        error=record.error,
        reason=record.reason,
        jti=record.jti,
    )


@dataclass(frozen=True)
class ChainSummary:
    """One transaction at a glance (a line of the audit page's recent chains)."""

    txn: str
    user: str | None
    agents: tuple[str, ...]
    started: float | None
    ended: float | None
    hops: int
    denied: int
    failed: int
    paths: tuple[tuple[str, ...], ...] = ()
    """Every hop's path below the user (``("planner", "travel")``...), depth first: the
    shape of the tree, siblings as siblings."""

    @classmethod
    def of(cls, tree: DelegationTree) -> ChainSummary:
        hops = list(tree.walk())
        return cls(
            txn=tree.txn,
            user=tree.user,
            agents=tree.agents,
            paths=tuple(h.path[1:] for h in hops),
            started=tree.started,
            ended=tree.ended,
            hops=len(hops),
            denied=sum(1 for h in hops if h.status == "denied"),
            failed=sum(1 for h in hops if h.status == "failed"),
        )


class AuditTrail:
    """The audit trail: the token service's store plus any number of agents' stores.

    ``names`` maps resource URLs to agent ids (build it from the token service's
    configuration: ``{agent.resource: agent.client_id}``) so hops name agents, not URLs.
    """

    def __init__(
        self,
        *,
        token_service: AuditStore | None = None,
        agents: Sequence[AgentAuditStore] = (),
        names: Mapping[str, str] | None = None,
    ) -> None:
        self.token_service = token_service
        self.agents: list[AgentAuditStore] = list(agents)
        self.names: dict[str, str] = dict(names or {})

    def add_agent_store(self, store: AgentAuditStore) -> None:
        """Merge one more agent's records into this trail."""
        self.agents.append(store)

    async def query(
        self,
        *,
        txn: str | None = None,
        user: str | None = None,
        agent: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 1000,
    ) -> list[TrailEntry]:
        """Entries of every source that pass all filters, oldest first: the ``limit`` newest.

        ``agent`` matches the agent that acted or recorded, appears in the actor chain,
        or was the target (by id or resource URL);
        ``since`` / ``until`` bound the record time (seconds since the epoch, inclusive).
        """
        if limit <= 0:
            return []
        results, _ = await self._entries(
            txn=txn, user=user, agent=agent, since=since, until=until, per_source=_ALL
        )
        return results[-limit:]

    async def _entries(
        self,
        *,
        txn: str | None,
        user: str | None,
        agent: str | None,
        since: float | None,
        until: float | None,
        per_source: int,
    ) -> tuple[list[TrailEntry], bool]:
        """The newest ``per_source`` matching records of each source, merged by time; and
        whether some source may hold more."""
        # Sources are read one after the other, token service first: a stable order for
        # records with equal times, and a failing store raises its own exception.
        results: list[TrailEntry] = []
        more = False
        if self.token_service is not None:
            records = await self.token_service.query(
                txn=txn, user=user, since=since, until=until, limit=per_source
            )
            more = more or len(records) >= per_source
            results.extend(entry_from_token_service(r) for r in records)
        for store in self.agents:
            found = await store.query(
                txn=txn, user=user, since=since, until=until, limit=per_source
            )
            more = more or len(found) >= per_source
            results.extend(entry_from_agent(r) for r in found)
        if agent is not None:
            results = [e for e in results if self._involves(e, agent)]
        results.sort(key=lambda e: e.time)
        return results, more

    def _involves(self, entry: TrailEntry, agent: str) -> bool:
        if entry.agent == agent or agent in (entry.actors or ()):
            return True
        target = entry.target
        return target is not None and (target == agent or self.names.get(target) == agent)

    async def tree(self, txn: str) -> DelegationTree:
        """The delegation tree of ``txn``; :class:`TraceNotFoundError` when nothing matches."""
        entries = await self.query(txn=txn, limit=_ALL)
        if not entries:
            raise TraceNotFoundError(
                f"no audit record for txn {txn[:80]!r}: check the id (the 'txn' claim of any "
                "token in the chain) and that this is the audit store the token service wrote"
            )
        return build_tree(txn, entries, names=self.names)

    async def chains(
        self,
        *,
        user: str | None = None,
        agent: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 50,
    ) -> list[ChainSummary]:
        """The most recent transactions matching the filters, newest first.

        A transaction matches when any of its records does; its summary covers all of
        its records.
        """
        # Look at the newest records first and widen the look only while too few
        # transactions turned up: a page view reads what it shows, not the whole trail.
        window = max(500, limit * 20)
        while True:
            matching, more = await self._entries(
                txn=None, user=user, agent=agent, since=since, until=until, per_source=window
            )
            txns: dict[str, None] = {}
            for entry in reversed(matching):
                if entry.txn is not None:
                    txns.setdefault(entry.txn, None)
                if len(txns) >= limit:
                    break
            if len(txns) >= limit or not more or window >= _ALL:
                break
            window = min(_ALL, window * 8)
        summaries = []
        for txn in txns:
            entries = await self.query(txn=txn, limit=_ALL)
            summaries.append(ChainSummary.of(build_tree(txn, entries, names=self.names)))
        summaries.sort(key=lambda s: s.ended or 0.0, reverse=True)
        return summaries
