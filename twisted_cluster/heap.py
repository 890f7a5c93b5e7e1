"""
Keeping the garbage collector off what a process built to start.
"""

from __future__ import annotations

import gc
from typing import Any

_held = False


def holdCollection() -> None:
    """
    No collections until L{freezeStartupHeap}: starting a worker builds
    tens of thousands of objects that live as long as it does, and
    collections that walk them (~5 % of its start-up) find nothing to free.
    """
    global _held
    if gc.isenabled():
        gc.disable()
        _held = True


def freezeStartupHeap() -> None:
    """
    Collect, then move every object that exists now out of the garbage
    collector's sight for good; collections held by L{holdCollection} go on.

    Called once a cluster process has started (its reactor running, the app
    and its imports loaded): those objects live as long as the process, yet
    every full collection would walk them all again, ~13 ms for Twisted and a
    small app.  A burst of messages triggers such collections, and they were
    most of its cost.
    """
    global _held
    gc.collect()
    gc.freeze()
    if _held:
        _held = False
        gc.enable()


def freezeOnceServing(reactor: Any, after: float) -> None:
    """
    Call L{freezeStartupHeap} C{after} seconds into the reactor's run.

    Not as it starts: collecting the whole start-up heap takes ~17 ms, and
    the first connections, queued since the process started listening,
    should not wait for it.  Until then collections stay held, if they are.
    """
    reactor.callWhenRunning(reactor.callLater, after, freezeStartupHeap)
