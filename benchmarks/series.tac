"""
The hello world with app metrics for the scrape benchmark: a
prometheus_client Counter with SERIES label values (200 by default), each
incremented once, in every worker.

    twistd -n cluster --app benchmarks/series.tac --metrics tcp:9100
"""

import os

from prometheus_client import Counter
from twisted.application import internet, service
from twisted.web import resource, server

SERIES = Counter("bench_series", "One series per label value.", ["n"])
for n in range(int(os.environ.get("SERIES", "200"))):
    SERIES.labels(n=str(n)).inc()


class Hello(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain")
        return f"hello from pid {os.getpid()}\n".encode()


application = service.Application("series")
internet.TCPServer(
    int(os.environ.get("PORT", "8080")), server.Site(Hello()), interface="127.0.0.1"
).setServiceParent(application)
