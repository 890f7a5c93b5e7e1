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

from . import support
from .support import (
    APPS,
    KeepAlive,
    freePort,
    openDescriptors,
    processExists,
    residentKB,
    waitFor,
)

WEB = APPS / "web.tac"


def webCluster(cluster, tmp_path: Path, workers: int = 2, args=(), env=None, **kw):
    """
    L{support.webCluster}, once its workers listen.
    """
    c, port = support.webCluster(cluster, tmp_path, workers, args, env, **kw)
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


def test_workerChildrenAreNotWorkers(cluster, tmp_path: Path) -> None:
    """
    A worker's own child processes do not inherit the variable that marks
    a worker: one that imports the cluster module is a master, not a
    broken worker; the worker keeps its id.
    """
    import json

    out = tmp_path / "out"
    cluster(APPS / "child.tac", workers=2, env={"OUT_FILE": str(out)})
    reports = waitFor(
        lambda: len(files := list(tmp_path.glob("out.[0-9]*[0-9]"))) == 2 and files,
        what="both workers' reports",
    )
    seen = sorted(json.loads(p.read_text())["workerId"] for p in reports)
    assert seen == [1, 2]
    for path in reports:
        report = json.loads(path.read_text())
        assert report["child"] == "True False", report
        assert report["isWorker"] is True


def test_unreadReportDoesNotStallSupervision(cluster, tmp_path: Path) -> None:
    """
    With the event report on a 4 KiB pipe that nobody reads, every killed
    worker is still replaced, and the master says once that it drops events.
    """
    import fcntl

    read, write = os.pipe()
    fcntl.fcntl(write, 1031, 4096)  # F_SETPIPE_SZ: the smallest pipe
    try:
        c, port = webCluster(
            cluster,
            tmp_path,
            args=["--restart-delay", "0", "--stable-after", "0"],
            env={"TWISTED_CLUSTER_REPORT_FD": str(write)},
            passFds=(write,),
        )
        os.close(write)
        for n in range(20):
            victim = c.workerPids()[0]
            os.kill(victim, signal.SIGKILL)
            waitFor(
                lambda n=n: c.log().count("is listening on") == 3 + n,
                what=f"replacement {n + 1} of 20 to listen",
            )
    finally:
        os.close(read)


def test_reportDropsPastItsBound() -> None:
    """
    The report writer never blocks: past its bound it drops events, says so
    once, and writes again once the reader catches up.
    """
    from twisted.internet.testing import MemoryReactor

    from twisted_cluster.master.report import _Writer

    read, write = os.pipe()
    reactor = MemoryReactor()
    writer = _Writer(reactor, write, limit=1000)
    try:
        line = b"x" * 99 + b"\n"
        for _ in range(2000):  # 200 kB: far more than the pipe and the bound
            writer.write(line)
        assert writer.dropped > 0
        assert writer in reactor.getWriters()
        taken = b""
        while len(taken) < 60_000:
            taken += os.read(read, 65536)
        writer.doWrite()
        writer.doWrite()
        os.set_blocking(read, False)
        try:
            while os.read(read, 65536):
                pass
        except BlockingIOError:
            pass
        assert writer not in reactor.getWriters()
        dropped = writer.dropped
        writer.write(b"after\n")
        assert os.read(read, 100) == b"after\n"
        assert writer.dropped == dropped
    finally:
        os.close(read)
        os.close(write)


def residentMB(pid: int) -> float:
    return residentKB(pid) / 1024


