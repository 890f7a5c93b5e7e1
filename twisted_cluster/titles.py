"""
Process titles, for C{ps} and C{top}:

    twisted-cluster master [server.tac]
    twisted-cluster worker 3 slot 1 [server.tac]
    twisted-cluster spare [server.tac]

The bracket names the app: its C{.tac} file's name (or a plugin's name).
C{setproctitle} rewrites the process's argument memory, which is what
C{ps} shows; C{/proc/self/comm} alone holds 15 characters.
"""

from __future__ import annotations

import os

PREFIX = "twisted-cluster"


def appName(app: str) -> str:
    """
    The app as a title names it: a C{.tac} path's file name, or a plugin's
    name as it is.
    """
    return os.path.basename(app) or app


def masterTitle(app: str) -> str:
    return f"{PREFIX} master [{appName(app)}]"


def workerTitle(workerId: int, slot: int | None, app: str, spare: bool = False) -> str:
    """
    A worker's title; a spare's (C{spare}), until it has a slot.
    """
    if slot is None:
        what = "spare" if spare else f"worker {workerId}"
        return f"{PREFIX} {what} [{appName(app)}]"
    return f"{PREFIX} worker {workerId} slot {slot} [{appName(app)}]"


def setTitle(title: str) -> None:
    """
    Make C{title} this process's title, if C{setproctitle} is installed.
    """
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    setproctitle(title)
