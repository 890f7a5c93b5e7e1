"""
The signals a master acts on, and the one way it stops.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger

if TYPE_CHECKING:
    from .master.supervisor import ClusterService

_log = Logger(namespace="twisted_cluster.signals")


def stopCluster(cluster: ClusterService, reactor: Any, now: bool) -> None:
    """
    Stop the cluster gracefully, or (C{now}) at once, and then this process.
    """
    if now:
        cluster.stopNow()
    if cluster.isStopping():
        return  # A stop under way goes on (hurried, if now).
    try:
        reactor.stop()
    except ReactorNotRunning:
        pass  # A signal stopped it a moment ago; the cluster has not heard yet.


def installSignals(
    cluster: ClusterService,
    reactor: Any,
    upgrade: Callable[[], Deferred[None]] | None = None,
) -> None:
    """
    SIGHUP reloads, SIGTTIN and SIGTTOU add and remove a worker, SIGTERM
    and SIGINT stop gracefully (once: the reactor's own handlers would stop
    it again at a second signal, which fails), SIGQUIT stops at once,
    SIGUSR2 upgrades the master in place.
    """

    def quit() -> None:
        stopCluster(cluster, reactor, now=True)

    def stop() -> None:
        stopCluster(cluster, reactor, now=False)

    def upgradeInPlace() -> None:
        if upgrade is None:
            # Its default action would kill the master and orphan its workers.
            _log.warn("SIGUSR2: this master cannot upgrade in place")
            return
        # The upgrader logs why it did not, if it did not.
        upgrade().addErrback(lambda _: None)

    actions: dict[int, Callable[[], object]] = {
        signal.SIGHUP: cluster.reload,
        signal.SIGTTIN: cluster.scaleUp,
        signal.SIGTTOU: cluster.scaleDown,
        signal.SIGQUIT: quit,
        signal.SIGTERM: stop,
        signal.SIGINT: stop,
        signal.SIGUSR2: upgradeInPlace,
    }
    for number, action in actions.items():
        signal.signal(number, _handler(reactor, action))


def _handler(reactor: Any, action: Callable[[], object]) -> Callable[[int, Any], None]:
    # A signal may arrive anywhere: act on it in the reactor's own time.
    def handle(number: int, frame: Any) -> None:
        reactor.callFromThread(action)

    return handle
