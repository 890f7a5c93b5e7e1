"""
A web app with a metric of its own, served by every worker of a cluster,
whose master shows every worker's count on one page.

    twistd -n cluster --app examples/metrics.tac --metrics tcp:9100:interface=127.0.0.1
    curl -s localhost:8080/ ; curl -s localhost:9100/metrics | grep hello_requests

Each worker counts in its own prometheus_client registry; the master
collects them over its channels at scrape time, each labelled with the
worker's slot: no multiprocess directory, no series left behind when a
worker is replaced.
"""

import os

from prometheus_client import Counter
from twisted.application import internet, service
from twisted.web import resource, server

from twisted_cluster import cluster

PORT = int(os.environ.get("PORT", "8080"))
REQUESTS = Counter("hello_requests", "Requests answered.", ["path"])


class Hello(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        REQUESTS.labels(path=request.path.decode("utf-8", "replace")).inc()
        worker = cluster.worker.id if cluster.worker else "-"
        request.setHeader(b"content-type", b"text/plain")
        return f"hello from worker {worker} (pid {os.getpid()})\n".encode()


application = service.Application("metrics")
internet.TCPServer(PORT, server.Site(Hello()), interface="127.0.0.1").setServiceParent(
    application
)
