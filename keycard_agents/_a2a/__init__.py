"""A2A 1.0 protocol pieces: wire types (ProtoJSON) and protocol errors."""
