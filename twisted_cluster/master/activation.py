"""
systemd's socket activation: the listening sockets systemd (or anything
speaking its protocol) passed the master as descriptors 3, 4, ... become
the cluster's shared sockets for their addresses.

Not Twisted's L{twisted.python.systemd.ListenFDs}: it takes no descriptor
without C{LISTEN_FDNAMES}, which systemd before 227, and most tools that
pass sockets this way, do not set.
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping

from ..request import ListenRequest

START = 3
"""The first descriptor systemd passes (C{SD_LISTEN_FDS_START})."""

VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def activatedSockets(
    environ: MutableMapping[str, str], pid: int | None = None
) -> list[socket.socket]:
    """
    The sockets passed to this process (C{pid}), taking the variables that
    say so out of C{environ}: the workers are not the process they were
    passed to.
    """
    given = {name: environ.pop(name, "") for name in VARIABLES}
    if given["LISTEN_PID"] != str(os.getpid() if pid is None else pid):
        return []
    try:
        count = int(given["LISTEN_FDS"])
    except ValueError:
        return []
    found = []
    for fd in range(START, START + max(0, count)):
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            continue  # Not a socket: nothing of ours.
        os.set_inheritable(fd, False)
        sock.setblocking(False)
        found.append(sock)
    return found


WILDCARDS = ("0.0.0.0", "::")


def requestsOf(sock: socket.socket) -> list[ListenRequest]:
    """
    The listen requests of an app that an activated C{sock} answers: its
    address, and for a wildcard address, the app's C{listenTCP(port)} too
    (which names no interface).
    """
    if sock.family == socket.AF_UNIX:
        name = sock.getsockname()
        if not isinstance(name, str) or not name:
            return []  # An abstract or unnamed socket: no app names it.
        return [ListenRequest("unix", path=name)]
    kind = "udp" if sock.type == socket.SOCK_DGRAM else "tcp"
    host, port = sock.getsockname()[:2]
    requests = [ListenRequest(kind, interface=host, port=port)]
    if host in WILDCARDS:
        requests.append(ListenRequest(kind, interface="", port=port))
    return requests
