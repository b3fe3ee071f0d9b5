"""The audit trail of delegation chains: records, queries, trees, views.

Implementation package. The token service records each RFC 8693 exchange (DESIGN §4
step 7); each agent records the calls it served and made (:mod:`._records`). One query
API (:mod:`._query`) merges both and builds the delegation tree of a transaction
(``txn``, draft-ietf-oauth-transaction-tokens) that :mod:`._render` draws in a terminal
and exports as JSON, Mermaid and DOT.
"""
