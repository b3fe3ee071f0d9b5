"""``keycard-agents demo``: the whole delegation story on one machine, in one command.

The token service, three A2A agents and an MCP server on loopback ports; a real
sign-in (RFC 6749 §4.1 with RFC 7636 PKCE); RFC 8693 exchanges at every hop; the
delegation tree read back from the audit trail. Heavy imports happen when it runs.
"""

from __future__ import annotations

from keycard_agents._demo._command import add_demo_command as add_demo_command

__all__ = ["add_demo_command"]
