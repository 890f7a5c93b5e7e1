"""
Upgrading the master in place: the same process (the same pid, so systemd,
the pid file and the workers' lifelines stay right) executes its own
command line again, and the new image takes over the old one's sockets,
workers and records.

    signal or CLI -> check the new code (a child process) -> quiesce every
    channel -> describe everything in a handover document -> exec
    -> the new image reads the document, adopts the descriptors, resumes

Only descriptors and JSON cross the exec.  If the new code cannot start
(the check fails), or anything goes wrong before the exec, the old image
logs why in one line and supervises on.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail, gatherResults
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface

from .inherited import InheritedProcess
from .keeper import keepWorkers, tookOver

if TYPE_CHECKING:
    from .supervisor import ClusterService

HANDOVER_ENV = "TWISTED_CLUSTER_HANDOVER"
"""In the new image: the descriptor of the handover document."""

VERSION = 1
"""The handover document's format, written by this code."""

READABLE = (1,)
"""The formats this code can take over from."""

CHECK_TIMEOUT = 60.0
"""Seconds the new code gets to prove it starts."""

QUIESCE_TIMEOUT = 10.0
"""Seconds every worker's channel gets to come to rest."""

_ACTIVATION = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


class UpgradeRefused(Exception):
    """
    The master did not upgrade, and supervises on; the message says why.
    """


