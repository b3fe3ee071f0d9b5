"""Redis implementations of the state that replicas share (the ``redis`` extra).

Nothing in the core imports this package at import time: the token service and the
server import it inside functions, only when Redis is configured.
"""
