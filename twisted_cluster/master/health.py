"""
C{--health ENDPOINT}: C{GET /health} for load balancers and Kubernetes'
readiness probe.  200 while at least one worker serves and the cluster is
neither starting, draining nor stopping; 503 otherwise.  The body is a
little JSON either way: C{{"state": ..., "serving": N, "count": N}}.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from twisted.web.resource import Resource
from twisted.web.server import Request

from .status import STATES

if TYPE_CHECKING:
    from .supervisor import ClusterService

HEALTHY = ("running", "reloading", "upgrading")
"""The cluster states in which it takes traffic."""


def health(service: ClusterService) -> tuple[bool, dict[str, object]]:
    """
    Whether the cluster takes traffic now, and what the body says.
    """
    serving = len(service.roster.serving())
    state = service.state.value
    body = {"state": STATES[state], "serving": serving, "count": service.count}
    return state in HEALTHY and serving > 0, body


class HealthPage(Resource):
    isLeaf = True

    def __init__(self, service: ClusterService) -> None:
        super().__init__()
        self._service = service

    def render_GET(self, request: Request) -> bytes:
        ok, body = health(self._service)
        request.setResponseCode(200 if ok else 503)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(body).encode() + b"\n"

    render_HEAD = render_GET


def healthRoot(service: ClusterService) -> Resource:
    root = Resource()
    root.putChild(b"health", HealthPage(service))
    return root
