"""
A web app for chaos tests, on 127.0.0.1:PORT: every request is answered
"<worker id> <pid>".

Each accepted connection is recorded in CONN_DIR/conns-<pid> as a line
"<client port> <pid> <CLOCK_MONOTONIC seconds>", written with one unbuffered
os.write on an O_APPEND descriptor as the connection is built, so the record
survives a SIGKILL right after the accept.  The time tells apart the
connections a client port was reused for.  When a connection closes, a line
"<client port> <pid> <seconds> lost <bytes received> <requests answered>"
says how far it got.  Access logging is off: the log is for the cluster's
own lines.
"""

import os
import time

from twisted.application import internet, service
from twisted.web import resource, server

from twisted_cluster import cluster

WORKER = cluster.worker.id if cluster.worker else "-"
PID = os.getpid()
ANSWER = f"{WORKER} {PID}".encode()
CONNS = os.open(
    os.path.join(os.environ["CONN_DIR"], f"conns-{PID}"),
    os.O_WRONLY | os.O_APPEND | os.O_CREAT,
    0o644,
)


class Who(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        request.channel.chaosAnswered = getattr(request.channel, "chaosAnswered", 0) + 1
        return ANSWER


class RecordingSite(server.Site):
    """
    A Site that records each connection it accepts and how it ends, and logs
    no requests.  Its protocol is twisted.web's own, so a retiring worker
    drains it.
    """

    def buildProtocol(self, addr):
        os.write(CONNS, f"{addr.port} {PID} {time.monotonic():.6f}\n".encode())
        protocol = super().buildProtocol(addr)
        received = [0]
        dataReceived, connectionLost = protocol.dataReceived, protocol.connectionLost

        def counting(data):
            received[0] += len(data)
            dataReceived(data)

        def lost(reason):
            channel = getattr(protocol, "_channel", protocol)
            answered = getattr(channel, "chaosAnswered", 0)
            line = f"{addr.port} {PID} {time.monotonic():.6f} lost {received[0]} "
            os.write(CONNS, f"{line}{answered}\n".encode())
            connectionLost(reason)

        protocol.dataReceived, protocol.connectionLost = counting, lost
        return protocol

    def log(self, request):
        pass


application = service.Application("chaos")
internet.TCPServer(
    int(os.environ["PORT"]), RecordingSite(Who()), interface="127.0.0.1"
).setServiceParent(application)
