"""
A web app for supervision tests, on PORT (127.0.0.1).

    /          "<worker id> <pid> <version>", the version read from VERSION_FILE
               when the app loads (so a reload shows changed code)
    /slow?s=N  the same after N seconds
    /block     blocks the reactor for good, as a stuck handler would
    /grow?mb=N holds N more megabytes
    /slot      "<worker id> <pid> <slot>", the slot asked when the request comes
"""

import os
import time

from twisted.application import internet, service
from twisted.internet import reactor, task
from twisted.logger import Logger
from twisted.web import resource, server

from twisted_cluster import cluster

log = Logger()

VERSION = open(os.environ["VERSION_FILE"]).read().strip()
WORKER = cluster.worker.id if cluster.worker else "-"
hoard = []


def who():
    return f"{WORKER} {os.getpid()} {VERSION}".encode()


class App(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        path = request.path
        if path == b"/slow":
            seconds = float(request.args.get(b"s", [b"1"])[0])
            log.info("slow request started")
            d = task.deferLater(reactor, seconds, who)
            d.addCallback(lambda body: (request.write(body), request.finish()))
            return server.NOT_DONE_YET
        if path == b"/block":
            time.sleep(3600)
        if path == b"/slot":
            return f"{WORKER} {os.getpid()} {cluster.worker.slot}".encode()
        if path == b"/grow":
            hoard.append(bytearray(int(request.args[b"mb"][0]) * 1024 * 1024))
        return who()


application = service.Application("web")
site = server.Site(App())
internet.TCPServer(int(os.environ["PORT"]), site, interface="127.0.0.1").setServiceParent(
    application
)
