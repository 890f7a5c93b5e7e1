"""
The parts of an upgrade in place, on fakes: channels coming to rest and
talking again, the cluster's upgrading state, the command line the master
executes again, and the handover document's checks.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from automat import NoTransition
from twisted.python.failure import Failure

from twisted_cluster.commands import Message, Online, Ready
from twisted_cluster.master.channel import Quiet
from twisted_cluster.master.lifecycle import lifecycleMachine
from twisted_cluster.master.master import Master
from twisted_cluster.master.supervisor import ClusterService, Limits, State
from twisted_cluster.master.upgrade import (
    HANDOVER_ENV,
    VERSION,
    Image,
    InheritedPorts,
    readHandover,
)
from twisted_cluster.worker.channel import ThisWorker, WorkerChannel

from .fakes import FakeProcessReactor


def _withAWorker() -> tuple[Master, Any, Any, WorkerChannel]:
    """
    A master on fakes with one worker whose end of the channel is the real
    L{WorkerChannel}: the master, the worker, its fake process, its end.
    """
    reactor = FakeProcessReactor()
    ends: list[WorkerChannel] = []

    def end() -> WorkerChannel:
        ends.append(WorkerChannel(ThisWorker(reactor, 1)))
        return ends[-1]

    reactor.peer = end
    master = Master(reactor, environ={})  # type: ignore[arg-type]
    worker = master.fork()
    (process,) = reactor.processes
    assert process.pump is not None
    return master, worker, process, ends[0]


def _answered(d: Any) -> list[object]:
    results: list[object] = []
    d.addBoth(results.append)
    return results


# Channels at rest


def test_workerHoldsItsQuestionsUntilResume() -> None:
    """
    After L{Quiesce}, the worker asks the master nothing (its questions
    wait, in order); the master asks nothing either; after L{Resume}, the
    held questions go and are answered.
    """
    master, worker, process, end = _withAWorker()
    got: list[object] = []
    master.on("message", lambda worker, message: got.append(message))
    rested = _answered(worker.quiesce())
    process.pump.flush()
    assert rested == [None]

    first = _answered(end.callRemote(Message, batch=b'["one"]'))
    second = _answered(end.callRemote(Message, batch=b'["two"]'))
    process.pump.flush()
    assert got == [] and first == [] and second == []
    heard = _answered(worker.heartbeat())
    assert isinstance(heard[0], Failure) and heard[0].check(Quiet)

    resumed = _answered(worker.resume())
    process.pump.flush()
    assert resumed == [None]
    assert got == ["one", "two"]
    assert first == [{}] and second == [{}]


def test_quiesceWaitsForTheQuestionsOut() -> None:
    """
    A worker answers L{Quiesce} only once the questions it had out are
    answered: the master has read everything the worker sent by then.
    """
    master, worker, process, end = _withAWorker()
    order: list[str] = []
    master.on("message", lambda worker, message: order.append(f"message {message}"))
    # Asked, but not yet on the wire when the master asks for rest.
    end.callRemote(Message, batch=b'["late"]')
    worker.quiesce().addCallback(lambda _: order.append("rested"))
    process.pump.flush()
    assert order == ["message late", "rested"]


def test_masterAsksNothingOfAQuietChannel() -> None:
    """
    Every command the master would send a quiesced worker fails at once with
    L{Quiet}; none reaches the worker.
    """
    reactor = FakeProcessReactor()
    master = Master(reactor, environ={})  # type: ignore[arg-type]
    worker = master.fork()
    (process,) = reactor.processes
    assert process.pump is not None and process.peer is not None
    worker.quiesce()
    process.pump.flush()
    assert process.peer.received == ["Quiesce"]
    for asked in (worker.heartbeat(), worker.metrics(), worker.adopt(3)):
        (result,) = _answered(asked)
        assert isinstance(result, Failure) and result.check(Quiet)
    process.pump.flush()
    assert process.peer.received == ["Quiesce"]
    worker.resume()
    process.pump.flush()
    assert process.peer.received == ["Quiesce", "Resume"]


# The cluster's upgrading state


def _running(count: int = 2) -> tuple[FakeProcessReactor, ClusterService]:
    reactor = FakeProcessReactor()
    master = Master(reactor, environ={})  # type: ignore[arg-type]
    service = ClusterService(
        master, count, reactor, onFatal=lambda why: None, limits=Limits(spares=0)
    )
    service.startService()
    for process in reactor.live:
        process.call(Online)
        process.call(Ready)
    assert service.state is State.running
    return reactor, service


def test_upgradingStartsAndPingsNothing() -> None:
    """
    While upgrading, the cluster replaces no dead worker and round robin
    gives no worker connections; when the upgrade ends without an exec, the
    workers resume and the dead one is replaced.
    """
    reactor, service = _running()
    assert service.settled()
    service.beginUpgrade()
    assert service.state is State.upgrading
    workers = list(service.master.workers.values())
    assert not any(service.master.takesConnections(w) for w in workers)
    reactor.live[0].exit(signal="SIGKILL")
    reactor.advance(5)
    assert len(reactor.live) == 1
    service.endUpgrade()
    assert service.state is State.running
    reactor.advance(5)
    assert len(reactor.live) == 2
    survivor = reactor.processes[1]
    assert survivor.pump is not None and survivor.peer is not None
    survivor.pump.flush()
    assert "Resume" in survivor.peer.received


def test_upgradeRefusedUnlessSettled() -> None:
    """
    An upgrade begins only while the cluster runs plainly.
    """
    reactor = FakeProcessReactor()
    master = Master(reactor, environ={})  # type: ignore[arg-type]
    service = ClusterService(master, 2, reactor, onFatal=lambda why: None)
    service.startService()
    with pytest.raises(ValueError, match="starting"):
        service.beginUpgrade()
    reactor, service = _running()
    service.scaleUp()
    with pytest.raises(ValueError, match="settled"):
        service.beginUpgrade()


def test_aStopEndsAnUpgrade() -> None:
    """
    A stop while the channels come to rest ends the upgrade: the workers
    resume, so that they hear the stop.
    """
    reactor, service = _running()
    service.beginUpgrade()
    service.stopService()
    assert service.state is State.stopping
    for process in reactor.processes:
        assert process.peer is not None and process.pump is not None
        process.pump.flush()
        assert process.peer.received[-2:] == ["Resume", "Disconnect"]


def test_inheritedWorkersArriveInTheirState() -> None:
    """
    A worker the previous image started arrives online or listening
    without its events again; a worker that has had events cannot be
    inherited.
    """
    events: list[str] = []

    class Core:
        state = "none"

        def _emitOnline(self) -> None:
            events.append("online")

        def _emitListening(self, address: object) -> None:
            events.append("listening")

        def _emitDisconnect(self) -> None:
            events.append("disconnect")

        def _emitDeath(self, code: object, signal: object) -> None:
            events.append("death")

    core = Core()
    machine = lifecycleMachine(core)
    machine.inheritedListening()
    assert core.state == "listening" and events == []
    machine.exited(0, None)
    assert events == ["disconnect", "death"]
    other = Core()
    started = lifecycleMachine(other)
    started.online()
    with pytest.raises(NoTransition):
        started.inheritedOnline()


# The command line executed again


def _runner(argv: list[str]) -> Any:
    from twisted.scripts.twistd import ServerOptions

    options = ServerOptions()
    options.parseOptions(argv)
    return options


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["-n", "--pidfile=", "cluster", "--app", "a.tac"],
            ["-n", "--pidfile=", "cluster", "--app", "a.tac"],
        ),
        (
            ["-n", "--pidfile", "run/m.pid", "cluster", "--app", "a.tac"],
            ["-n", "--pidfile", "run/m.pid", "--pidfile=", "cluster", "--app", "a.tac"],
        ),
        (
            ["--pidfile=m.pid", "-l", "x.log", "cluster", "--app", "a.tac"],
            [
                "--nodaemon",
                "--pidfile=m.pid",
                "-l",
                "x.log",
                "--pidfile=",
                "cluster",
                "--app",
                "a.tac",
            ],
        ),
        (
            ["cluster", "--app", "a.tac"],
            ["--nodaemon", "--logfile=<cwd>/twistd.log"]
            + ["--pidfile=", "cluster", "--app", "a.tac"],
        ),
    ],
)
def test_theCommandLineExecutedAgain(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    args: list[str],
    expected: list[str],
) -> None:
    """
    The new image runs the same command line, told not to daemonize (the
    process is a daemon already, so twistd's default log file is named),
    and with an empty pid file put last among twistd's options (the pid
    file names this process already: twistd would take it for another's).
    """
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.tac").write_text("")
    monkeypatch.setattr(sys, "argv", ["/bin/twistd", *args])
    monkeypatch.setattr(sys, "orig_argv", ["python", "-X", "dev", "/bin/twistd", *args])
    image = Image.current(_runner(args), None)
    wanted = [e.replace("<cwd>", str(tmp_path)) for e in expected]
    assert list(image.argv) == ["python", "-X", "dev", "/bin/twistd", *wanted]
    assert image.cwd == str(tmp_path)
    assert list(image.twistdArgs) == args


def test_thePidFileOfTheFirstImage(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """
    A later image, run with an empty pid file, still knows the first one's
    (to remove it, and to find the control socket beside it).
    """
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.tac").write_text("")
    args = ["-n", "--pidfile=", "cluster", "--app", "a.tac"]
    monkeypatch.setattr(sys, "argv", ["/bin/twistd", *args])
    monkeypatch.setattr(sys, "orig_argv", ["python", "/bin/twistd", *args])
    image = Image.current(_runner(args), {"pidfile": "/run/m.pid"})
    assert image.pidfile == "/run/m.pid"
    assert image.argv[-4:] == ("--pidfile=", "cluster", "--app", "a.tac")


def test_noSocketsOfSystemdCrossTheExec(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    The environment executed again lacks systemd's socket variables (the
    sockets are in the handover) but keeps its notification socket.
    """
    for name, value in {
        "LISTEN_FDS": "1",
        "LISTEN_PID": "1",
        "LISTEN_FDNAMES": "x",
        "NOTIFY_SOCKET": "/run/n",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", ["/bin/twistd", "-n", "cluster"])
    image = Image.current(None, None)
    assert "LISTEN_FDS" not in image.environ and "LISTEN_PID" not in image.environ
    assert image.environ["NOTIFY_SOCKET"] == "/run/n"


# The handover document


def _document(tmp_path: Path, body: object) -> dict[str, str]:
    path = tmp_path / "handover"
    path.write_text(body if isinstance(body, str) else json.dumps(body))
    return {HANDOVER_ENV: str(os.open(path, os.O_RDONLY)), "OTHER": "1"}


def test_handoverRead(tmp_path: Path) -> None:
    """
    The document comes from the descriptor named in the environment, which
    loses the name (no worker inherits it).
    """
    environ = _document(tmp_path, {"version": VERSION, "pid": os.getpid(), "x": 1})
    document = readHandover(environ)
    assert document is not None and document["x"] == 1
    assert environ == {"OTHER": "1"}
    assert readHandover(environ) is None


@pytest.mark.parametrize(
    "body, why",
    [
        ("{not json", "Expecting property name"),
        ({"version": 99, "pid": os.getpid()}, "version 99"),
        ({"version": VERSION, "pid": 1}, "written by pid 1"),
        ({"pid": os.getpid()}, "'version'"),
    ],
)
def test_handoverUnreadable(tmp_path: Path, body: object, why: str) -> None:
    """
    A document this code cannot take over from stops the new image with one
    line saying why.
    """
    with pytest.raises(SystemExit) as raised:
        readHandover(_document(tmp_path, body))
    message = str(raised.value)
    assert message.startswith("twisted-cluster: cannot take over from the previous")
    assert why in message and "\n" not in message


def test_handoverDescriptorThatIsNotOpen() -> None:
    with pytest.raises(SystemExit, match="cannot take over"):
        readHandover({HANDOVER_ENV: "987654"})


def _isOpen(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_inheritedPortsForTheirAddressOnly() -> None:
    """
    A service takes the socket its previous image listened on only if it
    listens on the same address (a configuration file may have changed);
    a socket not taken is closed.
    """
    health, metrics, control = (os.pipe() for _ in range(3))
    ports = InheritedPorts(
        {
            "ports": {
                "health": {"address": "tcp:8081", "descriptor": health[0]},
                "metrics": {"address": "tcp:9090", "descriptor": metrics[0]},
                "control": {"address": "/run/a.ctl", "descriptor": control[0]},
            }
        }
    )
    assert ports.take("health", "tcp:8081") == health[0]
    assert ports.take("metrics", "tcp:9091") is None
    assert not _isOpen(metrics[0])
    assert ports.take("nothing", "tcp:1") is None
    ports.closeRest()
    assert not _isOpen(control[0])
    assert _isOpen(health[0])
    for fd in (health[0], health[1], metrics[1], control[1]):
        os.close(fd)


def test_anExecThatFailsSupervisesOn(tmp_path: Path) -> None:
    """
    If the exec itself fails, the upgrade is refused with why, the
    workers' channels are read again and the workers ask again, the
    keeper forked for the exec is told to go, and the cluster runs on: a
    worker that dies is replaced.
    """
    import errno

    from twisted.internet.error import ProcessDone

    from twisted_cluster.master.upgrade import Upgrader, UpgradeRefused

    reactor, service = _running()
    reading: list[str] = []
    held: list[int] = []
    for process in reactor.live:
        assert process.pump is not None
        transport: Any = process.pump.serverIO
        r, w = os.pipe()
        held += [r, w]
        # A socket's descriptor, and what the handover does to its reading.
        transport.fileno = lambda r=r: r
        transport.pauseProducing = lambda: reading.append("paused")
        transport.resumeProducing = lambda: reading.append("resumed")
    executed: list[tuple[str, list[str]]] = []

    def execve(path: str, argv: list[str], env: dict[str, str]) -> None:
        executed.append((path, list(argv)))
        raise OSError(errno.ENOENT, "No such file or directory")

    image = Image("/no/python", ("/no/python", "twistd"), {}, str(tmp_path), (), None)
    upgrader = Upgrader(service, reactor, image, execve=execve)
    workers = list(reactor.live)
    outcome = _answered(upgrader.upgrade())
    check = reactor.processes[-1]
    assert check.argv[1:3] == ["-m", "twisted_cluster.master.precheck"]
    check.proto.processEnded(Failure(ProcessDone(0)))
    for process in workers:
        assert process.pump is not None
        process.pump.flush()
    (result,) = outcome
    assert isinstance(result, Failure) and result.check(UpgradeRefused)
    assert "cannot execute /no/python: [Errno 2]" in str(result.value)
    try:
        assert executed == [("/no/python", ["/no/python", "twistd"])]
        assert service.state is State.running
        for process in workers:
            assert process.pump is not None and process.peer is not None
            process.pump.flush()
            assert process.peer.received[-2:] == ["Quiesce", "Resume"]
        assert reading == ["paused", "paused", "resumed", "resumed"]
        workers[0].exit(signal="SIGKILL")
        reactor.advance(5)
        assert len([p for p in reactor.live if p is not check]) == 2
    finally:
        for fd in held:
            os.close(fd)


def test_aLineCutByTheExecIsLoggedWhole() -> None:
    """
    What a worker wrote without ending the line yet, when the master
    executed its new code, is joined to what follows in the new image.
    """
    from twisted_cluster.master.logs import WorkerLogRelay

    seen: list[dict[str, Any]] = []
    old = WorkerLogRelay(1, observer=seen.append)
    old.errorsReceived(b"a whole line\nhalf of a")
    assert [e["line"] for e in seen] == ["a whole line"]
    # Through JSON, as in the handover document.
    pending = json.loads(json.dumps(old.pending()))
    new = WorkerLogRelay(1, observer=seen.append)
    new.restore(pending)
    new.errorsReceived(b" line\n")
    assert [e["line"] for e in seen] == ["a whole line", "half of a line"]
