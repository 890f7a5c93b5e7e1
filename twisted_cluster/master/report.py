"""
A machine-readable account of the cluster's events, for tools and tests.

When C{TWISTED_CLUSTER_REPORT_FD} names an open descriptor, the master
writes one JSON object a line there for each worker event, such as
C{{"event": "listening", "worker": 1, "pid": 4242, "address": ["TCP",
"127.0.0.1", 8080]}}.  L{twisted_cluster.testing} reads it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from twisted.internet.interfaces import IAddress, IReactorFDSet, IWriteDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..events import EventEmitter
from .observer import IWorkerObserver

REPORT_FD_ENV = "TWISTED_CLUSTER_REPORT_FD"


def describeAddress(address: IAddress) -> list[Any]:
    """
    An address as JSON: C{["TCP", host, port]}, C{["UDP", host, port]} or
    C{["UNIX", path]}.
    """
    port = getattr(address, "port", None)
    if port is None:
        return ["UNIX", os.fsdecode(getattr(address, "name", "") or "")]
    return [getattr(address, "type", "TCP"), getattr(address, "host", ""), port]


BUFFER_LIMIT = 1024 * 1024
"""Bytes of report held for a reader that does not keep up; beyond them,
events are dropped (the cluster never waits for the reader)."""


@implementer(IWriteDescriptor)
class _Writer:
    """
    Writes to a descriptor without ever blocking: what the reader has not
    taken yet waits in a bounded buffer, written when the descriptor is
    writable; past C{limit} bytes, what comes is dropped, and said once.
    """

    _log = Logger()

    def __init__(self, reactor: IReactorFDSet, fd: int, limit: int) -> None:
        self._reactor = reactor
        self._fd = fd
        self._limit = limit
        self._buffer = b""
        self._writing = False
        self._closed = False
        self.dropped = 0
        os.set_blocking(fd, False)

    def write(self, data: bytes) -> None:
        if self._closed:
            return
        if len(self._buffer) + len(data) > self._limit:
            if not self.dropped:
                self._log.warn(
                    "The event report ({env}) is not being read; dropping events "
                    "until it is",
                    env=REPORT_FD_ENV,
                )
            self.dropped += 1
            return
        self._buffer += data
        self.doWrite()

    def doWrite(self) -> None:
        try:
            written = os.write(self._fd, self._buffer)
        except BlockingIOError:
            written = 0
        except OSError:
            # Whoever read it has gone; the cluster goes on without it.
            self._close()
            return
        self._buffer = self._buffer[written:]
        want = bool(self._buffer)
        if want and not self._writing:
            self._reactor.addWriter(self)
        elif not want and self._writing:
            self._reactor.removeWriter(self)
        self._writing = want

    def _close(self) -> None:
        if self._writing:
            self._reactor.removeWriter(self)
            self._writing = False
        self._closed = True
        self._buffer = b""
        os.close(self._fd)

    def fileno(self) -> int:
        return self._fd

    def connectionLost(self, reason: Failure) -> None:
        self._writing = False

    def logPrefix(self) -> str:
        return "EventReport"


@implementer(IWorkerObserver)
class EventReport:
    """
    Writes a master's worker events to a descriptor as JSON lines, never
    blocking the master on a slow reader.
    """

    def __init__(
        self, reactor: IReactorFDSet, fd: int, limit: int = BUFFER_LIMIT
    ) -> None:
        self._writer = _Writer(reactor, fd, limit)

    @property
    def dropped(self) -> int:
        """
        How many events were dropped because the reader did not keep up.
        """
        return self._writer.dropped

    def attach(self, master: EventEmitter) -> None:
        for event in ("fork", "online", "listening", "disconnect", "death"):
            master.on(event, lambda *args, name=event: self._write(name, *args))

    def workerReady(self, worker: Any) -> None:
        self._write("ready", worker)

    def listenFailed(self, worker: Any, reason: str) -> None:
        pass

    def spareListened(self, worker: Any) -> None:
        pass

    def _write(self, name: str, worker: Any, *args: Any) -> None:
        record: dict[str, Any] = {"event": name, "worker": worker.id, "pid": worker.pid}
        if name == "listening":
            record["address"] = describeAddress(args[0])
        elif name == "death":
            record["exitCode"], record["signal"] = args
            record["exitedAfterDisconnect"] = worker.exitedAfterDisconnect
        self._writer.write(json.dumps(record).encode() + b"\n")


def reportFromEnvironment(
    reactor: IReactorFDSet, environ: Mapping[str, str]
) -> EventReport | None:
    """
    The report C{TWISTED_CLUSTER_REPORT_FD} asks for, if it names an open
    descriptor.
    """
    value = environ.get(REPORT_FD_ENV)
    if not value:
        return None
    try:
        fd = int(value)
        os.fstat(fd)
    except (OSError, ValueError):
        return None
    return EventReport(reactor, fd)
