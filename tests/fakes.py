"""
Fakes for unit tests of the master: a reactor that spawns pretend worker
processes whose channels are in-memory AMP connections (L{iosim}).
"""

from __future__ import annotations

import os
import signal as signals
from collections.abc import Callable
from typing import Any

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.test import iosim


class WorkerPeer(amp.AMP):
    """
    The worker's end of a fake channel: records the commands the master
    sends and answers them, except heartbeats while C{hung}; a C{Metrics}
    command gets C{metrics} as its text (never an answer while it is
    C{None}).
    """

    def __init__(self) -> None:
        super().__init__()
        self.received: list[str] = []
        self.hung = False
        self.metrics: bytes | None = b""

    def locateResponder(self, name: bytes):  # type: ignore[override]
        def respond(box: amp.AmpBox) -> Any:
            from twisted.internet.defer import Deferred, succeed

            self.received.append(name.decode())
            if name == b"Heartbeat" and self.hung:
                return Deferred()
            if name == b"Metrics":
                from twisted_cluster.commands import Metrics

                if self.metrics is None:
                    return Deferred()
                return succeed(Metrics.makeResponse({"text": self.metrics}, self))

            return succeed(amp.AmpBox())

        return respond


class FakeProcess:
    """
    A pretend worker process: records signals, exits when told.
    """

    def __init__(
        self,
        reactor: FakeProcessReactor,
        protocol: ProcessProtocol,
        pid: int,
        argv: list[str],
        env: dict[str, str],
    ) -> None:
        self.reactor = reactor
        self.proto = protocol
        self.pid = pid
        self.argv = argv
        self.env = env
        self.signals: list[str] = []
        self.exited = False
        self.peer: WorkerPeer | None = None
        self.pump: iosim.IOPump | None = None

    def signalProcess(self, number: int) -> None:
        from twisted.internet.error import ProcessExitedAlready

        if self.exited:
            raise ProcessExitedAlready()
        self.signals.append(signals.Signals(number).name.removeprefix("SIG"))

    def exit(self, code: int | None = 0, signal: str | None = None) -> None:
        """
        End the process with C{code}, or by C{signal}; its channel closes too.
        """
        self.exited = True
        if signal is None and code == 0:
            reason = Failure(ProcessDone(0))
        else:
            number = getattr(signals, signal) if signal else None
            reason = Failure(
                ProcessTerminated(code if signal is None else None, number)
            )
        self.proto.processExited(reason)
        if self.pump is not None:
            self.pump.clientIO.loseConnection()
            self.pump.flush()

    def call(self, command: type[amp.Command], **kw: Any) -> Any:
        """
        Call C{command} on the master from the worker's end; return the result.
        """
        assert self.peer is not None and self.pump is not None
        results: list[Any] = []
        self.peer.callRemote(command, **kw).addBoth(results.append)
        self.pump.flush()
        assert results, f"{command.__name__} not answered"
        if isinstance(results[0], Failure):
            results[0].raiseException()
        if "descriptor" in results[0]:
            os.close(results[0]["descriptor"])
        return results[0]

    def loseConnection(self) -> None:
        pass


class FakeProcessReactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} that spawns L{FakeProcess}es and connects each
    adopted channel to an AMP peer in memory.
    """

    def __init__(self, peer: Callable[[], amp.AMP] = WorkerPeer) -> None:
        """
        @param peer: makes the worker's end of each channel (its attribute
            C{peer}, which a test may change).
        """
        super().__init__()
        self.processes: list[FakeProcess] = []
        self._lastPid = 1000
        self.peer = peer

    def spawnProcess(
        self,
        processProtocol: ProcessProtocol,
        executable: str,
        args: list[str] = None,
        env: dict[str, str] | None = None,
        path: str | None = None,
        uid: int | None = None,
        gid: int | None = None,
        usePTY: bool = False,
        childFDs: dict[int, Any] | None = None,
    ) -> FakeProcess:
        if args is None:
            args = []
        self._lastPid += 1
        process = FakeProcess(self, processProtocol, self._lastPid, args, env or {})
        processProtocol.makeConnection(process)  # type: ignore[arg-type]
        self.processes.append(process)
        return process

    def adoptStreamConnection(self, fd: int, family: int, factory: Factory) -> None:
        master = factory.buildProtocol(None)
        peer: Any = self.peer()
        transport = iosim.makeFakeServer(master)
        # Descriptors pass ahead of the bytes that refer to them, as on a
        # UNIX socket.
        transport.sendFileDescriptor = lambda fd: peer.fileDescriptorReceived(
            os.dup(fd)
        )
        pump = iosim.connect(
            master, transport, peer, iosim.makeFakeClient(peer), greet=False
        )
        process = self.processes[-1]
        process.peer, process.pump = peer, pump

    @property
    def live(self) -> list[FakeProcess]:
        return [p for p in self.processes if not p.exited]
