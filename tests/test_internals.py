"""
Each assumption twisted_cluster/internals.py makes about Twisted, pinned: a
Twisted upgrade that breaks one fails here first, saying which.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

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
