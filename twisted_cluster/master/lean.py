"""
Start the master without loading Twisted's TLS support.

The master holds plain listening sockets and talks AMP over UNIX sockets;
TLS happens in the workers.  Yet importing the reactor (or AMP) imports
pyOpenSSL, cryptography and service_identity: about a quarter of the
master's start-up time (~50 ms, and the workers cannot start before it) and
12 MiB of its 48.

So C{twistd cluster} imports the reactor and its own modules while
C{OpenSSL} cannot be imported.  Twisted then takes TLS to be missing, and
L{withoutTLS} puts the reactor's TLS back, to be imported on first use:
C{listenSSL}, C{connectSSL}, TLS endpoints and C{twisted.internet.ssl} all
work in the master, once something uses them.  Two things stay off in the
master process (never in workers, and never in a script that is its own
master): C{ITLSTransport.startTLS} on its TCP connections, and AMP's
C{StartTLS}; Twisted decides those once, when C{tcp} and C{amp} are first
imported.

Where TLS is loaded before the master gets to run (a twistd whose plugin
cache is missing or stale imports every plugin, TLS among them, to write
it), nothing is kept out and nothing changes.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..internals import giveReactorTLS, reactorLacksTLS, reactorTLSDecided

BLOCKED = "OpenSSL"


@contextmanager
def withoutTLS() -> Iterator[bool]:
    """
    Within the block, Twisted's TLS support cannot be imported; afterwards
    the reactor's comes back, loading on first use.  Yields whether it was
    kept out: not if TLS or the reactor had been imported already.
    """
    if BLOCKED in sys.modules or reactorTLSDecided():
        yield False
        return
    sys.modules[BLOCKED] = None  # type: ignore[assignment]
    try:
        yield True
    finally:
        if sys.modules.get(BLOCKED, ...) is None:
            del sys.modules[BLOCKED]
        _restoreReactorTLS()


def _restoreReactorTLS() -> None:
    if not reactorLacksTLS():
        return
    if importlib.util.find_spec(BLOCKED) is None:
        return  # No TLS here at all, as Twisted found.
    giveReactorTLS(
        _OnFirstUse("twisted.protocols.tls"), _OnFirstUse("twisted.internet.ssl")
    )


class _OnFirstUse:
    """
    Stands for module C{name}, imported when one of its attributes is first
    asked for.  (Not L{importlib.util.LazyLoader}: Twisted's deprecation
    machinery replaces some modules in C{sys.modules} while they load,
    which it refuses.)
    """

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self._name), attribute)
