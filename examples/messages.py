"""
Node's message-passing example: every worker tells the master about each
request it serves, and the master prints the count every second.

    python examples/messages.py        # then: curl http://127.0.0.1:8000/
"""

import os

from twisted.internet import reactor, task
from twisted.web import resource, server

from twisted_cluster import cluster

PORT = int(os.environ.get("PORT", "8000"))


class Hello(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        # Tell the master about the request.
        cluster.worker.send({"cmd": "notifyRequest"})
        return b"hello world\n"


if cluster.isMaster:
    numReqs = 0

    def messageHandler(message):
        global numReqs
        if isinstance(message, dict) and message.get("cmd") == "notifyRequest":
            numReqs += 1

    task.LoopingCall(lambda: print(f"numReqs = {numReqs}", flush=True)).start(1.0)
    for _ in range(len(os.sched_getaffinity(0))):
        cluster.fork()
    for worker in cluster.workers.values():
        worker.on("message", messageHandler)
else:
    reactor.listenTCP(PORT, server.Site(Hello()))
reactor.run()
