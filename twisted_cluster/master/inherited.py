"""
The processes and pipes of workers that the master's previous image
started (before it upgraded in place, by exec): this image did not spawn
them, so Twisted neither reaps them nor reads their output unless told to.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import IProcessProtocol, IProcessTransport
from twisted.internet.process import (
    ProcessReader,
    registerReapProcessHandler,
    unregisterReapProcessHandler,
)
from twisted.python.failure import Failure
from zope.interface import implementer


def exitReason(status: int) -> BaseException:
    """
    What C{waitpid}'s C{status} means, as Twisted tells a process protocol.
    """
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        return ProcessTerminated(code, None, status) if code else ProcessDone(status)
    return ProcessTerminated(None, os.WTERMSIG(status), status)


@implementer(IProcessTransport)
class InheritedProcess:
    """
    A child of this process that its previous image spawned.  L{watch} has
    the reactor reap it as it reaps its own children (on C{SIGCHLD}), and
    tell C{protocol} when it exits.
    """

    def __init__(self, pid: int, protocol: IProcessProtocol) -> None:
        self.pid: int | None = pid
        self._protocol = protocol

    def watch(self) -> None:
        """
        Reap it when it exits (at once, if it already has).
        """
        assert self.pid is not None
        registerReapProcessHandler(self.pid, self)

    def reapProcess(self) -> None:
        # Called by the reactor after a SIGCHLD, for each registered child.
        if self.pid is None:
            return
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, 0  # Reaped by someone else: gone, how unknown.
        if pid:
            unregisterReapProcessHandler(pid, self)
            self.processEnded(status)

    def processEnded(self, status: int) -> None:
        self.pid = None
        reason = Failure(exitReason(status))
        self._protocol.processExited(reason)
        self._protocol.processEnded(reason)

    def signalProcess(self, signalID: Any) -> None:
        if self.pid is None:
            raise ProcessExitedAlready()
        os.kill(self.pid, signalID)

    # The rest of IProcessTransport: a worker's standard input is /dev/null,
    # and its output pipes are read by L{OutputPipes}.

    def closeStdin(self) -> None:
        pass

    def closeStdout(self) -> None:
        pass

    def closeStderr(self) -> None:
        pass

    def closeChildFD(self, descriptor: int) -> None:
        pass

    def writeToChild(self, childFD: int, data: bytes) -> None:
        raise OSError(f"no pipe to descriptor {childFD} of an inherited process")

    def loseConnection(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.writeToChild(0, data)

    def writeSequence(self, data: Any) -> None:
        self.writeToChild(0, b"")

    def getHost(self) -> Any:
        raise NotImplementedError("an inherited process has no address")

    def getPeer(self) -> Any:
        raise NotImplementedError("an inherited process has no address")


class OutputPipes:
    """
    Reads the pipes a worker's output descriptors write to and hands what
    arrives to its process protocol's C{childDataReceived}; closes each
    pipe at its end.  The same for a worker this image spawned as for one
    it inherited, so that an upgrade can hand the pipes on.
    """

    def __init__(self, reactor: Any, protocol: IProcessProtocol) -> None:
        self._reactor = reactor
        self._protocol = protocol
        self._readers: dict[int, ProcessReader] = {}

    def read(self, childFD: int, descriptor: int) -> None:
        """
        Read C{descriptor}, the pipe the worker's C{childFD} writes to.
        """
        self._readers[childFD] = ProcessReader(self._reactor, self, childFD, descriptor)

    def descriptors(self) -> dict[int, int]:
        """
        The pipes still open, by the worker's descriptor they read.
        """
        return {fd: reader.fileno() for fd, reader in self._readers.items()}

    def pause(self) -> None:
        """
        Read no more (the pipes are about to go to the next image).
        """
        for reader in self._readers.values():
            reader.stopReading()

    def resume(self) -> None:
        for reader in self._readers.values():
            reader.startReading()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self._protocol.childDataReceived(childFD, data)

    def childConnectionLost(self, childFD: int, reason: Failure) -> None:
        reader = self._readers.pop(childFD, None)
        if reader is not None:
            os.close(reader.fileno())
