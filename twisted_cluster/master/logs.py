"""
Carry a worker's log into the master's.

A worker writes its log events as JSON text sequences on its standard output
and anything else (a C-level crash dump, say) on its standard error.  The
master re-publishes each event with the worker's id in its system, so one log
tells the whole cluster's story.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import (
    ILogObserver,
    Logger,
    LogLevel,
    eventFromJSON,
    globalLogPublisher,
)

RECORD_SEPARATOR = b"\x1e"


class WorkerLogRelay:
    """
    Turns the bytes a worker writes into events in the master's log.
    """

    def __init__(self, workerId: int, observer: ILogObserver | None = None) -> None:
        self._system = f"worker {workerId}"
        self._observer = observer if observer is not None else globalLogPublisher
        self._log = Logger(namespace="twisted_cluster.worker", observer=self._observer)
        self._events = b""
        self._errors = b""

    def eventsReceived(self, data: bytes) -> None:
        """
        Bytes from the worker's JSON log stream.
        """
        *records, self._events = (self._events + data).split(RECORD_SEPARATOR)
        for record in records:
            self._publish(record)

    def errorsReceived(self, data: bytes) -> None:
        """
        Bytes from the worker's standard error.
        """
        *lines, self._errors = (self._errors + data).split(b"\n")
        for line in lines:
            self._text(line)

    def flush(self) -> None:
        """
        The worker has gone: log whatever it left unterminated.
        """
        if self._events.strip():
            self._publish(self._events)
        if self._errors.strip():
            self._text(self._errors)
        self._events = self._errors = b""

    def _publish(self, record: bytes) -> None:
        text = record.decode("utf-8", "replace").strip()
        if not text:
            return
        try:
            event: dict[str, Any] = eventFromJSON(text)
        except ValueError:
            self._text(record)
            return
        level = event.get("log_level")
        system = event.get("log_system")
        if system is None:
            namespace = event.get("log_namespace", "-")
            system = f"{namespace}#{level.name}" if level is not None else namespace
        event["log_system"] = f"{self._system}: {system}"
        self._observer(event)

    def _text(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip()
        if text:
            self._log.emit(LogLevel.warn, "{line}", line=text, log_system=self._system)
