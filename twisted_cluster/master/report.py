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
from typing import IO, Any

from twisted.internet.interfaces import IAddress

from ..events import EventEmitter

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


class EventReport:
    """
    Writes a master's worker events to a stream as JSON lines.
    """

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def attach(self, master: EventEmitter) -> None:
        for event in ("fork", "online", "ready", "listening", "disconnect", "death"):
            master.on(event, lambda *args, name=event: self._write(name, *args))

    def _write(self, name: str, worker: Any, *args: Any) -> None:
        record: dict[str, Any] = {"event": name, "worker": worker.id, "pid": worker.pid}
        if name == "listening":
            record["address"] = describeAddress(args[0])
        elif name == "death":
            record["exitCode"], record["signal"] = args
            record["exitedAfterDisconnect"] = worker.exitedAfterDisconnect
        try:
            self._stream.write(json.dumps(record) + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            pass  # Whoever read it has gone; the cluster goes on.


def reportFromEnvironment(environ: Mapping[str, str]) -> EventReport | None:
    """
    The report C{TWISTED_CLUSTER_REPORT_FD} asks for, if it names an open
    descriptor.
    """
    value = environ.get(REPORT_FD_ENV)
    if not value:
        return None
    try:
        stream = os.fdopen(int(value), "w", buffering=1, encoding="utf-8")
    except (OSError, ValueError):
        return None
    return EventReport(stream)
