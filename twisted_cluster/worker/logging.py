"""
Where a worker's log goes.

Per-event work in the master would put it on the data path (a web app logs
every request), so when the master's log is a file or its standard output,
each worker formats its own events as twistd would and writes them there
itself, its id in every line (with C{--log-format json}, as JSON objects
with its id and slot: L{twisted_cluster.logformat}).  Only when the master
logs elsewhere (syslog, a custom observer) are events relayed to it, as
JSON on the worker's standard output (see L{twisted_cluster.master.logs}).

A busy worker logs once per request.  Writing each line at once would cost
a system call per request, so the lines of one reactor turn go out together
at its end, in one write: several processes append to the same file, and a
whole write keeps every line whole.  Warnings and errors go out at once,
with everything before them, as do events logged in other threads.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from twisted.logger import (
    ILogObserver,
    LogEvent,
    LogLevel,
    eventAsText,
    formatTime,
    jsonFileLogObserver,
)
from twisted.python import threadable
from zope.interface import implementer

from ..logformat import JSON, TEXT, eventAsJSONLine

RELAY = "relay"
STDOUT = "stdout"

_URGENT = frozenset({LogLevel.warn, LogLevel.error, LogLevel.critical})


class LineBuffer:
    """
    Text written to a file descriptor on L{flush}, all of it in one write.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pending: list[str] = []

    def write(self, text: str) -> None:
        self._pending.append(text)

    def flush(self) -> None:
        if not self._pending:
            return
        data = "".join(self._pending).encode("utf-8", "backslashreplace")
        self._pending.clear()
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]


class ReopeningFile(LineBuffer):
    """
    A log file opened for appending that follows its path: once the file
    has been rotated away (renamed, or removed), a flush after a second's
    check opens the new one, as C{logging.WatchedFileHandler} does.
    """

    checkEvery = 1.0

    def __init__(self, path: str) -> None:
        self._path = path
        super().__init__(self._open())
        self._checked = time.monotonic()

    def _open(self) -> int:
        return os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def flush(self) -> None:
        now = time.monotonic()
        if now - self._checked >= self.checkEvery:
            self._checked = now
            try:
                moved = os.stat(self._path).st_ino != os.fstat(self._fd).st_ino
            except FileNotFoundError:
                moved = True
            if moved:
                os.close(self._fd)
                self._fd = self._open()
        super().flush()


class _SecondStamps:
    """
    twistd's timestamps (whole seconds), each second's formatted once.
    """

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def __call__(self, when: float | None) -> str:
        if when is None:
            return "-"
        second = int(when)
        if second != self._second:
            self._second, self._text = second, formatTime(second)
        return self._text


class TextLines:
    """
    An event as a line of twistd's log file, with C{worker N: } in front of
    its system, and its traceback indented under it.
    """

    def __init__(self, workerId: int) -> None:
        self._prefix = f"worker {workerId}: "
        self._stamp = _SecondStamps()

    def __call__(self, event: LogEvent) -> str | None:
        text = eventAsText(event, includeTimestamp=False, includeSystem=False)
        if not text:
            return None
        stamp = self._stamp(event.get("log_time"))
        line = f"{stamp} [{self._prefix}{_system(event)}] {text}"
        return line.replace("\n", "\n\t") + "\n"


class JSONLines:
    """
    An event as one line of JSON (L{eventAsJSONLine}), with the worker's id
    and its slot at the time (a spare learns its slot when it starts).
    """

    def __init__(self, workerId: int, slot: Callable[[], int | None]) -> None:
        self._id = workerId
        self._slot = slot

    def __call__(self, event: LogEvent) -> str | None:
        return eventAsJSONLine(event, (self._id, self._slot()))


@implementer(ILogObserver)
class WorkerLogObserver:
    """
    Writes events, each a line as C{lines} makes it (by default as twistd's
    log file does, L{TextLines}), to a L{LineBuffer}, flushed at the end of
    the reactor turn; at once for warnings and errors, for events logged in
    other threads, and while the reactor is not running.
    """

    def __init__(
        self,
        workerId: int,
        stream: LineBuffer,
        reactor: Any,
        inReactorThread: Callable[[], bool] = threadable.isInIOThread,
        lines: Callable[[LogEvent], str | None] | None = None,
    ) -> None:
        self._lines = TextLines(workerId) if lines is None else lines
        self._stream = stream
        self._reactor = reactor
        self._inReactorThread = inReactorThread
        self._lock = threading.Lock()
        self._turn: Any = None
        reactor.addSystemEventTrigger("after", "shutdown", self.flush)

    def __call__(self, event: LogEvent) -> None:
        line = self._lines(event)
        if not line:
            return
        later = (
            self._reactor.running
            and event.get("log_level") not in _URGENT
            and self._inReactorThread()
        )
        with self._lock:
            self._stream.write(line)
            if not later:
                self._stream.flush()
                return
        if self._turn is None:
            self._turn = self._reactor.callLater(0, self._endOfTurn)

    def _endOfTurn(self) -> None:
        self._turn = None
        self.flush()

    def flush(self) -> None:
        """
        Write out every line so far.
        """
        with self._lock:
            self._stream.flush()


def _system(event: LogEvent) -> str:
    system = event.get("log_system")
    if system is None:
        level = event.get("log_level")
        namespace = event.get("log_namespace", "-")
        return f"{namespace}#{level.name if level is not None else '-'}"
    try:
        return str(system)
    except Exception:
        return "UNFORMATTABLE"


def workerObserver(
    target: str,
    workerId: int,
    reactor: Any,
    logFormat: str = TEXT,
    slot: Callable[[], int | None] = lambda: None,
) -> ILogObserver:
    """
    The observer for a worker whose log goes to C{target}: L{RELAY},
    L{STDOUT} or a file's path, in C{logFormat} (L{TEXT} or L{JSON}; a
    relayed log is the master's to format); C{slot} tells the worker's
    slot at the time.
    """
    if target == RELAY:
        stdout = os.fdopen(1, "w", encoding="utf-8", closefd=False)
        return jsonFileLogObserver(stdout)
    stream = LineBuffer(1) if target == STDOUT else ReopeningFile(target)
    lines = JSONLines(workerId, slot) if logFormat == JSON else None
    return WorkerLogObserver(workerId, stream, reactor, lines=lines)
