"""
A worker's shared ports (twisted_cluster/worker/listening.py) on real
sockets in this process, with the master's answers made up.
"""

from __future__ import annotations

import os
import socket

import pytest_twisted
from twisted.internet import protocol, task
from twisted.internet import reactor as globalReactor
from twisted.internet.defer import succeed

from twisted_cluster.worker.listening import Answer, SharedPorts

from .support import listeningSocket


def until(check, timeout: float = 5.0):
    """
    Poll C{check} every 10 ms on the reactor until true, or fail.
    """
    deadline = globalReactor.seconds() + timeout

    def poll():
        if check():
            return True
        assert globalReactor.seconds() < deadline, f"timed out: {check}"
        return task.deferLater(globalReactor, 0.01, poll)

    return task.deferLater(globalReactor, 0, poll)


@pytest_twisted.inlineCallbacks
def test_releasedSlotIsDrainedWhenLeaving():
    """
    A connection accepted on an adopted slot's socket goes on after the slot
    is released, and the worker's leaving waits for it too.
    """
    own, other = listeningSocket(), listeningSocket()
    ports = SharedPorts(
        globalReactor,
        lambda request: Answer(os.dup(own.fileno()), socket.AF_INET),
        lambda request, slot: succeed(Answer(os.dup(other.fileno()), socket.AF_INET)),
    )
    ports.listenTCP(0, protocol.Factory.forProtocol(protocol.Protocol), 50, "127.0.0.1")
    yield ports.adopt(1)
    (adopted,) = ports._slots[1]
    client = socket.create_connection(other.getsockname())
    try:
        yield until(lambda: adopted._connections)
        yield ports.release(1)
        left = ports.stopAccepting()
        yield task.deferLater(globalReactor, 0.05, lambda: None)
        assert not left.called, "left with a connection of the released slot open"
    finally:
        client.close()
    yield left
    own.close()
    other.close()


@pytest_twisted.inlineCallbacks
def test_noAdoptionOnceLeaving():
    """
    A slot's socket that arrives after the worker began to leave is not
    served: it would accept connections the leaving worker does not wait for.
    """
    from twisted.internet.defer import Deferred

    own, other = listeningSocket(), listeningSocket()
    answer: Deferred = Deferred()
    ports = SharedPorts(
        globalReactor,
        lambda request: Answer(os.dup(own.fileno()), socket.AF_INET),
        lambda request, slot: answer,
    )
    ports.listenTCP(0, protocol.Factory.forProtocol(protocol.Protocol), 50, "127.0.0.1")
    adopting = ports.adopt(1)
    left = ports.stopAccepting()
    answer.callback(Answer(os.dup(other.fileno()), socket.AF_INET))
    yield adopting
    yield left
    assert ports._slots[1] == [] and ports.ports == []
    own.close()
    other.close()
