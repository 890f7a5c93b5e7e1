"""
Defects found under chaos and hostile input, each pinned on real processes
(or, where a race cannot be forced from outside, on real sockets in this
process).
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, protocol
from twisted.internet import reactor as globalReactor

from twisted_cluster.worker.listening import _RoundRobinPort

from .support import APPS, KeepAlive, freePort, processExists, waitFor

WEB = APPS / "web.tac"


def webCluster(cluster, tmp_path: Path, workers: int = 2, args=()):
    port = freePort()
    versionFile = tmp_path / "version.txt"
    versionFile.write_text("v1")
    c = cluster(
        WEB,
        workers=workers,
        env={"PORT": str(port), "VERSION_FILE": str(versionFile)},
        args=list(args),
    )
    waitFor(
        lambda: "Reload done" in c.log() or c.log().count("is listening on") >= workers,
        what="workers listening",
    )
    return c, port


def idleKeepAlive(port: int, count: int) -> list[socket.socket]:
    """
    C{count} HTTP/1.1 connections, each answered once and left open.
    """
    sockets = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"v1"):
            chunk = s.recv(4096)
            assert chunk, "closed before the answer"
            data += chunk
        sockets.append(s)
    return sockets


@pytest.mark.parametrize("scheduling", ["reuseport", "shared", "roundrobin"])
def test_retiredWorkerClosesIdleKeepAlive(cluster, tmp_path: Path, scheduling) -> None:
    """
    A reload's retired workers close their idle twisted.web keep-alive
    connections after the 2 s grace, not at --graceful-timeout, and exit;
    a keep-alive client meanwhile is told C{Connection: close} and loses
    nothing.
    """
    c, port = webCluster(
        cluster, tmp_path, args=["--scheduling", scheduling, "--graceful-timeout", "60"]
    )
    old = set(c.workerPids())
    idle = idleKeepAlive(port, 100)
    with KeepAlive(port, clients=2) as busy:
        waitFor(lambda: busy.answers > 20, what="keep-alive answers")
        c.signal(signal.SIGHUP)
        waitFor(lambda: "Reload done" in c.log(), timeout=30, what="the reload")
        started = time.monotonic()
        waitFor(
            lambda: not any(map(processExists, old)),
            timeout=20,
            what="the retired workers to exit",
        )
        assert time.monotonic() - started < 15
        answered = busy.answers
        waitFor(lambda: busy.answers > answered + 20, what="answers after")
    for s in idle:
        s.settimeout(5)
        assert s.recv(4096) == b"", "an idle connection was not closed"
        s.close()
    assert busy.failures == []
    assert busy.closes >= 1


@pytest_twisted.inlineCallbacks
def test_roundRobinConnectionTakenWhileStopping():
    """
    A connection the worker took from the master is served even if the
    worker stops listening (a Disconnect in the same turn) before it gets
    to it: the client gets its answer, not a bare close.
    """

    class Greet(protocol.Protocol):
        def connectionMade(self):
            self.transport.write(b"hello")
            self.transport.loseConnection()

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.setblocking(False)
    port = _RoundRobinPort._fromListeningDescriptor(
        globalReactor,
        os.dup(listener.fileno()),
        socket.AF_INET,
        protocol.Factory.forProtocol(Greet),
    )
    port.startListening()
    client = socket.create_connection(listener.getsockname(), timeout=5)
    try:
        listener.setblocking(True)
        accepted, _ = listener.accept()
        descriptor = os.dup(accepted.fileno())
        accepted.close()
        port.expect()  # The worker said yes to the master...
        yield port.stopListening()  # ...then a Disconnect stopped the port.
        idle = port.whenIdle()
        assert not idle.called
        globalReactor.callLater(0, port.connectionReceived, descriptor)
        yield idle
        client.settimeout(5)
        data = b""
        while chunk := client.recv(100):
            data += chunk
        assert data == b"hello"
    finally:
        client.close()
        listener.close()
    yield defer.succeed(None)
