"""
An app that listens at run time, as an FTP server's passive mode does.

On PORT (HTTP, 127.0.0.1), each answer starts with "<worker id> <pid>":

    /listen        listen on a new port 0; the answer ends with that port
    /stop?port=N   stop listening on port N (one this worker opened)
    /stop-extra    stop listening on EXTRA_PORT

EXTRA_PORT (listened on at start, by every worker) and every run-time port
greet each connection with "<worker id> <pid>" and close it.
"""

import os

from twisted.application import internet, service
from twisted.internet import protocol, reactor
from twisted.web import resource, server

from twisted_cluster import cluster

WHO = f"{cluster.worker.id if cluster.worker else '-'} {os.getpid()}"
ports = {}


class Greet(protocol.Protocol):
    def connectionMade(self):
        self.transport.write(WHO.encode() + b"\n")
        self.transport.loseConnection()


greeter = protocol.Factory.forProtocol(Greet)


class Control(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        if request.path == b"/listen":
            port = reactor.listenTCP(0, greeter, interface="127.0.0.1")
            number = port.getHost().port
            ports[number] = port
            return f"{WHO} {number}".encode()
        if request.path == b"/stop":
            number = int(request.args[b"port"][0])
            if number not in ports:
                return f"{WHO} not-mine {number}".encode()
            ports.pop(number).stopListening()
            return f"{WHO} stopped {number}".encode()
        if request.path == b"/stop-extra":
            extra.stopService()
            return f"{WHO} stopped extra".encode()
        return WHO.encode()


application = service.Application("runtime")
internet.TCPServer(
    int(os.environ["PORT"]), server.Site(Control()), interface="127.0.0.1"
).setServiceParent(application)
extra = internet.TCPServer(int(os.environ["EXTRA_PORT"]), greeter, interface="127.0.0.1")
extra.setServiceParent(application)
