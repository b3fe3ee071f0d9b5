"""Delegated calls from skills: the handles behind ``ctx.dependency(name)`` and their provider."""
