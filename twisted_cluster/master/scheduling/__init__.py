"""
How connections reach workers: one interface, L{IScheduling}, and an
implementation per policy.

The master forks workers and knows them; what a policy decides (whether a
worker slot has a socket of its own, whether the master accepts and hands
connections over, what happens to a leaving worker's share) is asked of its
L{IScheduling} and nowhere else:

  - L{Shared}: every worker accepts on the one socket of an address;
  - L{ReusePort}: each worker slot has a TCP socket of its own on the port
    (C{SO_REUSEPORT}), and the kernel spreads connections over them; a slot
    whose worker goes is adopted by a staying worker;
  - L{RoundRobin}: the master accepts and
    hands each connection to the least busy worker;
  - L{Sticky}: as round robin, but a client
    address keeps going to the worker that first got it while it lives.

UNIX and UDP addresses are one shared socket under every policy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.logger import Logger

from ..listeners import REUSEPORT
from .interface import IScheduling, Pool
from .kernel import ReusePort, Shared
from .roundrobin import RoundRobin
from .sticky import Sticky

if TYPE_CHECKING:
    from ..process import Worker

__all__ = [
    "SCHEDULING",
    "IScheduling",
    "Pool",
    "ReusePort",
    "RoundRobin",
    "Shared",
    "Sticky",
    "byName",
]

SCHEDULING = ("reuseport", "shared", "roundrobin", "sticky")
"""The names of the policies, for C{--scheduling} and C{setupMaster}."""

_log = Logger()


def byName(
    name: str, reactor: object, available: Callable[[Worker], bool]
) -> IScheduling:
    """
    The policy called C{name} (one of L{SCHEDULING}).  C{reuseport} where
    C{SO_REUSEPORT} does not balance (anywhere but Linux) is C{shared}, with
    a warning.

    @param reactor: the reactor a policy that accepts in the master reads with.
    @param available: whether a worker may be handed connections now.
    @raise ValueError: for an unknown name.
    """
    if name == "reuseport":
        if REUSEPORT:
            return ReusePort()
        _log.warn("SO_REUSEPORT does not balance here; sharing one socket")
        return Shared()
    if name == "shared":
        return Shared()
    if name == "roundrobin":
        return RoundRobin(reactor, available)
    if name == "sticky":
        return Sticky(reactor, available)
    raise ValueError(f"scheduling must be one of {', '.join(SCHEDULING)}")
