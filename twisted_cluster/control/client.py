"""
The C{twisted-cluster} command's end of the control socket: it runs one
command on a connection it is handed, printing the master's progress.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any, TextIO

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.error import ConnectError, ConnectionClosed
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.task import LoopingCall
from twisted.protocols import amp
from twisted.python.failure import Failure

from .commands import Progress, Refused, Reload, Scale, Send, Status, Stop, Upgrade
from .table import formatStatus

CLEAR = "\x1b[H\x1b[2J"
"""Home the cursor and clear the screen: C{--watch} redraws in place."""

EXIT_WAIT = 30.0
"""How long C{stop} waits for the master to exit once it has hung up."""

UPGRADE_WAIT = 60.0
"""How long C{upgrade} waits for the master's new image to answer."""

_PEERCRED = struct.Struct("3i")


def peerPid(sock: socket.socket) -> int | None:
    """
    The pid of the process at the other end of a UNIX connection, or
    C{None} where the kernel does not say (C{SO_PEERCRED}: Linux; 0 when
    the peer is in a pid namespace this process cannot see).
    """
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    pid, _, _ = _PEERCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, option, _PEERCRED.size)
    )
    return int(pid) or None


def exited(pid: int) -> bool:
    """
    Whether process C{pid} has exited (a zombie has).
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


class _ClientProtocol(amp.AMP):
    def __init__(self, out: TextIO) -> None:
        super().__init__()
        self._out = out
        self.lost: Deferred[None] = Deferred()

    @Progress.responder
    def progress(self, line: str) -> dict[str, Any]:
        self._out.write(f"  {line}\n")
        self._out.flush()
        return {}

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.lost.callback(None)


class Client:
    """
    Runs a command against a master over C{sock}, a connected control
    socket, on C{reactor}.
    """

    def __init__(self, reactor: Any, sock: socket.socket, out: TextIO) -> None:
        self._reactor = reactor
        self._out = out
        self._protocol = _ClientProtocol(out)
        # The master: stop waits for it to exit, not only to hang up.
        self._masterPid = peerPid(sock)
        reactor.adoptStreamConnection(
            sock.fileno(), socket.AF_UNIX, Factory.forProtocol(lambda: self._protocol)
        )
        sock.close()
        self._code = 1

    def run(self, action: Callable[[], Deferred[int] | int]) -> int:
        """
        Run C{action} in the reactor; its exit status.
        """

        def go() -> None:
            d = maybeDeferred(action)
            d.addCallbacks(self._exit, self._failed)

        self._reactor.callWhenRunning(go)
        self._reactor.run()
        return self._code

    def _exit(self, code: int) -> None:
        self._code = code
        if self._reactor.running:
            self._reactor.stop()

    def _failed(self, failure: Failure) -> None:
        if failure.check(Refused):
            why = failure.getErrorMessage()
        elif failure.check(ConnectionClosed):
            why = "the master closed the connection (does it refuse this user?)"
        else:
            why = f"{failure.value.__class__.__name__}: {failure.getErrorMessage()}"
        sys.stderr.write(f"twisted-cluster: {why}\n")
        self._exit(1)

    def _call(self, command: type[amp.Command], **kw: Any) -> Deferred[Any]:
        d: Deferred[Any] = self._protocol.callRemote(command, **kw)
        return d

    def _say(self, line: str) -> None:
        self._out.write(line + "\n")
        self._out.flush()

    # The commands

    def status(self, asJSON: bool, watch: bool) -> Deferred[int]:
        def show(answer: dict[str, Any]) -> int:
            status = answer["status"]
            if watch:
                self._out.write(CLEAR)
            if asJSON:
                self._say(json.dumps(status, indent=None if watch else 1))
            else:
                formatStatus(status, self._out)
            self._out.flush()
            return 0

        if not watch:
            return self._call(Status).addCallback(show)
        # Until Ctrl-C, which stops the reactor: then all is well.
        self._code = 0
        loop = LoopingCall(lambda: self._call(Status).addCallback(show))
        loop.clock = self._reactor
        return loop.start(1.0).addCallback(lambda _: 0)

    def reload(self) -> Deferred[int]:
        self._say("Reloading")

        def done(_: object) -> int:
            self._say("Reloaded: every worker runs fresh code")
            return 0

        return self._call(Reload).addCallback(done)

    def scale(self, count: int, relative: bool) -> Deferred[int]:
        def done(answer: dict[str, Any]) -> int:
            n = answer["count"]
            self._say(f"{n} worker{'' if n == 1 else 's'} serving")
            return 0

        return self._call(Scale, count=count, relative=relative).addCallback(done)

    def stop(self, now: bool) -> Deferred[int]:
        self._say("Stopping" + (" at once" if now else ""))

        def stopped(_: object) -> int:
            self._say("Stopped")
            return 0

        return (
            self._call(Stop, now=now)
            .addCallback(lambda _: self._protocol.lost)
            .addCallback(lambda _: self._masterExited())
            .addCallback(stopped)
        )

    def _masterExited(self, interval: float = 0.01) -> Deferred[None]:
        """
        Fires once the master has exited: its connection closes while it
        still shuts down, and C{stop} says it is stopped only once it is.
        """
        pid = self._masterPid
        if pid is None:
            return succeed(None)
        deadline = self._reactor.seconds() + EXIT_WAIT

        def check() -> None:
            if exited(pid):
                poll.stop()
            elif self._reactor.seconds() > deadline:
                raise Refused(
                    f"the master hung up but still runs after {EXIT_WAIT:g}s "
                    f"(pid {pid})"
                )

        poll = LoopingCall(check)
        poll.clock = self._reactor
        return poll.start(interval).addCallback(lambda _: None)

    def upgrade(self, path: str) -> Deferred[int]:
        """
        Have the master upgrade in place, then wait for its new image to
        answer at C{path}.
        """
        self._say("Upgrading the master in place")
        began = self._reactor.seconds()

        def asked(answer: dict[str, Any]) -> Deferred[int]:
            master = answer["status"]["master"]
            generation = int(master.get("generation", 0))
            # Refused, or never answered: the connection closes at the exec.
            upgrading = self._call(Upgrade)
            upgrading.addErrback(lambda f: f if f.check(Refused) else None)
            upgrading.addCallback(lambda _: self._protocol.lost)
            upgrading.addCallback(lambda _: self._newImage(path, generation))
            return upgrading.addCallback(done, master["pid"])

        def done(status: dict[str, Any], pid: int) -> int:
            master = status["master"]
            self._say(
                f"Upgraded the master (pid {pid}) in place in "
                f"{self._reactor.seconds() - began:.2f}s: generation "
                f"{master['generation']}, {len(status['workers'])} workers kept; "
                "`twisted-cluster reload` rolls the workers onto the new code"
            )
            return 0

        return self._call(Status).addCallback(asked)

    def _newImage(self, path: str, generation: int) -> Deferred[dict[str, Any]]:
        """
        The status of the master at C{path} once it is a later generation
        than C{generation}.
        """
        deadline = self._reactor.seconds() + UPGRADE_WAIT
        pid = self._masterPid
        result: Deferred[dict[str, Any]] = Deferred()

        def attempt() -> None:
            if pid is not None and exited(pid):
                result.errback(
                    Refused("the master exited while upgrading; see its log")
                )
                return
            if self._reactor.seconds() > deadline:
                result.errback(
                    Refused(
                        f"the master's new image did not answer in {UPGRADE_WAIT:g}s"
                    )
                )
                return
            endpoint = UNIXClientEndpoint(self._reactor, path)
            d = endpoint.connect(Factory.forProtocol(amp.AMP))
            d.addCallback(ask)
            d.addErrback(retry)

        def ask(protocol: amp.AMP) -> Deferred[None]:
            d = protocol.callRemote(Status)

            def answered(answer: dict[str, Any]) -> None:
                protocol.transport.loseConnection()  # type: ignore[union-attr]
                status = answer["status"]
                if int(status["master"].get("generation", 0)) > generation:
                    result.callback(status)
                else:
                    result.errback(Refused("the master did not upgrade; see its log"))

            return d.addCallback(answered)

        def retry(failure: Failure) -> None:
            if result.called:
                return
            failure.trap(ConnectError, ConnectionClosed)
            self._reactor.callLater(0.05, attempt)

        attempt()
        return result

    def send(self, worker: int, message: object) -> Deferred[int]:
        def done(answer: dict[str, Any]) -> int:
            n = answer["sent"]
            self._say(f"Sent to {n} worker{'' if n == 1 else 's'}")
            return 0

        return self._call(Send, worker=worker, message=message).addCallback(done)
