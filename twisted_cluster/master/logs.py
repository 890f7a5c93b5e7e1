"""
Carry a worker's log into the master's.

A worker writes its log events as JSON text sequences on its standard output
and anything else (a C-level crash dump, say) on its standard error.  The
master re-publishes each event with the worker's id in its system (and, as
C{worker_id} and C{worker_slot}, in the event), so one log tells the whole
cluster's story.

With C{--log-format json} the master's own log is JSON too: L{chooseJSON}
has twistd use L{jsonLogObserver} instead of its text observer.
"""

from __future__ import annotations

import base64
import signal
import sys
from collections.abc import Callable
from typing import IO, Any, cast

from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    eventFromJSON,
    globalLogPublisher,
)
from twisted.python.logfile import LogFile

from ..logformat import WORKER_ID, WORKER_SLOT, eventAsJSONLine

RECORD_SEPARATOR = b"\x1e"


class WorkerLogRelay:
    """
    Turns the bytes a worker writes into events in the master's log.
    """

    def __init__(
        self,
        workerId: int,
        observer: ILogObserver | None = None,
        slot: Callable[[], int | None] = lambda: None,
    ) -> None:
        self._system = f"worker {workerId}"
        self._id = workerId
        self._slot = slot
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

    def pending(self) -> dict[str, str]:
        """
        What arrived but ends no line yet, for the master's next image.
        """
        return {
            "events": base64.b64encode(self._events).decode(),
            "errors": base64.b64encode(self._errors).decode(),
        }

    def restore(self, pending: dict[str, str]) -> None:
        """
        Go on from what the previous image's relay had pending.
        """
        self._events = base64.b64decode(pending.get("events", ""))
        self._errors = base64.b64decode(pending.get("errors", ""))

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
        event[WORKER_ID], event[WORKER_SLOT] = self._id, self._slot()
        self._observer(event)

    def _text(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip()
        if text:
            worker = {WORKER_ID: self._id, WORKER_SLOT: self._slot()}
            self._log.emit(
                LogLevel.warn, "{line}", line=text, log_system=self._system, **worker
            )


_twistd: list[Any] = []
"""The twistd options L{chooseJSON} was given, for L{jsonLogObserver}."""


def chooseJSON(runner: Any) -> None:
    """
    Have twistd, whose options are C{runner}, log as JSON: its C{--logger}
    becomes L{jsonLogObserver}, which twistd calls, having read the
    options, instead of making its text observer.

    @raise ValueError: if twistd was told to log elsewhere (C{--syslog},
        C{--logger}), or C{runner} is not twistd's.
    """
    try:
        elsewhere = runner["syslog"] or runner["logger"]
    except (KeyError, TypeError):
        raise ValueError("--log-format json: only under twistd") from None
    if elsewhere:
        raise ValueError(
            "--log-format json writes twistd's log file or standard output, "
            "not with --syslog or --logger"
        )
    _twistd[:] = [runner]
    # twistd's own postOptions, which runs after ours, imports it by name.
    runner["logger"] = f"{__name__}.jsonLogObserver"


def isJSONObserver(logger: object) -> bool:
    """
    Whether twistd's C{--logger} is the one L{chooseJSON} set.
    """
    return logger is jsonLogObserver or logger == f"{__name__}.jsonLogObserver"


def jsonLogObserver() -> ILogObserver:
    """
    The master's observer under C{--log-format json}: where twistd would
    write its text (C{--logfile}, C{twistd.log}, or standard output with
    C{-n}), one JSON object per line; C{SIGUSR1} rotates the log file, as
    it does twistd's.
    """
    runner = _twistd[0] if _twistd else {}
    logfile, nodaemon = runner.get("logfile"), runner.get("nodaemon")
    out: IO[Any]
    if logfile == "-" or (nodaemon and not logfile):
        if not nodaemon:
            sys.exit("Daemons cannot log to stdout, exiting!")
        out = sys.stdout
    else:
        # A LogFile writes and flushes as a file does: as twistd's own.
        out = cast(IO[Any], _rotating(LogFile.fromFullPath(logfile or "twistd.log")))
    return FileLogObserver(out, eventAsJSONLine)


def _rotating(log: LogFile) -> LogFile:
    if not signal.getsignal(signal.SIGUSR1):

        def rotate(number: int, frame: Any) -> None:
            from twisted.internet import reactor

            reactor.callFromThread(log.rotate)  # type: ignore[attr-defined]

        signal.signal(signal.SIGUSR1, rotate)
    return log
