"""
What runs inside a worker process: its channel to the master, the shared
listening sockets, the lifeline, and the bootstrap that runs a C{.tac}.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .channel import ThisWorker

_current: ThisWorker | None = None


def isWorkerProcess() -> bool:
    """
    Whether this process is a worker: it was started as one, or it already
    took its channel (which removes the variable that said so).
    """
    from ..commands import WORKER_ID_ENV

    return _current is not None or WORKER_ID_ENV in os.environ


class NotAWorker(RuntimeError):
    """
    This process is not a worker with a channel to a master.
    """


def thisWorker(reactor: Any = None) -> ThisWorker:
    """
    This process's L{ThisWorker}, connected to the master on first use.
    """
    global _current
    if _current is None:
        # Here, not above: the master imports this package for its constants.
        from ..commands import (
            ACTIVATED_ENV,
            MAX_MESSAGE_ENV,
            STANDBY_ENV,
            WORKER_ID_ENV,
            WORKER_SLOT_ENV,
        )
        from .channel import ThisWorker

        try:
            workerId = int(os.environ[WORKER_ID_ENV])
        except (KeyError, ValueError):
            raise NotAWorker(f"{WORKER_ID_ENV} is not set to a worker id") from None
        if reactor is None:
            from twisted.internet import reactor
        try:
            maxMessage = int(os.environ.get(MAX_MESSAGE_ENV, ""))
        except ValueError:
            maxMessage = None
        worker = ThisWorker(reactor, workerId, maxMessage)
        worker.ports.activated = _activated(os.environ.pop(ACTIVATED_ENV, ""))
        try:
            worker.connect()
        except OSError as e:
            raise NotAWorker(
                f"{WORKER_ID_ENV} is set, but descriptor 3 is no channel "
                f"to a master: {e}"
            ) from None
        _current = worker
        # As Node deletes NODE_UNIQUE_ID: the processes this worker starts
        # are not workers, and would fail to find a channel as descriptor 3.
        worker.standby = bool(os.environ.pop(STANDBY_ENV, ""))
        del os.environ[WORKER_ID_ENV]
        slot = os.environ.pop(WORKER_SLOT_ENV, "")
        worker.slot = int(slot) if slot.isdigit() else None
        os.environ.pop(MAX_MESSAGE_ENV, None)
    return _current


def _activated(given: str) -> list[Any]:
    """
    The addresses of the sockets systemd passed the master; and, for the
    app's C{systemd:} endpoints, which read them with Twisted's
    L{twisted.python.systemd.ListenFDs}, the variables that say this process
    has them (L{SharedPorts.adoptStreamPort} hands the master's instead).
    """
    from ..request import ListenRequest

    try:
        listed = json.loads(given) if given else []
        activated = [None if r is None else ListenRequest.fromJSON(r) for r in listed]
    except (ValueError, TypeError):
        return []
    if activated:
        os.environ.update(
            LISTEN_PID=str(os.getpid()),
            LISTEN_FDS=str(len(activated)),
            LISTEN_FDNAMES=":".join(["activated"] * len(activated)),
        )
    return activated
