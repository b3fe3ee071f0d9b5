"""The audit trail of delegation chains: what each agent served and called, merged with the
token service's decisions into delegation trees.

:class:`AuditRecorder` is what an agent records with (``create_app(recorder=...)``),
into a :class:`MemoryAgentAuditStore` or :class:`JsonlAgentAuditStore`;
:class:`AuditTrail` merges the stores of the agents and of the token service
(:mod:`keycard_agents.sts`) and builds the :class:`DelegationTree` of a transaction
(``txn``), which :func:`render_text`, :func:`to_json`, :func:`to_mermaid` and
:func:`to_dot` draw.
"""

from __future__ import annotations

from keycard_agents._audit._agent_records import AgentAuditRecord as AgentAuditRecord
from keycard_agents._audit._agent_records import AgentAuditStore as AgentAuditStore
from keycard_agents._audit._agent_records import AuditRecorder as AuditRecorder
from keycard_agents._audit._agent_records import JsonlAgentAuditStore as JsonlAgentAuditStore
from keycard_agents._audit._agent_records import MemoryAgentAuditStore as MemoryAgentAuditStore
from keycard_agents._audit._render import render_text as render_text
from keycard_agents._audit._render import to_dot as to_dot
from keycard_agents._audit._render import to_json as to_json
from keycard_agents._audit._render import to_mermaid as to_mermaid
from keycard_agents._audit._trail import AuditTrail as AuditTrail
from keycard_agents._audit._trail import ChainSummary as ChainSummary
from keycard_agents._audit._tree import DelegationTree as DelegationTree
from keycard_agents._audit._tree import Hop as Hop
from keycard_agents._audit._tree import TrailEntry as TrailEntry
from keycard_agents._errors import TraceNotFoundError as TraceNotFoundError

__all__ = [
    "AgentAuditRecord",
    "AgentAuditStore",
    "AuditRecorder",
    "AuditTrail",
    "ChainSummary",
    "DelegationTree",
    "Hop",
    "JsonlAgentAuditStore",
    "MemoryAgentAuditStore",
    "TraceNotFoundError",
    "TrailEntry",
    "render_text",
    "to_dot",
    "to_json",
    "to_mermaid",
]
