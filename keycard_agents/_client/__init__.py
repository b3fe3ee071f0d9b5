"""The A2A 1.0 client: calling agents with bearer or delegated tokens."""
