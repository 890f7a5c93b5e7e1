"""
systemd's notification protocol (C{sd_notify}): the master says when the
cluster is ready, reloading and stopping, how many workers serve, and pings
systemd's watchdog while its reactor runs.

The protocol is one datagram per message to the UNIX socket named in
C{NOTIFY_SOCKET} (a leading C{@} names one in the abstract namespace),
each line C{NAME=value}.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, MutableMapping

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from .observer import IClusterObserver

VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
"""What systemd tells the main process; no worker is meant to see them."""


def _monotonicMicroseconds() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


@implementer(IClusterObserver)
class SystemdNotifier(Service):
    """
    Sends systemd the cluster's news, and C{WATCHDOG=1} every half
    C{watchdog} seconds while running, if systemd asked for it.
    """

    _log = Logger()

    def __init__(
        self,
        address: str,
        reactor: IReactorTime,
        watchdog: float | None = None,
        monotonic: Callable[[], int] = _monotonicMicroseconds,
    ) -> None:
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._reactor = reactor
        self._watchdog = watchdog
        self._monotonic = monotonic
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self._pinging = LoopingCall(self.send, "WATCHDOG=1")
        self._pinging.clock = reactor
        self._failed = False
        self._stopping = False

    @classmethod
    def fromEnvironment(
        cls, reactor: IReactorTime, environ: MutableMapping[str, str]
    ) -> SystemdNotifier | None:
        """
        A notifier if systemd runs this process with C{NOTIFY_SOCKET}, else
        C{None}.  Takes systemd's variables out of C{environ}: the workers
        it passes on to are not the service's main process.
        """
        given = {name: environ.pop(name, None) for name in VARIABLES}
        address = given["NOTIFY_SOCKET"]
        if not address:
            return None
        watchdog = None
        pid = given["WATCHDOG_PID"]
        usec = given["WATCHDOG_USEC"]
        if usec and (not pid or pid == str(os.getpid())):
            try:
                watchdog = int(usec) / 1e6
            except ValueError:
                watchdog = None
        return cls(address, reactor, watchdog)

    def send(self, *lines: str) -> None:
        """
        Send one message of C{NAME=value} C{lines}.  A lost message is said
        once in the log, never raised: systemd's news must not stop the
        cluster.
        """
        try:
            self._socket.sendto("\n".join(lines).encode(), self._address)
        except OSError as e:
            if not self._failed:
                self._failed = True
                self._log.warn(
                    "Cannot notify systemd at {address}: {e}",
                    address=self._address.replace("\0", "@"),
                    e=e,
                )

    def startService(self) -> None:
        super().startService()
        if self._watchdog:
            self._pinging.start(self._watchdog / 2, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._pinging.running:
            self._pinging.stop()

    def stateChanged(self, old: str, new: str) -> None:
        if new == "running":
            self.send("READY=1", "STATUS=serving")
        elif new in ("reloading", "upgrading"):
            # An upgrade in place too: systemd waits for READY=1 again.
            self.send(
                "RELOADING=1",
                f"MONOTONIC_USEC={self._monotonic()}",
                f"STATUS={new}",
            )
        elif new in ("draining", "stopping", "failed") and not self._stopping:
            self._stopping = True
            self.send("STOPPING=1", f"STATUS={new}")

    def servingChanged(self, serving: int, count: int) -> None:
        self.send(f"STATUS={serving} of {count} workers serving")
