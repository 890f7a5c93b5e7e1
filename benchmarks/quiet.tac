"""
The benchmark's hello world with the access log off: what a request costs
a plain twistd and a cluster worker without the log line each writes.

    PORT=8080 twistd -ny benchmarks/quiet.tac
"""

import os

from twisted.application import internet, service
from twisted.web import resource, server


class Hello(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain")
        return f"hello from pid {os.getpid()}\n".encode()


class QuietSite(server.Site):
    def log(self, request):
        pass


application = service.Application("quiet")
internet.TCPServer(
    int(os.environ.get("PORT", "8080")), QuietSite(Hello()), interface="127.0.0.1"
).setServiceParent(application)
