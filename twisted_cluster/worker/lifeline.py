"""
A worker must not outlive its master.

The master holds the write end of a pipe whose read end the worker inherits;
neither ever writes, so a read returns end-of-file exactly when the master
has gone, however it went.  A thread waits for that, because the reactor may
be the thing that is stuck: it asks the reactor to stop, and if the process
is still there after a short grace, ends it.
"""

from __future__ import annotations

import os
import threading
from typing import Any

GRACE = 3.0
"""Seconds a worker whose master has gone gets to stop by itself."""

EXIT_ORPHANED = 70


def watchLifeline(reactor: Any, fd: int, grace: float = GRACE) -> threading.Thread:
    """
    Stop the reactor, or failing that the process, once C{fd} reads
    end-of-file.
    """

    def watch() -> None:
        try:
            while os.read(fd, 512):
                pass
        except OSError:
            pass
        reactor.callFromThread(_stop, reactor)
        # An Event nobody sets: a wait the interpreter can still interrupt.
        threading.Event().wait(grace)
        os._exit(EXIT_ORPHANED)

    thread = threading.Thread(
        target=watch, name="twisted-cluster lifeline", daemon=True
    )
    thread.start()
    return thread


def _stop(reactor: Any) -> None:
    if reactor.running:
        try:
            reactor.stop()
        except Exception:
            pass
