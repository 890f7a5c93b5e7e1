"""
The AMP commands spoken over the control socket, between the
C{twisted-cluster} command (the client) and a master.

Only JSON data crosses it.  A command that takes a while (reload, scale,
stop, upgrade) has the master send the client L{Progress} lines until it answers.
"""

from __future__ import annotations

from twisted.protocols import amp

from ..commands import JSON


class Refused(Exception):
    """
    The master will not do what it was asked; the reason is the message.
    """


_ERRORS: dict[type[Exception], bytes] = {Refused: b"REFUSED"}


class Status(amp.Command):
    """
    The cluster's status document (L{twisted_cluster.master.status}).
    """

    arguments = []
    response = [(b"status", JSON())]
    errors = _ERRORS


class Reload(amp.Command):
    """
    Replace every worker, as SIGHUP does; answered when it is done.
    """

    arguments = []
    response = []
    errors = _ERRORS


class Scale(amp.Command):
    """
    Run C{count} workers, or C{count} more or fewer with C{relative};
    answered once they serve and those retired are gone.
    """

    arguments = [(b"count", amp.Integer()), (b"relative", amp.Boolean())]
    response = [(b"count", amp.Integer())]
    errors = _ERRORS


class Stop(amp.Command):
    """
    Stop the cluster, gracefully or (C{now}) at once, as SIGTERM and SIGQUIT
    do; answered at once: the connection closes when the master has exited.
    """

    arguments = [(b"now", amp.Boolean())]
    response = []
    errors = _ERRORS


class Upgrade(amp.Command):
    """
    Replace the master's code in place, as SIGUSR2 does.  Refused (with
    why) if the master supervises on; otherwise never answered: the
    connection closes as the master executes the new code, and the client
    asks the new image's L{Status} whether it took over.
    """

    arguments = []
    response = []
    errors = _ERRORS


class Send(amp.Command):
    """
    Send C{message} to worker C{worker} (an id), or to every worker (C{0});
    answered with how many it went to, once each has it.
    """

    arguments = [(b"worker", amp.Integer()), (b"message", JSON())]
    response = [(b"sent", amp.Integer())]
    errors = _ERRORS


class Progress(amp.Command):
    """
    Master to client: a line saying how a command it is carrying out goes.
    """

    arguments = [(b"line", amp.Unicode())]
    response = []
    requiresAnswer = False
