"""The package version, read from the installed distribution's metadata.

``pyproject.toml`` is the one place the version is written; this reads it back
(``importlib.metadata``), so ``keycard_agents.__version__`` and ``keycard-agents
--version`` cannot disagree with what was installed.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("keycard-agents")
except PackageNotFoundError:  # pragma: no cover - running from a tree that was not installed
    __version__ = "0+unknown"
