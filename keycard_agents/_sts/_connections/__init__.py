"""Connections to third-party APIs: the token vault, the upstream OAuth client, the
connect pages and the exchange for a connection's API (see docs/connections.md)."""
