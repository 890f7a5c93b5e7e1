"""
The master's small web pages (health, metrics): each a service serving one
resource tree on an endpoint the user gave.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Site


class _QuietSite(Site):
    noisy = False

    def log(self, request: http.Request) -> None:
        pass  # A probe every few seconds is no news.


class PageService(Service):
    """
    Serves C{root} on C{endpoint} while running, without an access log;
    calls C{onFailure(reason)} if it cannot listen there.

    @ivar port: the listening port, once listening.
    """

    _log = Logger()

    def __init__(
        self,
        what: str,
        root: Resource,
        endpoint: IStreamServerEndpoint,
        onFailure: Callable[[str], object],
    ) -> None:
        self._what = what
        self._site = _QuietSite(root)
        self._endpoint = endpoint
        self._onFailure = onFailure
        self.port: IListeningPort | None = None

    def startService(self) -> None:
        super().startService()
        self._endpoint.listen(self._site).addCallbacks(self._listening, self._failed)

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        self._log.info("{what} on {address}", what=self._what, address=port.getHost())

    def _failed(self, failure: Failure) -> None:
        self._onFailure(f"cannot serve {self._what}: {failure.getErrorMessage()}")

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return None
        stopped: Deferred[None] | None = port.stopListening()
        return stopped
