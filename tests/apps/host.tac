"""
A web app for the tests of several hosts: on HOST:PORT, every request is
answered "<host> <worker id> <pid>".
"""

import os

from twisted.application import internet, service
from twisted.web import resource, server

from twisted_cluster import cluster

HOST = os.environ["HOST"]
WORKER = cluster.worker.id if cluster.worker else "-"


class App(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        return f"{HOST} {WORKER} {os.getpid()}".encode()


application = service.Application("host")
site = server.Site(App())
site.log = lambda request: None  # no access log: the test makes thousands
internet.TCPServer(int(os.environ["PORT"]), site, interface=HOST).setServiceParent(
    application
)
