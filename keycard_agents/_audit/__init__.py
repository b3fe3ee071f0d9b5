"""The audit trail of delegation chains: records, stores, the trail, trees, views.

Shared by agents and the token service. The token service records each RFC 8693
exchange (:mod:`._sts_records`, one record per request); each agent records the calls
it served and made (:mod:`._agent_records`, :mod:`._calls`); both use the append-only
logs of :mod:`._log`. One query API (:mod:`._trail`) merges them and builds the
delegation tree of a transaction (``txn``, draft-ietf-oauth-transaction-tokens,
:mod:`._tree`) that :mod:`._render` draws in a terminal and exports as JSON, Mermaid
and DOT. The public names are in :mod:`keycard_agents.audit`.
"""
