"""
The few Twisted and CPython internals this project relies on, in one place.

Each function here reaches past a public API because none does the job;
C{tests/test_internals.py} pins every assumption, so a Twisted upgrade that
breaks one fails there first, with a clear message.  The same tests run on
the oldest Twisted this project supports (C{make test-oldest}).

What they reach:
  - L{httpChannelOf}: C{Site}'s C{_GenericHTTPChannelProtocol._channel}.
  - L{appendToLogFiles}: C{twisted.python.logfile.BaseLogFile._openFile}.
  - L{exitTwistdWith}: C{reactor._exitSignal}, read by twistd's
    C{app._exitWithSignal}.
  - L{adoptListeningPort}: the ports' C{_fromListeningDescriptor}.
  - L{peerAddressOf}: C{tcp.Port._buildAddr}.
  - L{reserveDescriptor}: C{tcp._reservedFD}.
  - L{serveAccepted}: C{tcp.Port}'s C{transport} and C{sessionno}, and
    C{tcp.Server}'s constructor, as C{tcp.Port.doRead} uses them.
  - L{startAdoptedUNIXPort}, L{stopUNIXPortKeepingPath}: what
    C{unix.Port.startListening} does with C{_preexistingSocket}, without
    its C{chmod}, and C{unix.Port.connectionLost} without its C{unlink}.
  - L{reactorTLSDecided}, L{reactorLacksTLS}, L{giveReactorTLS}: the
    C{tls} and C{ssl} module globals of C{twisted.internet.posixbase}, and
    C{PosixReactorBase} providing C{IReactorSSL} only if one is set.
  - L{ampKeyBeingRead}, L{dropAMPBoxBeingRead}: C{BinaryBoxProtocol}'s
    C{_currentKey} and C{_currentBox}.
  - L{compactJSONEncoder}: CPython's C{json.encoder.c_make_encoder}.
"""

from __future__ import annotations

import fcntl
import os
import sys
from functools import partial
from itertools import count
from typing import Any


def httpChannelOf(protocol: object) -> Any | None:
    """
    The L{twisted.web.http.HTTPChannel} behind a connection's protocol, or
    C{None} if it is not one (or C{twisted.web} was never imported).

    C{Site.buildProtocol} returns a C{_GenericHTTPChannelProtocol} that keeps
    the real channel in C{_channel} (to switch to HTTP/2 after ALPN), and TLS
    wraps either in C{wrappedProtocol}.
    """
    http = sys.modules.get("twisted.web.http")
    if http is None:
        return None
    for _ in range(4):
        if isinstance(protocol, http.HTTPChannel):
            return protocol
        inner = getattr(protocol, "wrappedProtocol", None)  # TLS, policies
        if inner is None:
            inner = getattr(protocol, "_channel", None)  # _GenericHTTPChannelProtocol
        if inner is None:
            return None
        protocol = inner
    return None


def appendToLogFiles() -> None:
    """
    Have twistd's log files (L{twisted.python.logfile}) write in append mode.

    C{BaseLogFile._openFile} opens the file C{rb+} and seeks to its end once,
    so its later writes land where it thinks the end is, over the lines the
    workers appended to the same file meanwhile.  With C{O_APPEND} set on the
    descriptor (Linux lets C{F_SETFL} set it), every write goes at the end.
    """
    from twisted.python import logfile

    original = logfile.BaseLogFile._openFile
    if getattr(original, "appending", False):
        return

    def openFile(self: Any) -> None:
        original(self)
        fd = self._file.fileno()
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)

    openFile.appending = True  # type: ignore[attr-defined]
    logfile.BaseLogFile._openFile = openFile  # type: ignore[method-assign]


class _ExitStatus:
    """
    What C{reactor._exitSignal} holds for L{exitTwistdWith}: twistd passes
    it to C{signal.signal}, which asks it for its number, and it answers by
    ending the process with its status instead.
    """

    def __init__(self, code: int) -> None:
        self.code = code

    def __index__(self) -> int:
        raise SystemExit(self.code)


def exitTwistdWith(reactor: Any, code: int) -> None:
    """
    Have twistd exit with status C{code} once its reactor has stopped and
    its own shutdown (pid file, log) is done.

    twistd has no exit status of its own: after the reactor stops it reads
    C{reactor._exitSignal} (the signal that stopped it, if any) and, when it
    is set, re-raises it with C{app._exitWithSignal}.  C{None} makes it
    return normally (status 0); an L{_ExitStatus} makes it raise
    C{SystemExit(code)} there, so the interpreter exits the ordinary way and
    every exit handler runs.
    """
    reactor._exitSignal = _ExitStatus(code) if code else None


def adoptListeningPort(
    portClass: Any, reactor: Any, fd: int, *args: Any, **kw: Any
) -> Any:
    """
    A port of C{portClass} (a subclass of Twisted's C{tcp.Port},
    C{unix.Port} or C{udp.Port}) on the listening socket C{fd}, not yet
    listening.

    C{reactor.adoptStreamPort} would do, but it builds Twisted's own port
    class, and the worker needs its own (connection tracking, draining);
    C{_fromListeningDescriptor} is the constructor behind it.
    """
    return portClass._fromListeningDescriptor(reactor, fd, *args, **kw)


