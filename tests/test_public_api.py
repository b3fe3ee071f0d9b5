"""The public surface is exactly what __all__ says, sorted."""

from __future__ import annotations

import keycard_agents


def test_all_is_sorted_and_exported() -> None:
    names = [n for n in keycard_agents.__all__ if n != "__version__"]
    assert names == sorted(names)
    for name in keycard_agents.__all__:
        assert hasattr(keycard_agents, name), name


def test_all_lists_every_public_name() -> None:
    public = {
        name
        for name in vars(keycard_agents)
        if not name.startswith("_") and name not in {"annotations"}
    }
    assert public == set(keycard_agents.__all__) - {"__version__"}
