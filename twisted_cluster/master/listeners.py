"""
The master's listening sockets.

The master binds every address the app listens on, once, with the C{socket}
module (a Twisted port would C{shutdown(2)} it on stop, breaking every worker
sharing it) and keeps it until the cluster stops: its backlog holds new
connections while a worker is being replaced.
"""

from __future__ import annotations

import os
import socket
import stat
from dataclasses import dataclass
from typing import Any

from twisted.internet.abstract import isIPv6Address
from twisted.logger import Logger


@dataclass(frozen=True)
class ListenRequest:
    """
    One C{listen*} call of the app, as a worker describes it.

    @ivar occurrence: for port 0, which of the worker's port-0 listens of this
        kind and interface this is, so that every worker's first one shares
        one ephemeral port and its second one another.
    """

    kind: str
    interface: str = ""
    port: int = 0
    path: str = ""
    backlog: int = 50
    mode: int = 0o666
    occurrence: int = 0

    @property
    def key(self) -> tuple[object, ...]:
        """
        What identifies the shared socket: the same key, the same socket.
        """
        if self.kind == "unix":
            return ("unix", os.path.abspath(self.path))
        return (
            self.kind,
            self.interface,
            self.port,
            self.occurrence if self.port == 0 else 0,
        )

    def describe(self) -> str:
        """
        The address in words, for messages.
        """
        if self.kind == "unix":
            return f"UNIX socket {self.path}"
        host = self.interface or "all interfaces"
        return f"{self.kind.upper()} port {self.port} on {host}"


class BindError(Exception):
    """
    An address could not be bound; the message names it and says why.
    """


def bind(request: ListenRequest) -> socket.socket:
    """
    Create a listening (or, for UDP, bound) non-blocking socket the way
    Twisted's own C{listen*} would, or raise L{BindError}.
    """
    try:
        if request.kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: Any = request.path
        else:
            kind = socket.SOCK_DGRAM if request.kind == "udp" else socket.SOCK_STREAM
            if isIPv6Address(request.interface):
                family = socket.AF_INET6
                address = socket.getaddrinfo(
                    request.interface,
                    request.port,
                    family,
                    kind,
                    0,
                    socket.AI_NUMERICHOST,
                )[0][4]
            else:
                family = socket.AF_INET
                address = (request.interface, request.port)
            sock = socket.socket(family, kind)
    except OSError as e:
        raise BindError(f"cannot listen on {request.describe()}: {e}") from None
    try:
        if request.kind == "tcp":
            # As Twisted's tcp.Port does: rebinding right after a restart works.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        if request.kind == "unix":
            os.chmod(request.path, request.mode)
        if request.kind != "udp":
            sock.listen(request.backlog)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        reason = e.strerror or str(e)
        raise BindError(f"cannot listen on {request.describe()}: {reason}") from None
    return sock


class Listeners:
    """
    The sockets the master shares with its workers, by L{ListenRequest.key}.
    """

    _log = Logger()

    def __init__(self) -> None:
        self._sockets: dict[tuple[object, ...], socket.socket] = {}
        self._paths: list[str] = []

    def socketFor(self, request: ListenRequest) -> socket.socket:
        """
        The shared socket for C{request}, bound now if this is its first
        request.

        @raise BindError: if it cannot be bound.
        """
        key = request.key
        sock = self._sockets.get(key)
        if sock is None:
            sock = bind(request)
            self._sockets[key] = sock
            if request.kind == "unix":
                self._paths.append(request.path)
            self._log.info("Sharing {address}", address=describeSocket(sock))
        return sock

    def __len__(self) -> int:
        return len(self._sockets)

    def close(self) -> None:
        """
        Close every socket and remove the UNIX socket files the master made.
        """
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
        for path in self._paths:
            try:
                if stat.S_ISSOCK(os.stat(path).st_mode):
                    os.unlink(path)
            except OSError:
                pass
        self._paths.clear()


def describeSocket(sock: socket.socket) -> str:
    """
    Say what C{sock} listens on.
    """
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"UNIX socket {name}"
    kind = "UDP" if sock.type == socket.SOCK_DGRAM else "TCP"
    return f"{kind} {name[0]}:{name[1]}"
