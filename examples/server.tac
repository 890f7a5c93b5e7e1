"""
Hello world, served by every worker of a cluster.

    twistd -n cluster --app examples/server.tac        # on every CPU
    twistd -ny examples/server.tac                      # one process, unchanged

Each answer says which worker (and process) served it.
"""

import os

from twisted.application import internet, service
from twisted.web import resource, server

from twisted_cluster import cluster

PORT = int(os.environ.get("PORT", "8080"))


class Hello(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        worker = cluster.worker.id if cluster.worker else "-"
        request.setHeader(b"content-type", b"text/plain")
        return f"hello from worker {worker} (pid {os.getpid()})\n".encode()


application = service.Application("hello")
internet.TCPServer(PORT, server.Site(Hello()), interface="127.0.0.1").setServiceParent(
    application
)
