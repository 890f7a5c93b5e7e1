"""
Node's restart-on-death example: when a worker dies, say so and fork another.

    python examples/death.py           # then kill a worker: it is replaced
"""

import os

from twisted.internet import reactor
from twisted.web import resource, server

from twisted_cluster import cluster

PORT = int(os.environ.get("PORT", "8000"))


class Hello(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        return f"hello world from worker {cluster.worker.id}\n".encode()


if cluster.isMaster:
    for _ in range(2):
        cluster.fork()

    def restart(worker, exitCode, signal):
        print(
            f"worker {worker.pid} died ({signal or exitCode}). restarting...",
            flush=True,
        )
        cluster.fork()

    cluster.on("exit", restart)
else:
    reactor.listenTCP(PORT, server.Site(Hello()))
reactor.run()