def peerAddressOf(port: Any, address: Any) -> Any:
    """
    The L{IAddress} a TCP port gives its factory for a connection from
    C{address} (a C{getpeername()} tuple), as its own C{doRead} would.
    """
    return port._buildAddr(address)


def reserveDescriptor() -> None:
    """
    Have Twisted keep its spare descriptor, which a listening port closes
    to accept (and refuse) a connection when the process is out of them; a
    port started by hand must reserve it as C{startListening} does.
    """
    from twisted.internet import tcp

    tcp._reservedFD.reserve()


def serveAccepted(port: Any, skt: Any, protocol: Any, addr: Any) -> Any:
    """
    Serve C{protocol} on C{skt}, a connection from C{addr} (a
    C{getpeername()} tuple) that someone else accepted, as if C{port} (a
    C{tcp.Port}) had accepted it itself: a transport of the port's own
    C{transport} class, numbered by its C{sessionno}, as C{doRead} makes.
    Returns the transport, connected to C{protocol}.
    """
    session = port.sessionno
    port.sessionno = session + 1
    transport = port.transport(skt, protocol, addr, port, session, port.reactor)
    protocol.makeConnection(transport)
    return transport


def startAdoptedUNIXPort(port: Any) -> None:
    """
    Start a C{unix.Port} made by L{adoptListeningPort} listening, as
    C{unix.Port.startListening} would but for the path: the socket's owner
    owns the path, and its mode stays as it is (C{startListening} would
    C{chmod} it, which a worker that does not own the path cannot do).
    """
    reserveDescriptor()
    port.factory.doStart()
    skt = port._preexistingSocket
    port._preexistingSocket = None
    port.connected = True
    port.socket = skt
    port.fileno = skt.fileno
    port.numberAccepts = 100
    port.startReading()


def stopUNIXPortKeepingPath(port: Any, reason: Any) -> None:
    """
    What C{unix.Port.connectionLost} does, but for removing the path (and
    a lock file): the socket's owner removes it.
    """
    from twisted.internet import tcp

    tcp.Port.connectionLost(port, reason)


_POSIXBASE = "twisted.internet.posixbase"


def reactorTLSDecided() -> bool:
    """
    Whether Twisted has decided whether the reactor has TLS: it does once,
    when C{twisted.internet.posixbase} is first imported, by trying to
    import C{twisted.protocols.tls} and C{twisted.internet.ssl}.
    """
    return _POSIXBASE in sys.modules


def reactorLacksTLS() -> bool:
    """
    Whether the reactor was imported while TLS could not be (so that its
    C{listenSSL} and C{connectSSL} would fail, and it does not claim
    C{IReactorSSL}).
    """
    posixbase: Any = sys.modules.get(_POSIXBASE)
    return posixbase is not None and posixbase.tls is None


def giveReactorTLS(tls: object, ssl: object) -> None:
    """
    Give the reactor the TLS it found missing when it was imported: C{tls}
    stands for C{twisted.protocols.tls} and C{ssl} for
    C{twisted.internet.ssl} (each may be a stand-in that imports the module
    on first use), and every reactor class built on C{PosixReactorBase}
    provides C{IReactorSSL} again.
    """
    from twisted.internet import posixbase
    from twisted.internet.interfaces import IReactorSSL
    from zope.interface import classImplements

    module: Any = posixbase
    module.tls = tls
    module.ssl = ssl
    classImplements(posixbase.PosixReactorBase, IReactorSSL)


def ampKeyBeingRead(protocol: Any) -> bytes | None:
    """
    The key of the value an AMP C{BinaryBoxProtocol} is reading: in its
    C{proto_value}, the key just read; C{None} between boxes.
    """
    key: bytes | None = protocol._currentKey
    return key


def dropAMPBoxBeingRead(protocol: Any) -> None:
    """
    Have an AMP C{BinaryBoxProtocol} forget the keys and values of the box
    it is reading (for one that will read no more).
    """
    protocol._currentBox = None


def descriptorsSent(protocol: Any) -> int:
    """
    How many descriptors an AMP protocol has sent (L{amp.Descriptor}): the
    ordinal the other side expects next.  AMP counts them in
    C{_sendingDescriptorCounter}, a C{partial(next, count())}.
    """
    counter = protocol._sendingDescriptorCounter.args[0]
    return int(repr(counter)[len("count(") : -1])


def continueDescriptorsFrom(protocol: Any, sent: int) -> None:
    """
    Have an AMP protocol number the descriptors it sends from C{sent} on: it
    takes over a connection on which C{sent} went before (the master's
    previous image sent them), and the other side counts on.
    """
    protocol._sendingDescriptorCounter = partial(next, count(sent))


def compactJSONEncoder(default: Any) -> Any | None:
    """
    C{json}'s C encoder, kept for reuse (C{json.dumps} builds a new one on
    every call, half the cost of a small message): a callable that gives a
    value's compact ASCII JSON in chunks, or C{None} where CPython's C
    accelerator is missing.
    """
    from json import encoder

    make = getattr(encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - not CPython
        return None
    return make(
        {},
        default,
        encoder.encode_basestring_ascii,
        None,
        ":",
        ",",
        False,
        False,
        False,
    )
