"""
Collections held while a worker starts, and its start-up heap frozen.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from twisted_cluster import heap


@pytest.fixture(autouse=True)
def restoreCollector() -> Iterator[None]:
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    heap._held = False
    (gc.enable if enabled else gc.disable)()


def test_heldUntilFrozen() -> None:
    gc.enable()
    heap.holdCollection()
    assert not gc.isenabled()
    heap.freezeStartupHeap()
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0


def test_theAppsOwnChoiceKept() -> None:
    """
    A process that turned collection off itself keeps it off.
    """
    gc.disable()
    heap.holdCollection()
    heap.freezeStartupHeap()
    assert not gc.isenabled()


def test_frozenOnceServing() -> None:
    """
    The heap is frozen a while after the reactor starts, not as it does.
    """
    from twisted.internet.testing import MemoryReactorClock

    reactor = MemoryReactorClock()
    gc.enable()
    heap.holdCollection()
    heap.freezeOnceServing(reactor, after=0.2)
    reactor.run()
    assert not gc.isenabled()
    reactor.advance(0.1)
    assert not gc.isenabled()
    reactor.advance(0.1)
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0
