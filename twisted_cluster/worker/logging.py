"""
Where a worker's log goes.

Per-event work in the master would put it on the data path (a web app logs
every request), so when the master's log is a file or its standard output,
each worker formats its own events as twistd would and writes them there
itself, its id in every line.  Only when the master logs elsewhere (syslog,
a custom observer) are events relayed to it, as JSON on the worker's
standard output (see L{twisted_cluster.master.logs}).
"""

from __future__ import annotations

import os
import time
from typing import IO, Any

from twisted.logger import (
    ILogObserver,
    LogEvent,
    jsonFileLogObserver,
    textFileLogObserver,
)
from zope.interface import implementer

RELAY = "relay"
STDOUT = "stdout"


class ReopeningFile:
    """
    A log file opened for appending that follows its path: once the file
    has been rotated away (renamed, or removed), the next write after a
    second's check opens the new one, as C{logging.WatchedFileHandler} does.
    """

    checkEvery = 1.0

    def __init__(self, path: str) -> None:
        self._path = path
        self._file = self._open()
        self._checked = time.monotonic()

    def _open(self) -> IO[str]:
        return open(self._path, "a", encoding="utf-8")

    def write(self, text: str) -> None:
        now = time.monotonic()
        if now - self._checked >= self.checkEvery:
            self._checked = now
            try:
                moved = (
                    os.stat(self._path).st_ino != os.fstat(self._file.fileno()).st_ino
                )
            except FileNotFoundError:
                moved = True
            if moved:
                self._file.close()
                self._file = self._open()
        self._file.write(text)

    def flush(self) -> None:
        self._file.flush()


@implementer(ILogObserver)
class WorkerSystem:
    """
    Puts the worker's id in front of each event's system, as the master's
    relay does.
    """

    def __init__(self, workerId: int, observer: ILogObserver) -> None:
        self._prefix = f"worker {workerId}: "
        self._observer = observer

    def __call__(self, event: LogEvent) -> None:
        system = event.get("log_system")
        if system is None:
            level = event.get("log_level")
            namespace = event.get("log_namespace", "-")
            system = f"{namespace}#{level.name}" if level is not None else namespace
        self._observer({**event, "log_system": self._prefix + system})


def workerObserver(target: str, workerId: int) -> ILogObserver:
    """
    The observer for a worker whose log goes to C{target}: L{RELAY},
    L{STDOUT} or a file's path.
    """
    stdout = os.fdopen(1, "w", encoding="utf-8", closefd=False)
    if target == RELAY:
        return jsonFileLogObserver(stdout)
    stream: Any = stdout if target == STDOUT else ReopeningFile(target)
    return WorkerSystem(workerId, textFileLogObserver(stream))