@dataclass(frozen=True)
class Image:
    """
    How this master process was started, to execute it again in place.

    @ivar argv: what to execute: this interpreter's own command line, with
        twistd told not to daemonize (the process is one already) and not to
        write the pid file (it names this process already).
    @ivar environ: the environment the process started with, less the
        sockets systemd passed (the handover carries those).
    @ivar cwd: the directory it started in (twistd changes to C{--rundir}
        after it reads its command line).
    @ivar twistdArgs: twistd's own arguments, for the check.
    @ivar pidfile: the pid file twistd wrote, which this process removes
        when it exits.
    """

    executable: str
    argv: tuple[str, ...]
    environ: Mapping[str, str]
    cwd: str
    twistdArgs: tuple[str, ...]
    pidfile: str | None

    @classmethod
    def current(cls, runner: Any, handed: Mapping[str, Any] | None) -> Image:
        """
        This process, as twistd (its options, C{runner}) started it; with
        C{handed}, the handover of the image before.
        """
        original = list(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
        script = len(original) - len(sys.argv) + 1
        extra = []
        # Where twistd's own options end (the plugin's name): options put
        # there win over the same ones given before.
        last = script + _subCommandAt(runner, sys.argv[1:])
        if not _option(runner, "nodaemon", True):
            extra.append("--nodaemon")
            if not _option(runner, "syslog", False) and not _option(
                runner, "logfile", None
            ):
                # A daemon logs to twistd.log by default; run with -n, it
                # would log to its standard output.
                extra.append("--logfile=" + os.path.abspath("twistd.log"))
        pidfile = _option(runner, "pidfile", None) or None
        if handed is not None:
            pidfile = handed["pidfile"]
        if pidfile:
            pidfile = os.path.abspath(pidfile)
        argv = [*original[:script], *extra, *original[script:last]]
        if pidfile:
            argv.append("--pidfile=")
        argv.extend(original[last:])
        environ = {k: v for k, v in os.environ.items() if k not in _ACTIVATION}
        return cls(
            executable=sys.executable,
            argv=tuple(argv),
            environ=environ,
            cwd=os.getcwd(),
            twistdArgs=tuple(sys.argv[1:]),
            pidfile=pidfile,
        )


def _subCommandAt(runner: Any, args: list[str]) -> int:
    """
    The index in C{args}, twistd's arguments, of the plugin's name: where
    twistd's options end, as C{getopt} reads them with C{runner}'s.
    """
    short = getattr(runner, "shortOpt", "")
    long = getattr(runner, "longOpt", [])
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--" or not arg.startswith("-") or arg == "-":
            return index
        if arg.startswith("--"):
            if "=" not in arg and arg[2:] + "=" in long:
                index += 1  # Its value follows.
        else:
            for at, flag in enumerate(arg[1:], 1):
                if flag + ":" in short:
                    if at == len(arg) - 1:
                        index += 1  # Its value follows.
                    break
        index += 1
    return index


def _option(runner: Any, name: str, default: Any) -> Any:
    try:
        return runner[name]
    except (KeyError, TypeError):
        return default


def readHandover(environ: MutableMapping[str, str]) -> dict[str, Any] | None:
    """
    The document the master's previous image handed over, if this image is
    an upgrade; taken out of C{environ}, so that no worker inherits it.

    @raise SystemExit: if there is one but it cannot be read.
    """
    descriptor = environ.pop(HANDOVER_ENV, None)
    if descriptor is None:
        return None
    try:
        fd = int(descriptor)
        with os.fdopen(fd, "rb") as stream:
            stream.seek(0)
            document = json.loads(stream.read())
        version = document["version"]
        if version not in READABLE:
            raise ValueError(f"its format is version {version}, not one of {READABLE}")
        if document["pid"] != os.getpid():
            raise ValueError(f"it was written by pid {document['pid']}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(
            f"twisted-cluster: cannot take over from the previous master image: {e}"
        ) from None
    return document


def descriptorsIn(document: Mapping[str, Any]) -> Iterator[int]:
    """
    Every descriptor a handover document names.
    """
    master = document["service"]["master"]
    for entry in master["listeners"]["sockets"]:
        yield int(entry["descriptor"])
    for worker in master["workers"]:
        yield int(worker["channel"])
        yield int(worker["lifeline"])
        yield from (int(fd) for fd in worker["output"].values())
    for port in document.get("ports", {}).values():
        yield int(port["descriptor"])


class IHandsOverAPort(Interface):
    """
    A service of the master's own (the control socket, a page) whose
    listening socket the next image takes over, so that nothing connecting
    to it is refused during an upgrade.
    """

    def handover() -> Deferred[int | None]:
        """
        Accept nothing more until L{resume}; fires with the listening
        socket's descriptor (if listening) once what is open may be cut.
        """

    def resume() -> None:
        """
        Accept again: the upgrade did not happen.
        """


class InheritedPorts:
    """
    The listening sockets of the master's own services that the previous
    image handed over, by name, each for the address it had.
    """

    def __init__(self, handed: Mapping[str, Any] | None) -> None:
        self._ports: dict[str, Any] = dict((handed or {}).get("ports", {}))

    def take(self, name: str, address: str) -> int | None:
        """
        The descriptor of the socket the service C{name} listened on, if
        it listened on C{address} (the option may have changed since).
        """
        port = self._ports.pop(name, None)
        if port is None:
            return None
        if port["address"] != address:
            os.close(int(port["descriptor"]))
            return None
        return int(port["descriptor"])

    def closeRest(self) -> None:
        """
        Close those no service took.
        """
        for port in self._ports.values():
            os.close(int(port["descriptor"]))
        self._ports.clear()


def releaseKeeper(document: Mapping[str, Any]) -> None:
    """
    Tell the workers' keeper of a handover that this process supervises
    them (the new image, or the old one if the exec failed), and reap it
    when it exits.
    """
    keeper = document.get("keeper")
    if keeper is None:
        return
    tookOver(int(keeper["confirm"]))
    InheritedProcess(int(keeper["pid"]), ProcessProtocol()).watch()


class Upgrader:
    """
    Upgrades the master in place, one upgrade at a time.
    """

    _log = Logger(namespace="twisted_cluster.master.upgrade")

    def __init__(
        self,
        service: ClusterService,
        reactor: Any,
        image: Image,
        execve: Callable[..., object] = os.execve,
        logPath: str | None = None,
    ) -> None:
        """
        @param logPath: the master's log file, if it logs to one: where the
            workers' keeper says so should the new image die.
        """
        self._service = service
        self._reactor = reactor
        self._image = image
        self._execve = execve
        self._logPath = logPath
        self._busy = False
        # The master's own listening services, by name: (address, service).
        self.ports: dict[str, tuple[str, IHandsOverAPort]] = {}
        self._handed: dict[str, dict[str, Any]] = {}

    def upgrade(self) -> Deferred[None]:
        """
        Check the new code, then replace this image with it: once the exec
        has happened there is no one to fire the result for (the process is
        the new image); it fails with L{UpgradeRefused}, saying why, if this
        image supervises on.
        """
        if self._busy or not self._service.settled():
            why = "an upgrade is already under way" if self._busy else self._unsettled()
            # One line, for SIGUSR2 too, which has no one to answer.
            self._log.error("Not upgrading: {why}", why=why)
            return fail(UpgradeRefused(why))
        self._busy = True
        began = self._reactor.seconds()
        self._log.info("Upgrading the master in place: checking the new code")
        checked = checkNewCode(self._reactor, self._image)
        checked.addCallback(lambda _: self._handOverPorts())
        checked.addCallback(lambda _: self._quiesce())
        checked.addCallback(lambda _: self._exec(began))

        def refused(failure: Failure) -> Failure:
            self._busy = False
            self._service.endUpgrade()
            self._resumePorts()
            why = (
                str(failure.value)
                if failure.check(UpgradeRefused)
                else f"{type(failure.value).__name__}: {failure.value}"
            )
            self._log.error("Not upgrading: {why}", why=why)
            return Failure(UpgradeRefused(why))

        checked.addErrback(refused)
        return checked

    def _unsettled(self) -> str:
        state = self._service.state.value
        if state != "running":
            return f"the cluster is {state}"
        return "workers are starting or retiring; upgrade once the cluster has settled"

    def _handOverPorts(self) -> Deferred[None]:
        """
        The master's own services stop accepting (what connects waits in
        the backlog for the new image) and let what is open finish.
        """
        names = list(self.ports)

        def handed(descriptors: list[int | None]) -> None:
            self._handed = {
                name: {"address": self.ports[name][0], "descriptor": fd}
                for name, fd in zip(names, descriptors, strict=True)
                if fd is not None
            }

        asked = [self.ports[name][1].handover() for name in names]
        return gatherResults(asked).addCallback(handed)

    def _resumePorts(self) -> None:
        self._handed = {}
        for _, port in self.ports.values():
            port.resume()

    def _quiesce(self) -> Deferred[None]:
        service = self._service
        try:
            service.beginUpgrade()
        except ValueError as e:
            raise UpgradeRefused(str(e)) from None
        workers = list(service.master.workers.values())
        self._log.info(
            "Bringing {n} worker channel{s} to rest",
            n=len(workers),
            s="" if len(workers) == 1 else "s",
        )
        done: Deferred[None] = Deferred()

        def refuse(why: str) -> None:
            if not done.called:
                done.errback(UpgradeRefused(why))

        def died(worker: object, *_: object) -> None:
            refuse(f"worker {getattr(worker, 'id', '?')} died during the upgrade")

        service.master.on("death", died)
        timer = self._reactor.callLater(
            QUIESCE_TIMEOUT,
            refuse,
            f"the workers' channels did not come to rest in {QUIESCE_TIMEOUT:g}s",
        )
        quiet = gatherResults([w.quiesce() for w in workers], consumeErrors=True)

        def rested(_: object) -> None:
            if not done.called:
                done.callback(None)

        quiet.addCallbacks(
            rested,
            lambda f: refuse(f"a worker's channel did not come to rest: {f.value}"),
        )

        def cleanUp(result: object) -> object:
            service.master.removeListener("death", died)
            if timer.active():
                timer.cancel()
            return result

        return done.addBoth(cleanUp)

    def _exec(self, began: float) -> None:
        service = self._service
        if service.state.value != "upgrading":
            raise UpgradeRefused(f"the cluster is {service.state.value}")
        image = self._image
        document: dict[str, Any] = {
            "version": VERSION,
            "pid": os.getpid(),
            "began": began,
            "pidfile": image.pidfile,
            "service": service.handover(),
            "ports": self._handed,
        }
        descriptors = list(descriptorsIn(document))
        workers = document["service"]["master"]["workers"]
        keeper, confirm = keepWorkers(
            [fd for w in workers for fd in (int(w["channel"]), int(w["lifeline"]))],
            [int(fd) for w in workers for fd in w["output"].values()],
            self._logPath,
        )
        document["keeper"] = {"pid": keeper, "confirm": confirm}
        descriptors.append(confirm)
        here = os.getcwd()
        fd = os.memfd_create("twisted-cluster-handover", 0)
        try:
            os.write(fd, json.dumps(document).encode())
            for descriptor in descriptors:
                os.set_inheritable(descriptor, True)
            self._log.info("Executing the new code: {argv}", argv=" ".join(image.argv))
            for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
                if stream is not None:
                    stream.flush()
            os.chdir(image.cwd)
            self._execve(
                image.executable, image.argv, {**image.environ, HANDOVER_ENV: str(fd)}
            )
        except Exception as e:
            os.chdir(here)
            for descriptor in descriptors:
                os.set_inheritable(descriptor, False)
            releaseKeeper(document)
            raise UpgradeRefused(f"cannot execute {image.executable}: {e}") from None
        finally:
            os.close(fd)
        # Only an execve that returns (a test's) gets here.
        releaseKeeper(document)
        self._busy = False


def checkNewCode(reactor: Any, image: Image) -> Deferred[None]:
    """
    Run the code installed now in a child process, as the new image would
    run: it imports the master and parses this process's command line.
    Fires once it exits 0; fails with L{UpgradeRefused} and its last line
    otherwise.
    """
    protocol = _Check()
    argv = [
        image.executable,
        "-m",
        "twisted_cluster.master.precheck",
        str(VERSION),
        *image.twistdArgs,
    ]
    env = {k: v for k, v in image.environ.items() if k != "NOTIFY_SOCKET"}
    reactor.spawnProcess(
        protocol,
        image.executable,
        argv,
        env=env,
        path=image.cwd,
        childFDs={1: "r", 2: "r"},
    )
    timer = reactor.callLater(CHECK_TIMEOUT, protocol.timedOut)

    def stop(result: object) -> object:
        if timer.active():
            timer.cancel()
        return result

    return protocol.done.addBoth(stop)


class _Check(ProcessProtocol):
    def __init__(self) -> None:
        self.done: Deferred[None] = Deferred()
        self._output = b""
        self._late = False

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self._output = (self._output + data)[-8192:]

    def timedOut(self) -> None:
        self._late = True
        if self.transport is not None:
            self.transport.signalProcess("KILL")

    def processEnded(self, reason: Failure) -> None:
        if reason.check(ProcessDone):
            self.done.callback(None)
            return
        if self._late:
            why = f"it did not finish in {CHECK_TIMEOUT:g}s"
        else:
            lines = self._output.decode("utf-8", "replace").strip().splitlines()
            why = lines[-1].strip() if lines else str(reason.value)
        self.done.errback(UpgradeRefused(f"the new code cannot start: {why}"))


def adoptPort(reactor: Any, fd: int, factory: Any) -> IListeningPort:
    """
    Listen with C{factory} on the listening TCP socket C{fd}, which the
    master's previous image made (and this one now closes its copy of).
    """
    probe = socket.socket(fileno=fd)
    family = probe.family
    probe.detach()
    try:
        port: IListeningPort = reactor.adoptStreamPort(fd, family, factory)
    finally:
        os.close(fd)
    return port


def handOverPort(port: IListeningPort | None) -> int | None:
    """
    The descriptor of the listening socket of C{port} (a Twisted TCP or UNIX
    port), which stops accepting: what connects from now on waits in the
    backlog, for the master's next image.
    """
    if port is None:
        return None
    selectable: Any = port
    selectable.stopReading()
    descriptor: int = selectable.fileno()
    return descriptor


def resumePort(port: IListeningPort | None) -> None:
    """
    Have C{port} accept again after L{handOverPort}.
    """
    if port is not None:
        selectable: Any = port
        selectable.startReading()
