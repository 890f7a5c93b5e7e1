"""
A web app with a prometheus_client metric of its own, on PORT (127.0.0.1).

    /          "<worker id> <pid> <slot>", counting the request in
               app_requests_total
    /block?s=N blocks the reactor for N seconds, as a stuck handler would
"""

import os
import time

from prometheus_client import Counter
from twisted.application import internet, service
from twisted.web import resource, server

from twisted_cluster import cluster

REQUESTS = Counter("app_requests", "Requests answered.")


class App(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        if request.path == b"/block":
            time.sleep(float(request.args.get(b"s", [b"3"])[0]))
        else:
            REQUESTS.inc()
        worker = cluster.worker
        return f"{worker.id} {os.getpid()} {worker.slot}".encode()


application = service.Application("metrics")
site = server.Site(App())
internet.TCPServer(int(os.environ["PORT"]), site, interface="127.0.0.1").setServiceParent(
    application
)
