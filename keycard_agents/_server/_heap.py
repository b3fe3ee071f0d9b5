"""The start-up heap, taken out of the garbage collector's full collections.

Everything that exists when an agent starts serving (modules, model schemas, routes, the
agent itself: tens of thousands of objects) lives as long as the process. CPython's full
collections walked all of it on every run, pausing the event loop for 15-30 ms under load
(benchmarks/NOTES.md, issue 20). :func:`freeze_startup_heap` collects once and moves it
to the permanent generation (``gc.freeze()``), once per process, when ``serve()`` or
``keycard-agents sts`` starts: they own their process. An app's lifespan does not do it:
in a process it does not own, frozen objects vanish from ``gc.get_referrers`` and
``gc.get_objects``, which other libraries rely on (hypothesis does); such an app can call
``gc.freeze()`` itself once its start-up is done.
"""

from __future__ import annotations

import gc

__all__ = ["freeze_startup_heap"]

_frozen = False


def freeze_startup_heap() -> None:
    """Collect, then ``gc.freeze()`` what is left, the first time this is called in the
    process (later calls do nothing: what starts later is not start-up heap)."""
    global _frozen
    if _frozen:
        return
    _frozen = True
    gc.collect()
    gc.freeze()
