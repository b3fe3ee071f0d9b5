"""Delegation trees: the hops of one transaction (``txn``), user at the root.

Each hop is one step of the RFC 8693 chain: who acted (the current actor of RFC 8693
§4.1 ``act``, or the user for the first hop), which target (RFC 8707 resource), the
scopes granted and denied, timing and outcome. A hop's evidence is every trail entry
about it: the token service's decision, the caller's record of the call and the
receiver's record of the task it served. A hop's place in the tree is its *path*: the
user, then each agent in the order they acted, then the target.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

__all__ = ["DelegationTree", "Hop", "HopStatus", "TrailEntry", "build_tree"]

HopStatus = Literal["ok", "denied", "failed", "pending", "unknown"]

_FAILED = frozenset({"failed", "error", "rejected", "canceled", "cancelled"})
_OK = frozenset({"completed", "issued", "ok", "succeeded"})
_PENDING = frozenset({"submitted", "working", "input_required", "auth_required"})


@dataclass(frozen=True)
class TrailEntry:
    """One audit record, token service or agent, in a common shape.

    ``source`` is ``token-service`` or ``agent``; ``kind`` is ``sign-in``, ``exchange``,
    ``actor-token``, ``token-request`` or (a user's third-party account) ``connect``,
    ``refresh``, ``disconnect`` for the token service, ``served`` or ``call``
    for an agent. ``agent`` is who acted (the exchanging agent, the recording agent;
    ``None`` for a sign-in), ``actors`` the chain known at that point (current first),
    ``target`` a resource URL or agent id and ``outcome`` a decision (``issued``,
    ``denied``) or a result (``completed``, ``failed``...).
    """

    source: str
    kind: str
    time: float
    outcome: str
    ended: float | None = None
    txn: str | None = None
    user: str | None = None
    agent: str | None = None
    actors: tuple[str, ...] | None = None
    target: str | None = None
    client_id: str | None = None
    resource: str | None = None
    dependency: str | None = None
    task_id: str | None = None
    skill: str | None = None
    scopes_requested: tuple[str, ...] | None = None
    scopes_granted: tuple[str, ...] | None = None
    error: str | None = None
    reason: str | None = None
    jti: str | None = None
    connection: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrailEntry:
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in known:
                kwargs[key] = tuple(value) if isinstance(value, list) else value
        return cls(**kwargs)


@dataclass
class Hop:
    """One step of a delegation chain: ``caller`` → ``target``, with its evidence."""

    path: tuple[str, ...]
    denied: bool = False
    resource: str | None = None
    entries: list[TrailEntry] = field(default_factory=list)
    children: list[Hop] = field(default_factory=list)

    @property
    def caller(self) -> str:
        """The user (first hop) or the agent that made this call."""
        return self.path[-2]

    @property
    def target(self) -> str:
        return self.path[-1]

    @property
    def depth(self) -> int:
        return len(self.path) - 1

    def _latest(self, source: str | None, attr: str) -> Any:
        for entry in reversed(self.entries):
            if source is not None and entry.source != source:
                continue
            value = getattr(entry, attr)
            if value is not None:
                return value
        return None

    def _any(self, attr: str) -> Any:
        value = self._latest("token-service", attr)
        return value if value is not None else self._latest(None, attr)

    @property
    def decision(self) -> str | None:
        """The token service's decision (``issued`` / ``denied``), when it was recorded."""
        for entry in reversed(self.entries):
            if entry.source == "token-service":
                return entry.outcome
        return None

    @property
    def outcome(self) -> str | None:
        """What happened to the call: the receiver's task outcome, else the caller's."""
        for kind in ("served", "call"):
            for entry in reversed(self.entries):
                if entry.kind == kind:
                    return entry.outcome
        return None

    @property
    def status(self) -> HopStatus:
        """``denied``; else ``failed`` if any call or task on this hop failed; else by the
        latest outcome (``pending`` while a task waits) or the token service's decision."""
        if self.denied:
            return "denied"
        if any(e.kind in ("served", "call") and e.outcome.lower() in _FAILED for e in self.entries):
            return "failed"
        outcome = (self.outcome or "").lower()
        if outcome in _PENDING:
            return "pending"
        if outcome in _OK or self.decision == "issued":
            return "ok"
        return "unknown"

    @property
    def scopes_requested(self) -> tuple[str, ...] | None:
        value: tuple[str, ...] | None = self._any("scopes_requested")
        return value

    @property
    def scopes_granted(self) -> tuple[str, ...] | None:
        if self.denied:
            return None
        value: tuple[str, ...] | None = self._any("scopes_granted")
        return value

    @property
    def scopes_denied(self) -> tuple[str, ...]:
        requested = self.scopes_requested or ()
        if self.denied:
            return requested
        granted = set(self.scopes_granted or ())
        return tuple(s for s in requested if s not in granted)

    @property
    def error(self) -> str | None:
        value: str | None = self._any("error")
        return value

    @property
    def reason(self) -> str | None:
        value: str | None = self._any("reason")
        return value

    @property
    def task_id(self) -> str | None:
        value: str | None = self._latest(None, "task_id")
        return value

    @property
    def skill(self) -> str | None:
        value: str | None = self._latest(None, "skill")
        return value

    @property
    def jti(self) -> str | None:
        value: str | None = self._latest("token-service", "jti")
        return value

    @property
    def connection(self) -> str | None:
        """The connection when this hop reached a third-party API with the user's own
        upstream token (the token service recorded which)."""
        value: str | None = self._any("connection")
        return value

    @property
    def started(self) -> float | None:
        return min((e.time for e in self.entries), default=None)

    @property
    def ended(self) -> float | None:
        ends = [e.ended if e.ended is not None else e.time for e in self.entries]
        return max(ends, default=None)

    @property
    def duration(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return max(0.0, self.ended - self.started)

    def walk(self) -> Iterator[Hop]:
        """This hop and every hop below it, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()

    def to_dict(self) -> dict[str, Any]:
        return {
            "caller": self.caller,
            "target": self.target,
            "path": list(self.path),
            "resource": self.resource,
            "status": self.status,
            "decision": self.decision,
            "outcome": self.outcome,
            "scopes_requested": _opt_list(self.scopes_requested),
            "scopes_granted": _opt_list(self.scopes_granted),
            "scopes_denied": list(self.scopes_denied),
            "error": self.error,
            "reason": self.reason,
            "task_id": self.task_id,
            "skill": self.skill,
            "jti": self.jti,
            "connection": self.connection,
            "started": self.started,
            "ended": self.ended,
            "denied": self.denied,
            "entries": [e.to_dict() for e in self.entries],
            "children": [c.to_dict() for c in self.children],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Hop:
        return cls(
            path=tuple(data["path"]),
            denied=bool(data.get("denied", False)),
            resource=data.get("resource"),
            entries=[TrailEntry.from_dict(e) for e in data.get("entries", ())],
            children=[cls.from_dict(c) for c in data.get("children", ())],
        )


def _opt_list(value: tuple[str, ...] | None) -> list[str] | None:
    return None if value is None else list(value)


@dataclass
class DelegationTree:
    """The delegation tree of one transaction: ``user`` at the root, hops below."""

    txn: str
    user: str | None
    hops: list[Hop] = field(default_factory=list)
    unplaced: list[TrailEntry] = field(default_factory=list)

    def walk(self) -> Iterator[Hop]:
        for hop in self.hops:
            yield from hop.walk()

    @property
    def agents(self) -> tuple[str, ...]:
        """Every agent in the tree, in the order first seen."""
        seen: dict[str, None] = {}
        for hop in self.walk():
            for name in hop.path[1:]:
                seen.setdefault(name, None)
        return tuple(seen)

    @property
    def started(self) -> float | None:
        return min((h.started for h in self.walk() if h.started is not None), default=None)

    @property
    def ended(self) -> float | None:
        return max((h.ended for h in self.walk() if h.ended is not None), default=None)

    def count(self, status: HopStatus) -> int:
        return sum(1 for hop in self.walk() if hop.status == status)

    def to_dict(self) -> dict[str, Any]:
        return {
            "txn": self.txn,
            "user": self.user,
            "started": self.started,
            "ended": self.ended,
            "hops": [h.to_dict() for h in self.hops],
            "unplaced": [e.to_dict() for e in self.unplaced],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DelegationTree:
        """Load an exported tree (the output of :meth:`to_dict`)."""
        if not isinstance(data, Mapping) or not isinstance(data.get("txn"), str):
            raise ValueError("not an exported delegation tree (no 'txn')")
        return cls(
            txn=data["txn"],
            user=data.get("user"),
            hops=[Hop.from_dict(h) for h in data.get("hops", ())],
            unplaced=[TrailEntry.from_dict(e) for e in data.get("unplaced", ())],
        )


def _name(value: str | None, names: Mapping[str, str]) -> str:
    if value is None:
        return "?"
    return names.get(value, value)


def _learn_names(ordered: list[TrailEntry], names: Mapping[str, str]) -> dict[str, str]:
    """Resource URL → agent id, from ``names`` and from what the records themselves say.

    An agent's own records name its resource; a token service record of an exchange
    names the requesting agent's resource (``resource``). Older token service records
    lack it, so audience chaining (an agent exchanges only tokens sent to it, RFC 8693
    §2.1 as profiled in protocols/delegation-profile.md §5) fills in what is unambiguous:
    an agent acting first was the sign-in's target; an agent acting after ``X`` was a
    target ``X`` obtained a token for, when ``X`` obtained one for only one unnamed target.
    """
    mapping = dict(names)
    for entry in ordered:
        if entry.resource and entry.agent and entry.kind != "sign-in":
            mapping.setdefault(entry.resource, entry.agent)
    known = set(mapping.values())
    exchanges = [e for e in ordered if e.kind == "exchange" and e.agent and e.actors]
    sign_ins = {e.target for e in ordered if e.kind == "sign-in" and e.target}
    for entry in exchanges:
        agent = str(entry.agent)
        if agent in known:
            continue
        actors = tuple(entry.actors or ())
        if len(actors) == 1 and actors[0] == agent:
            candidates = {t for t in sign_ins if t not in mapping}
        elif len(actors) > 1 and actors[0] == agent:
            candidates = {
                str(e.target)
                for e in exchanges
                if e.outcome == "issued"
                and e.target
                and e.target not in mapping
                and tuple(e.actors or ()) == actors[1:]
            }
        else:
            continue
        if len(candidates) == 1:
            mapping[candidates.pop()] = agent
            known.add(agent)
    return mapping


def build_tree(
    txn: str, entries: Iterable[TrailEntry], *, names: Mapping[str, str] | None = None
) -> DelegationTree:
    """Arrange the entries of one transaction into its delegation tree.

    ``names`` maps resource URLs to agent ids (the token service names targets by URL,
    agents by client id); agents' own records teach it too. Entries of other
    transactions are ignored. A hop the trail never recorded directly (for example the
    sign-in, when the user token came from elsewhere) is added with status ``unknown``
    so its children still hang in the right place.
    """
    ordered = sorted((e for e in entries if e.txn == txn), key=lambda e: e.time)
    mapping = _learn_names(ordered, names or {})
    users = [e.user for e in ordered if e.user]
    user = users[0] if users else None
    tree = DelegationTree(txn=txn, user=user)
    hops: dict[tuple[tuple[str, ...], bool], Hop] = {}
    root = user or "?"

    def ensure(path: tuple[str, ...], denied: bool, resource: str | None) -> Hop:
        key = (path, denied)
        hop = hops.get(key)
        if hop is None:
            hop = Hop(path=path, denied=denied, resource=resource)
            hops[key] = hop
            if len(path) > 2:
                ensure(path[:-1], False, None).children.append(hop)
            else:
                tree.hops.append(hop)
        elif resource is not None and hop.resource is None:
            hop.resource = resource
        return hop

    def find_caller(agent: str) -> tuple[str, ...]:
        """The path at which ``agent`` received the call it is now acting on."""
        found = [key[0] for key in hops if not key[1] and key[0][-1] == agent]
        return found[-1] if found else (root, agent)

    for entry in ordered:
        denied = entry.outcome == "denied"
        chain = tuple(reversed(entry.actors or ()))
        target = _name(entry.target, mapping)
        if entry.kind == "sign-in":
            path: tuple[str, ...] = (root, target)
            resource = entry.target
        elif entry.kind == "exchange" and entry.agent is not None:
            if chain and chain[-1] == entry.agent:
                path = (root, *chain, target)
            else:
                path = (*find_caller(entry.agent), target)
            resource = entry.target
        elif entry.kind == "call" and entry.agent is not None:
            path = (root, *chain, entry.agent, target)
            resource = entry.target
        elif entry.kind == "served" and entry.agent is not None:
            path = (root, *chain, entry.agent)
            resource = entry.resource
        else:
            tree.unplaced.append(entry)
            continue
        ensure(path, denied, resource).entries.append(entry)
    return tree
