"""
Each assumption twisted_cluster/internals.py makes about Twisted, pinned: a
Twisted upgrade that breaks one fails here first, saying which.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.web import http, server
from twisted.web.resource import Resource

from twisted_cluster.internals import appendToLogFiles, httpChannelOf


def test_siteWrapsItsChannel() -> None:
    """
    C{Site.buildProtocol} gives a wrapper whose C{_channel} is the
    L{http.HTTPChannel}; C{httpChannelOf} finds it, through TLS too.
    """
    site = server.Site(Resource())
    built = site.buildProtocol(None)
    assert not isinstance(built, http.HTTPChannel), "Site no longer wraps: simplify"
    assert isinstance(built._channel, http.HTTPChannel)
    assert httpChannelOf(built) is built._channel
    from twisted.protocols.tls import TLSMemoryBIOProtocol

    tls = TLSMemoryBIOProtocol(None, site.buildProtocol(None))
    assert httpChannelOf(tls) is tls.wrappedProtocol._channel
    assert httpChannelOf(object()) is None


def test_logFilesAppend(tmp_path: Path) -> None:
    """
    After C{appendToLogFiles}, a twistd log file writes at the end of what
    others appended meanwhile, and so after its own rotation.
    """
    from twisted.python import logfile

    appendToLogFiles()
    appendToLogFiles()  # Once is enough; twice changes nothing.
    path = tmp_path / "twistd.log"
    log = logfile.LogFile(path.name, str(tmp_path), rotateLength=None)
    flags = fcntl.fcntl(log._file.fileno(), fcntl.F_GETFL)
    assert flags & os.O_APPEND
    other = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        log.write("master 1\n")
        log.flush()
        os.write(other, b"worker 1\n")
        log.write("master 2\n")
        log.flush()
        assert path.read_text() == "master 1\nworker 1\nmaster 2\n"
        log.rotate()
        assert fcntl.fcntl(log._file.fileno(), fcntl.F_GETFL) & os.O_APPEND
    finally:
        os.close(other)
        log.close()


def test_twistdExitsWithTheStatusItIsGiven() -> None:
    """
    twistd re-raises what C{reactor._exitSignal} holds through
    C{app._exitWithSignal}, which hands it to C{signal.signal} first: with
    an L{_ExitStatus} there, that is a plain C{SystemExit}.
    """
    import pytest
    from twisted.application import app
    from twisted.internet import reactor

    from twisted_cluster.internals import _ExitStatus, exitTwistdWith

    assert app._ISupportsExitSignalCapturing.providedBy(reactor)
    with pytest.raises(SystemExit) as raised:
        app._exitWithSignal(_ExitStatus(3))
    assert raised.value.code == 3

    class Reactor:
        _exitSignal = 15

    fake = Reactor()
    exitTwistdWith(fake, 0)
    assert fake._exitSignal is None
    exitTwistdWith(fake, 1)
    assert isinstance(fake._exitSignal, _ExitStatus)


def test_portsAdoptListeningDescriptors() -> None:
    """
    Each port class the worker builds on has C{_fromListeningDescriptor}
    with the arguments C{adoptListeningPort} passes; a TCP port has
    C{_buildAddr}, and tcp keeps C{_reservedFD}.
    """
    import socket

    from twisted.internet import protocol, tcp, udp, unix
    from twisted.internet import reactor as globalReactor

    from twisted_cluster.internals import (
        adoptListeningPort,
        peerAddressOf,
        reserveDescriptor,
    )

    for portClass in (tcp.Port, unix.Port, udp.Port):
        assert callable(getattr(portClass, "_fromListeningDescriptor", None)), portClass
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(1)
    listening.setblocking(False)
    factory = protocol.Factory.forProtocol(protocol.Protocol)
    port = adoptListeningPort(
        tcp.Port, globalReactor, listening.fileno(), socket.AF_INET, factory
    )
    assert isinstance(port, tcp.Port) and not port.connected
    address = peerAddressOf(port, ("127.0.0.1", 4242))
    assert (address.type, address.host, address.port) == ("TCP", "127.0.0.1", 4242)
    reserveDescriptor()
    assert tcp._reservedFD.available()
    listening.close()


def test_compactJSONEncoder() -> None:
    import json

    from twisted_cluster.internals import compactJSONEncoder

    def refuse(value):
        raise TypeError("no")

    chunks = compactJSONEncoder(refuse)
    assert chunks is not None, "CPython's C JSON encoder is gone"
    value = {"a": [1, 2.5, None, "é"], "b": True}
    assert "".join(chunks(value, 0)) == json.dumps(value, separators=(",", ":"))


def test_portsServeWhatOthersAccepted() -> None:
    """
    C{serveAccepted} relies on C{tcp.Port.transport}, C{sessionno} and
    C{tcp.Server(skt, protocol, addr, port, session, reactor)}, the way
    C{tcp.Port.doRead} does; the transport keeps its port in C{server}
    (C{worker.listening._Tracked} counts its connections there).
    """
    import socket

    from twisted.internet import protocol, tcp
    from twisted.internet.testing import MemoryReactor

    from twisted_cluster.internals import adoptListeningPort, serveAccepted

    assert tcp.Port.transport is tcp.Server, "tcp.Port.transport is not tcp.Server"
    reactor = MemoryReactor()
    with socket.socket() as listening, socket.socket() as client:
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        listening.setblocking(False)
        factory = protocol.Factory.forProtocol(protocol.Protocol)
        port = adoptListeningPort(
            tcp.Port, reactor, listening.fileno(), socket.AF_INET, factory
        )
        client.connect(listening.getsockname())
        skt, addr = listening.accept()
        skt.setblocking(False)
        before = port.sessionno
        served = protocol.Protocol()
        transport = serveAccepted(port, skt, served, addr)
        assert isinstance(transport, tcp.Server)
        assert transport.server is port, "tcp.Server no longer keeps its port in server"
        assert served.transport is transport and served.connected
        assert (transport.sessionno, port.sessionno) == (before, before + 1), (
            "tcp.Port no longer numbers its connections with sessionno"
        )
        assert transport.getPeer().port == client.getsockname()[1]
        assert transport in reactor.readers
        transport.stopReading()
        skt.close()


def test_adoptedUNIXPortsKeepTheirPath(tmp_path: Path) -> None:
    """
    C{unix.Port.startListening} on an adopted socket would C{chmod} its path
    and C{connectionLost} would remove it; C{startAdoptedUNIXPort} and
    C{stopUNIXPortKeepingPath} do the rest of each, with the attributes
    (C{_preexistingSocket}, C{socket}, C{fileno}) Twisted's own use.
    """
    import socket

    from twisted.internet import protocol, unix
    from twisted.internet.error import ConnectionDone
    from twisted.internet.testing import MemoryReactor
    from twisted.python.failure import Failure

    from twisted_cluster.internals import (
        adoptListeningPort,
        startAdoptedUNIXPort,
        stopUNIXPortKeepingPath,
    )

    def adopted(path: Path) -> tuple[socket.socket, unix.Port, MemoryReactor]:
        listening = socket.socket(socket.AF_UNIX)
        listening.bind(str(path))
        listening.listen(1)
        listening.setblocking(False)
        os.chmod(path, 0o600)
        reactor = MemoryReactor()
        factory = protocol.Factory.forProtocol(protocol.Protocol)
        port = adoptListeningPort(unix.Port, reactor, listening.fileno(), factory)
        assert port._preexistingSocket is not None, "no _preexistingSocket"
        return listening, port, reactor

    # Twisted's own: the reason for ours.  If these fail, ours may go.
    path = tmp_path / "twisted.sock"
    listening, port, reactor = adopted(path)
    port.startListening()
    assert path.stat().st_mode & 0o777 == 0o666, "unix.Port no longer chmods"
    port.stopReading()
    port.connectionLost(Failure(ConnectionDone()))
    assert not path.exists(), "unix.Port no longer removes its path"
    listening.close()

    path = tmp_path / "ours.sock"
    listening, port, reactor = adopted(path)
    startAdoptedUNIXPort(port)
    assert path.stat().st_mode & 0o777 == 0o600
    assert port.connected and port._preexistingSocket is None
    assert port.fileno() == port.socket.fileno()
    assert port in reactor.readers and port.numberAccepts > 0
    port.stopReading()
    stopUNIXPortKeepingPath(port, Failure(ConnectionDone()))
    assert not port.connected and path.exists()
    listening.close()


REACTOR_WITHOUT_TLS = """
import json, sys
sys.modules["OpenSSL"] = None
from twisted_cluster import internals
decidedBefore = internals.reactorTLSDecided()
from twisted.internet import posixbase
from twisted.internet.interfaces import IReactorSSL
seen = {
    "decidedBefore": decidedBefore,
    "decided": internals.reactorTLSDecided(),
    "globals": [hasattr(posixbase, "tls"), hasattr(posixbase, "ssl")],
    "none": [posixbase.tls is None, posixbase.ssl is None],
    "lacks": internals.reactorLacksTLS(),
    "provides": IReactorSSL.implementedBy(posixbase.PosixReactorBase),
}
del sys.modules["OpenSSL"]
from twisted.internet import ssl
from twisted.protocols import tls
internals.giveReactorTLS(tls, ssl)
seen["after"] = [
    posixbase.tls is tls,
    posixbase.ssl is ssl,
    IReactorSSL.implementedBy(posixbase.PosixReactorBase),
    internals.reactorLacksTLS(),
]
print(json.dumps(seen))
"""


def test_reactorDecidesTLSOnImport() -> None:
    """
    C{twisted.internet.posixbase} sets its module globals C{tls} and C{ssl}
    to C{None} when C{OpenSSL} cannot be imported, and then
    C{PosixReactorBase} does not provide C{IReactorSSL}; C{listenSSL} and
    C{connectSSL} read those globals when called, so C{giveReactorTLS} can
    set them later (C{master/lean.py}).  A fresh interpreter: this one has
    imported the reactor already.
    """
    import json
    import subprocess
    import sys

    from twisted.internet import posixbase, ssl
    from twisted.internet.interfaces import IReactorSSL
    from twisted.protocols import tls

    assert (posixbase.tls, posixbase.ssl) == (tls, ssl), (
        "posixbase no longer holds twisted.protocols.tls and twisted.internet.ssl"
        " in its module globals tls and ssl"
    )
    assert IReactorSSL.implementedBy(posixbase.PosixReactorBase)
    for name in ("listenSSL", "connectSSL"):
        read = set(getattr(posixbase.PosixReactorBase, name).__code__.co_names)
        assert {"tls", "ssl"} <= read, (
            f"PosixReactorBase.{name} no longer reads the module globals tls, ssl"
        )
    out = subprocess.run(
        [sys.executable, "-c", REACTOR_WITHOUT_TLS],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    seen = json.loads(out.stdout)
    assert seen == {
        "decidedBefore": False,
        "decided": True,
        "globals": [True, True],
        "none": [True, True],
        "lacks": True,
        "provides": False,
        "after": [True, True, True, False],
    }, "posixbase no longer decides TLS on import as master/lean.py expects"


def test_ampReadsBoxesKeyByKey() -> None:
    """
    C{BinaryBoxProtocol} reads a box in C{proto_key} and C{proto_value}
    (which C{commands.Channel} extends to bound a box), holding the key in
    C{_currentKey} while it reads the value and the box in C{_currentBox}.
    """
    from twisted.protocols import amp

    from twisted_cluster.internals import ampKeyBeingRead, dropAMPBoxBeingRead

    boxes: list[amp.AmpBox] = []
    keys: list[bytes | None] = []

    class Reader(amp.BinaryBoxProtocol):
        def proto_value(self, string: bytes) -> str:
            keys.append(ampKeyBeingRead(self))
            return str(super().proto_value(string))

    class Receiver:
        def startReceivingBoxes(self, sender: object) -> None:
            pass

        def ampBoxReceived(self, box: amp.AmpBox) -> None:
            boxes.append(box)

    reader = Reader(Receiver())
    reader.makeConnection(None)
    reader.dataReceived(b"\x00\x01a\x00\x02bc\x00\x00")
    assert boxes == [{b"a": b"bc"}], "BinaryBoxProtocol no longer reads like this"
    assert keys == [b"a"], "proto_value no longer sees the key in _currentKey"
    assert ampKeyBeingRead(reader) is None
    reader.dataReceived(b"\x00\x01d\x00\x01e")
    assert reader._currentBox == {b"d": b"e"}, "no box being read in _currentBox"
    dropAMPBoxBeingRead(reader)
    assert reader._currentBox is None


def test_noClassOfOursShadowsATwistedPrivate() -> None:
    """
    No class of ours names an attribute or method as a private one of its
    Twisted base classes (that would be relying on, or breaking, an internal
    by accident): what we use of theirs goes through internals.  Only
    C{_commandDispatch}, which AMP's own metaclass fills in, may appear.
    """
    import importlib
    import inspect
    import pkgutil
    import re

    import twisted_cluster

    shadowed = []
    for info in pkgutil.walk_packages(twisted_cluster.__path__, "twisted_cluster."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for cls in vars(module).values():
            if not inspect.isclass(cls) or cls.__module__ != module.__name__:
                continue
            names = {n for n in vars(cls) if n[:1] == "_" and n[:2] != "__"}
            names |= set(re.findall(r"self\.(_[A-Za-z]\w*)", inspect.getsource(cls)))
            names.discard("_commandDispatch")
            for base in cls.__mro__[1:]:
                if base.__module__.startswith("twisted."):
                    shadowed += [
                        f"{cls.__qualname__}.{n} ({base})"
                        for n in names
                        if n in vars(base)
                    ]
    assert shadowed == [], f"Twisted privates used outside internals: {shadowed}"


def test_ampNumbersTheDescriptorsItSends() -> None:
    """
    AMP numbers the descriptors it sends from 0, and the receiver looks
    each up by that number: a connection taken over (an upgrade in place)
    must number on from where the other side counts.
    """
    from twisted.protocols import amp

    from twisted_cluster.internals import continueDescriptorsFrom, descriptorsSent

    class Sent:
        def sendFileDescriptor(self, fd: int) -> None:
            pass

    sender = amp.AMP()
    sender.transport = Sent()  # type: ignore[assignment]
    assert descriptorsSent(sender) == 0
    assert amp.Descriptor().toStringProto(7, sender) == b"0"
    assert amp.Descriptor().toStringProto(7, sender) == b"1"
    assert descriptorsSent(sender) == 2
    continueDescriptorsFrom(sender, 5)
    assert descriptorsSent(sender) == 5
    assert amp.Descriptor().toStringProto(7, sender) == b"5"
    receiver = amp.AMP()
    for fd in (10, 11):
        receiver.fileDescriptorReceived(fd)
    assert amp.Descriptor().fromStringProto(b"1", receiver) == 11


@pytest_twisted.inlineCallbacks
def test_theReactorReapsAChildItDidNotSpawn() -> Any:
    """
    A handler given to C{registerReapProcessHandler} for a child the
    reactor did not spawn (one the master's previous image did) has its
    C{reapProcess} called after C{SIGCHLD}; a child that has exited already
    is ended at once, with its status.
    """
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred
    from twisted.internet.error import ProcessTerminated
    from twisted.internet.protocol import ProcessProtocol

    from twisted_cluster.master.inherited import InheritedProcess

    class Ended(ProcessProtocol):
        def __init__(self) -> None:
            self.exited: Deferred[Any] = Deferred()

        def processExited(self, reason: Any) -> None:
            self.exited.callback(reason.value)

    env = dict(os.environ)
    r, w = os.pipe()
    # Exits with 3 once the pipe is closed: after the handler is in place.
    pid = os.posix_spawn(
        "/bin/sh",
        ["sh", "-c", "read x; exit 3"],
        env,
        file_actions=[(os.POSIX_SPAWN_DUP2, r, 0)],
    )
    protocol = Ended()
    process = InheritedProcess(pid, protocol)
    process.watch()
    assert not protocol.exited.called
    os.close(w)
    timeout = reactor.callLater(10, protocol.exited.cancel)  # type: ignore[attr-defined]
    reason = yield protocol.exited
    timeout.cancel()
    os.close(r)
    assert isinstance(reason, ProcessTerminated) and reason.exitCode == 3
    assert process.pid is None

    gone = os.posix_spawn("/bin/sh", ["sh", "-c", "kill -9 $$"], env)
    waitForZombie(gone)
    early = Ended()
    InheritedProcess(gone, early).watch()
    assert early.exited.called
    reason = yield early.exited
    assert isinstance(reason, ProcessTerminated) and reason.signal == 9


def waitForZombie(pid: int) -> None:
    from .support import waitFor

    def zombie() -> bool:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"

    waitFor(zombie, timeout=10, what=f"pid {pid} to exit")
