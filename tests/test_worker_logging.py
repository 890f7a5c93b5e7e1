"""
A worker's own log: its id in every line, twistd's format, one write per
reactor turn, and a log file that follows rotation.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, formatEventAsClassicLogText
from twisted.python.failure import Failure

from twisted_cluster.worker.logging import (
    LineBuffer,
    ReopeningFile,
    WorkerLogObserver,
)


class Writes(LineBuffer):
    """
    A L{LineBuffer} that keeps each write it would make.
    """

    def __init__(self) -> None:
        super().__init__(-1)
        self.writes: list[str] = []

    def flush(self) -> None:
        if self._pending:
            self.writes.append("".join(self._pending))
            self._pending.clear()


def running() -> MemoryReactorClock:
    reactor = MemoryReactorClock()
    reactor.running = True
    return reactor


def event(text: str, level: LogLevel = LogLevel.info, **more: object) -> dict:
    return {
        "log_format": text,
        "log_namespace": "app",
        "log_level": level,
        "log_time": 1_700_000_000.25,
        **more,
    }


def test_reopensRotatedFile(tmp_path: Path) -> None:
    path = tmp_path / "twistd.log"
    log = ReopeningFile(str(path))
    log.checkEvery = 0.0
    log.write("one\n")
    log.flush()
    os.rename(path, tmp_path / "twistd.log.1")
    log.write("two\n")
    log.flush()
    assert (tmp_path / "twistd.log.1").read_text() == "one\n"
    assert path.read_text() == "two\n"


def test_twistdFormatWithWorkerId() -> None:
    """
    A line is what twistd's log file has, with the worker's id in front of
    the system; a traceback is indented under it, as twistd's is.
    """
    stream = Writes()
    observe = WorkerLogObserver(3, stream, MemoryReactorClock())
    failure = Failure(ZeroDivisionError("division by zero"))
    events = [
        event("hi {who}", who="there"),
        event("legacy", log_system="HTTPChannel,0,127.0.0.1"),
        event("broke", LogLevel.error, log_failure=failure),
    ]
    for e in events:
        observe(e)
    expected = [
        formatEventAsClassicLogText(e).replace("[", "[worker 3: ", 1)  # type: ignore[union-attr]
        for e in events
    ]
    assert stream.writes == expected
    assert expected[0].endswith(" [worker 3: app#info] hi there\n")
    assert "\n\tTraceback" in expected[2]


def test_oneWritePerTurn() -> None:
    """
    While the reactor runs, the lines of one turn go out in one write at
    its end.
    """
    stream = Writes()
    reactor = running()
    observe = WorkerLogObserver(1, stream, reactor, inReactorThread=lambda: True)
    observe(event("one"))
    observe(event("two"))
    assert stream.writes == []
    reactor.advance(0)
    assert len(stream.writes) == 1
    assert stream.writes[0].count("\n") == 2
    observe(event("three"))
    reactor.advance(0)
    assert len(stream.writes) == 2 and "three" in stream.writes[1]


def test_warningsAtOnce() -> None:
    """
    A warning or an error goes out at once, after the lines before it.
    """
    stream = Writes()
    reactor = running()
    observe = WorkerLogObserver(1, stream, reactor, inReactorThread=lambda: True)
    observe(event("before"))
    observe(event("careful", LogLevel.warn))
    assert len(stream.writes) == 1
    assert stream.writes[0].index("before") < stream.writes[0].index("careful")
    reactor.advance(0)
    assert len(stream.writes) == 1


def test_otherThreadsAtOnce() -> None:
    """
    An event logged in a thread other than the reactor's goes out at once:
    the reactor is not to be touched from there, and may sleep on.
    """
    stream = Writes()
    reactor = running()
    observe = WorkerLogObserver(1, stream, reactor, inReactorThread=lambda: False)
    observe(event("from a thread"))
    assert len(stream.writes) == 1
    assert not reactor.getDelayedCalls()


def test_shutdownFlushes() -> None:
    """
    What is pending when the reactor shuts down is written after it has;
    once it is not running, each line goes out at once.
    """
    stream = Writes()
    reactor = running()
    observe = WorkerLogObserver(1, stream, reactor, inReactorThread=lambda: True)
    observe(event("last words"))
    for trigger in reactor.triggers["after"]["shutdown"]:
        trigger[0]()
    assert len(stream.writes) == 1 and "last words" in stream.writes[0]
    reactor.running = False
    observe(event("after"))
    assert len(stream.writes) == 2


def test_linesWholeInSharedFile(tmp_path: Path) -> None:
    """
    Two writers appending to one file leave every line whole.
    """
    path = str(tmp_path / "log")
    a, b = ReopeningFile(path), ReopeningFile(path)
    for n in range(200):
        a.write(f"a{n}" + "x" * 300 + "\n")
        b.write(f"b{n}" + "y" * 300 + "\n")
        if n % 50 == 49:
            a.flush()
            b.flush()
    lines = Path(path).read_text().splitlines()
    assert len(lines) == 400
    assert all(set(line.lstrip("ab0123456789")) in ({"x"}, {"y"}) for line in lines)
