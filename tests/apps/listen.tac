"""
A test app that listens one way, chosen by LISTEN_STYLE, on LISTEN_PORT or
LISTEN_PATH.  Stream servers greet each connection with "<worker id> <pid>"
and close it (with HOLD set, they keep it open, and count in REPORT_DIR
each one the client closes); the UDP server answers each datagram the same
way.  With REPORT_DIR set, each worker writes the port it listens on there.
"""

import os

from twisted.application import internet, service, strports
from twisted.internet import endpoints, protocol, reactor, ssl

from twisted_cluster import cluster

STYLE = os.environ["LISTEN_STYLE"]
PORT = int(os.environ.get("LISTEN_PORT", "0"))
PATH = os.environ.get("LISTEN_PATH", "")
PEM = os.environ.get("LISTEN_PEM", "")
WHO = f"{cluster.worker.id if cluster.worker else '-'} {os.getpid()}\n".encode()


class Greet(protocol.Protocol):
    def connectionMade(self):
        self.transport.write(WHO)
        if not os.environ.get("HOLD"):
            self.transport.loseConnection()

    def connectionLost(self, reason):
        if os.environ.get("HOLD"):
            name = os.path.join(os.environ["REPORT_DIR"], f"closed-{os.getpid()}")
            with open(name, "a") as f:
                f.write("x")


class Answer(protocol.DatagramProtocol):
    def datagramReceived(self, data, addr):
        self.transport.write(WHO, addr)


def report(port):
    if os.environ.get("REPORT_DIR"):
        name = os.path.join(os.environ["REPORT_DIR"], f"port-{os.getpid()}")
        with open(name, "w") as f:
            f.write(str(port.getHost().port))


def tls():
    with open(PEM) as f:
        return ssl.PrivateCertificate.loadPEM(f.read()).options()


factory = protocol.Factory.forProtocol(Greet)
application = service.Application("listen")
here = "127.0.0.1"

if STYLE == "TCPServer":
    internet.TCPServer(PORT, factory, interface=here).setServiceParent(application)
elif STYLE == "UNIXServer":
    internet.UNIXServer(PATH, factory).setServiceParent(application)
elif STYLE == "UNIXServer-wantPID":
    internet.UNIXServer(PATH, factory, wantPID=True).setServiceParent(application)
elif STYLE == "SSLServer":
    internet.SSLServer(PORT, factory, tls(), interface=here).setServiceParent(application)
elif STYLE == "UDPServer":
    internet.UDPServer(PORT, Answer(), interface=here).setServiceParent(application)
elif STYLE == "strports":
    strports.service(f"tcp:{PORT}:interface={here}", factory).setServiceParent(
        application
    )
elif STYLE == "endpoint-tcp":
    endpoints.serverFromString(reactor, f"tcp:{PORT}:interface={here}").listen(factory)
elif STYLE == "endpoint-unix":
    endpoints.serverFromString(reactor, f"unix:{PATH}").listen(factory)
elif STYLE == "endpoint-ssl":
    description = f"ssl:{PORT}:interface={here}:privateKey={PEM}:certKey={PEM}"
    endpoints.serverFromString(reactor, description).listen(factory)
elif STYLE == "listenTCP":
    report(reactor.listenTCP(PORT, factory, interface=here))
elif STYLE == "listenUNIX":
    reactor.listenUNIX(PATH, factory)
elif STYLE == "listenSSL":
    reactor.listenSSL(PORT, factory, tls(), interface=here)
elif STYLE == "listenUDP":
    reactor.listenUDP(PORT, Answer(), interface=here)
else:
    raise ValueError(f"unknown LISTEN_STYLE {STYLE!r}")

if os.environ.get("BLOCK"):
    # Once running, block the reactor for good, as a stuck handler would,
    # saying so first in REPORT_DIR.
    import time

    def block():
        with open(os.path.join(os.environ["REPORT_DIR"], f"blocked-{os.getpid()}"), "w"):
            pass
        time.sleep(3600)

    reactor.callWhenRunning(block)
