"""
The master's small web pages (health, metrics): each a service serving one
resource tree on an endpoint the user gave.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

from .upgrade import IHandsOverAPort, adoptPort, handOverPort, resumePort

DRAIN = 1.0
"""Seconds a page's open connections get to finish before an upgrade's
exec cuts them."""


class _QuietSite(Site):
    noisy = False

    def log(self, request: http.Request) -> None:
        pass  # A probe every few seconds is no news.


class _Tracked(WrappingFactory):
    """
    Knows the connections open, so that they can finish before the master
    executes its new code.
    """

    noisy = False

    def __init__(self, site: Site) -> None:
        super().__init__(site)
        self._closed: list[Deferred[None]] = []

    def unregisterProtocol(self, protocol: Any) -> None:
        super().unregisterProtocol(protocol)
        if not self.protocols:
            waiting, self._closed = self._closed, []
            for d in waiting:
                if not d.called:
                    d.callback(None)

    def whenClosed(self) -> Deferred[None]:
        """
        Fires once no connection is open.
        """
        if not self.protocols:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._closed.append(d)
        return d


@implementer(IHandsOverAPort)
class PageService(Service):
    """
    Serves C{root} on C{endpoint} while running, without an access log;
    calls C{onFailure(reason)} if it cannot listen there.  With
    C{inherited} (the descriptor of the master's previous image's listening
    socket, after an upgrade in place) it serves on that instead.

    @ivar port: the listening port, once listening.
    """

    _log = Logger()

    def __init__(
        self,
        what: str,
        root: Resource,
        endpoint: IStreamServerEndpoint,
        onFailure: Callable[[str], object],
        reactor: Any = None,
        inherited: int | None = None,
    ) -> None:
        self._reactor = reactor
        self._inherited = inherited
        self._what = what
        self._site = _Tracked(_QuietSite(root))
        self._endpoint = endpoint
        self._onFailure = onFailure
        self.port: IListeningPort | None = None

    def startService(self) -> None:
        super().startService()
        fd, self._inherited = self._inherited, None
        if fd is not None:
            self._listening(adoptPort(self._reactor, fd, self._site))
            return
        self._endpoint.listen(self._site).addCallbacks(self._listening, self._failed)

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        self._log.info("{what} on {address}", what=self._what, address=port.getHost())

    def _failed(self, failure: Failure) -> None:
        self._onFailure(f"cannot serve {self._what}: {failure.getErrorMessage()}")

    def handover(self) -> Deferred[int | None]:
        """
        Accept nothing more here (until L{resume}); fires with the listening
        socket's descriptor, for the master's next image, once the
        connections open have closed, or L{DRAIN} seconds on.
        """
        fd = handOverPort(self.port)
        if fd is None:
            return succeed(None)
        closed = self._site.whenClosed()
        closed.addTimeout(DRAIN, self._reactor, onTimeoutCancel=lambda *_: None)
        return closed.addCallback(lambda _: fd)

    def resume(self) -> None:
        """
        Accept again: the upgrade did not happen.
        """
        resumePort(self.port)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return None
        stopped: Deferred[None] | None = port.stopListening()
        return stopped
