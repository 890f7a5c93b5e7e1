"""
Node's cluster example, in Python: one worker per CPU, all serving port 8000.

    python examples/server.py          # PORT=9000 python examples/server.py
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
    print(f"Master {os.getpid()} is running")
    for _ in range(len(os.sched_getaffinity(0))):
        cluster.fork()
    cluster.on("exit", lambda worker, code, signal: print(f"worker {worker.pid} died"))
else:
    reactor.listenTCP(PORT, server.Site(Hello()))
    print(f"Worker {os.getpid()} started")
reactor.run()