ATTACKS = {
    "endless-box": "sent a box over",
    "huge-message": "sent a box over",
    "descriptors": "sent a file descriptor the master did not ask for",
    "garbage": "sent bytes that are not AMP",
    "unknown": "sent an unknown command b'TakeOver'",
    "bad-json": "sent a b'Message' the master cannot take: JSONDecodeError",
    "bad-slot": "asked for the sockets of slot 57, not its own",
    "cut-box": "Worker 1 (pid",
    "unread": "has not answered heartbeats",
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_hostileWorker(cluster, tmp_path: Path, attack: str) -> None:
    """
    A worker that attacks its channel is cut off and replaced, with one
    line saying why; the master stays under 100 MB and keeps no descriptor
    of it; the other worker serves throughout.
    """
    import threading

    from .support import get

    port = freePort()
    c = cluster(
        APPS / "hostile.tac",
        workers=2,
        env={"PORT": str(port), "ATTACK": attack},
        args=["--restart-delay", "0", "--timeout", "3"],
    )
    waitFor(lambda: c.log().count("is listening on") >= 2, what="two workers")
    before = openDescriptors(c.pid)
    start = residentMB(c.pid)
    peak = [0.0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], residentMB(c.pid))
            done.wait(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        waitFor(
            lambda: "Worker 1 (pid" in c.log() and "is dead" in c.log(),
            timeout=30,
            what="worker 1 to be cut off",
        )
        waitFor(lambda: c.log().count("is listening on") >= 3, what="its replacement")
    finally:
        done.set()
        watcher.join(5)
    log = c.log()
    assert ATTACKS[attack] in log, log[-3000:]
    print(f"{attack}: master peaked at {peak[0]:.1f} MB")
    assert peak[0] < 100, f"master peaked at {peak[0]:.0f} MB"
    if attack == "unread":
        # It cannot make the master queue answers: reading stops with writing.
        assert peak[0] - start < 4, f"master grew from {start:.1f} MB"
    assert "Traceback" not in log, log[-3000:]
    assert "Unhandled" not in log
    # Every worker still answers; the master holds what it held before.
    answers = {get(port).split()[0] for _ in range(40)}
    assert "1" not in answers and "2" in answers
    assert openDescriptors(c.pid) <= before


def runtimeCluster(cluster, scheduling: str = "reuseport"):
    port, extra = freePort(), freePort()
    c = cluster(
        APPS / "runtime.tac",
        workers=2,
        env={"PORT": str(port), "EXTRA_PORT": str(extra)},
        args=["--scheduling", scheduling],
    )
    untilEachWorker(port, "/")
    return c, port, extra


def greeting(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.settimeout(10)
        data = b""
        while chunk := s.recv(100):
            data += chunk
    return data.decode().strip()


def untilEachWorker(port: int, path: str) -> dict[str, str]:
    """
    Ask C{path} until both workers have answered; each one's first answer,
    by worker id (the other answers' effects stay in place).
    """
    from .support import get

    seen: dict[str, str] = {}

    def both() -> bool:
        try:
            answer = get(port, path)
        except OSError:
            return False  # Not listening yet.
        seen.setdefault(answer.split()[0], answer)
        return len(seen) == 2

    waitFor(both, what=f"both workers to answer {path}")
    return seen


def test_runTimePortZeroIsTheWorkersOwn(cluster) -> None:
    """
    A port-0 listen after the app started (FTP passive mode) is the
    worker's own: each worker's port differs and is served by that worker
    alone; stopped, it refuses connections; 200 listen/stop cycles leave the
    master with no more descriptors than before.
    """
    from .support import get

    c, port, _ = runtimeCluster(cluster)
    answers = untilEachWorker(port, "/listen")
    opened = {who: int(answer.split()[2]) for who, answer in answers.items()}
    assert len(set(opened.values())) == 2
    for who, number in opened.items():
        for _ in range(5):
            assert greeting(number).split()[0] == who
    before = openDescriptors(c.pid)
    for _ in range(200):
        answer = get(port, "/listen")
        number = int(answer.split()[2])
        # The same connection's worker is not promised: stop it where opened.
        opener = answer.split()[0]
        waitFor(
            lambda n=number, o=opener: (
                get(port, f"/stop?port={n}").split()[::2][:2] == [o, "stopped"]
            ),
            what="the opener to stop its port",
        )
        with pytest.raises(ConnectionRefusedError):
            greeting(number)
    assert openDescriptors(c.pid) <= before


@pytest.mark.parametrize("scheduling", ["reuseport", "shared", "roundrobin"])
def test_stoppedSharedPort(cluster, scheduling: str) -> None:
    """
    A shared port one worker's app stops is served by the other alone (no
    connection left unaccepted); once both stop it, it refuses connections,
    as a stopped port of plain twistd does.
    """
    c, port, extra = runtimeCluster(cluster, scheduling)
    first = get_(port, "/stop-extra").split()[0]
    if scheduling == "reuseport":
        # The kernel may pick the stopped worker's own socket for a
        # connection until the master has closed it (it is told in the
        # next moment): a short window, documented.
        waitFor(lambda: "No longer sharing" in c.log(), what="the master to close it")
    for _ in range(30):
        assert greeting(extra).split()[0] != first
    untilEachWorker(port, "/stop-extra")

    def refused() -> bool:
        # Once the master has heard from both (in a moment), and from then on.
        try:
            greeting(extra)
        except ConnectionRefusedError:
            return True
        except OSError:
            pass
        return False

    waitFor(refused, what="the port to refuse connections")
    for _ in range(10):
        with pytest.raises(ConnectionRefusedError):
            greeting(extra)


def get_(port: int, path: str) -> str:
    from .support import get

    return get(port, path)


def test_unixWantPIDSurvivesMasterKill(cluster, tmp_path: Path) -> None:
    """
    C{UNIXServer(wantPID=True)} takes a lock file as plain twistd does; after
    the master is SIGKILLed, a new cluster breaks the stale lock, removes
    the stale socket file, and serves.
    """
    from .support import ask, unix, workersAnswering

    path = str(tmp_path / "app.sock")
    env = {"LISTEN_STYLE": "UNIXServer-wantPID", "LISTEN_PATH": path}
    first = cluster(APPS / "listen.tac", workers=2, env=env)
    workersAnswering(unix(path), 2)
    assert os.path.islink(path + ".lock")
    assert os.readlink(path + ".lock") == str(first.pid)
    first.kill()
    assert os.path.exists(path)  # stale, as a SIGKILL leaves it
    second = cluster(APPS / "listen.tac", workers=2, env=env)
    workersAnswering(unix(path), 2)
    assert os.readlink(path + ".lock") == str(second.pid)
    assert ask(unix(path))
    second.signal(signal.SIGTERM)
    assert second.wait(20) == 0
    assert not os.path.exists(path + ".lock") and not os.path.exists(path)


def test_masterAppendsToTheSharedLog(cluster, tmp_path: Path) -> None:
    """
    The master's own lines go after the workers' in the log file they
    share, never over them.
    """
    from .support import get

    c, port = webCluster(cluster, tmp_path)
    for n in range(20):
        get(port, f"/?n={n}")
    waitFor(lambda: c.log().count('"GET /?n=') == 20, what="the access lines")
    c.signal(signal.SIGTTIN)
    waitFor(lambda: "Scaling up to 3 workers" in c.log(), what="the master's lines")
    waitFor(lambda: c.log().count("is listening on") >= 3, what="a third worker")
    log = c.log()
    for n in range(20):
        assert f'"GET /?n={n} HTTP/1.0" 200' in log, f"access line {n} overwritten"
