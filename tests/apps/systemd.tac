"""
A web app that listens where systemd says: a C{systemd:} endpoint, the
first socket passed (socket activation).  Answers "<worker id> <pid> v1".
"""

import os

from twisted.application import service, strports
from twisted.web import resource, server

from twisted_cluster import cluster


class Hello(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        worker = cluster.worker.id if cluster.worker else "-"
        return f"{worker} {os.getpid()} v1".encode()


application = service.Application("systemd")
strports.service("systemd:domain=INET:index=0", server.Site(Hello())).setServiceParent(
    application
)
