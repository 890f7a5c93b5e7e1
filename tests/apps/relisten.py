"""
Node's test-cluster-server-restart: two workers listen on port 0 (the same
port), then the second closes its server and listens on port 0 again while
the first still holds it.  The master prints "RESULT {...}": the ports each
worker reported, in order.
"""

import json
import sys

from twisted.internet import protocol, reactor

from twisted_cluster import cluster

factory = protocol.Factory.forProtocol(protocol.Protocol)


def workerMain():
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    cluster.worker.send({"first": port.getHost().port})

    def again(message):
        if message == "again":
            d = port.stopListening()
            d.addCallback(
                lambda _: reactor.listenTCP(0, factory, interface="127.0.0.1")
            )
            d.addCallback(lambda p: cluster.worker.send({"again": p.getHost().port}))

    cluster.worker.on("message", again)


def masterMain():
    seen = []
    workers = [cluster.fork(), cluster.fork()]

    def heard(worker, message):
        seen.append([worker.id, message])
        if len(seen) == 2:
            workers[1].send("again")
        elif len(seen) == 3:
            print("RESULT " + json.dumps(seen), flush=True)
            cluster.disconnect().addBoth(lambda _: reactor.stop())

    cluster.on("message", heard)
    reactor.callLater(30, reactor.stop)


if cluster.isMaster:
    masterMain()
else:
    workerMain()
reactor.run()
sys.exit(0)
