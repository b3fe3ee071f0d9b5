"""The embedded token service (issuing side of the delegation profile).

Implementation package; the public names live in :mod:`keycard_agents.sts`.
"""
