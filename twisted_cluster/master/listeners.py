"""
The master's listening sockets.

The master binds every address the app listens on, once, with the C{socket}
module (a Twisted port would C{shutdown(2)} it on stop, breaking every worker
sharing it) and keeps it until the cluster stops: its backlog holds new
connections while a worker is being replaced.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import stat
import struct
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.internet.abstract import isIPv6Address
from twisted.logger import Logger
from twisted.python.lockfile import FilesystemLock

from ..request import ListenRequest


class BindError(Exception):
    """
    An address could not be bound; the message names it and says why.
    """


def parseBind(description: str) -> ListenRequest:
    """
    The address a C{--bind} endpoint names, as the listen request an app's
    matching C{listen*} call makes: C{tcp:80}, C{tcp:443:interface=10.0.0.1},
    C{ssl:443} (the port under the TLS), C{udp:53}, or
    C{unix:/run/app.sock:mode=660}.

    @raise ValueError: saying what is wrong with it.
    """
    kind, *parts = _splitEndpoint(description)
    kind = {"ssl": "tcp", "tls": "tcp"}.get(kind, kind)
    if kind not in ("tcp", "udp", "unix") or not parts:
        raise ValueError(
            f"--bind {description!r}: expected tcp:PORT, ssl:PORT, udp:PORT or "
            "unix:PATH, with options such as interface=ADDRESS"
        )
    first, *rest = parts
    options: dict[str, str] = {}
    for part in rest:
        key, sep, value = part.partition("=")
        if sep:
            options[key] = value
    try:
        backlog = int(options.get("backlog", 50))
        if kind == "unix":
            mode = int(options.get("mode", "666"), 8)
            return ListenRequest("unix", path=first, backlog=backlog, mode=mode)
        port = int(first)
        if not 0 < port < 65536:
            raise ValueError(f"no such port: {port}")
    except ValueError as e:
        raise ValueError(f"--bind {description!r}: {e}") from None
    return ListenRequest(
        kind, interface=options.get("interface", ""), port=port, backlog=backlog
    )


def _splitEndpoint(description: str) -> list[str]:
    # As Twisted's endpoint strings: ":" separates, "\:" is a colon.
    parts, current, escaped = [], "", False
    for char in description:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


REUSEPORT = hasattr(socket, "SO_REUSEPORT") and sys.platform.startswith("linux")
"""Whether the kernel spreads connections over sockets sharing a port
(Linux does; BSDs accept the option but give each new connection to the
last socket bound)."""


def bind(request: ListenRequest, reusePort: bool = False) -> socket.socket:
    """
    Create a listening (or, for UDP, bound) non-blocking socket the way
    Twisted's own C{listen*} would, or raise L{BindError}.  With
    C{reusePort}, further sockets may bind the same TCP port and the kernel
    spreads connections over them.
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
            if reusePort:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        if request.kind == "unix":
            os.chmod(request.path, request.mode)
        if request.kind != "udp":
            sock.listen(request.backlog)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        reason = e.strerror or str(e)
        if e.errno == errno.EACCES and request.kind != "unix" and request.port < 1024:
            where = f":interface={request.interface}" if request.interface else ""
            reason += (
                f" (bind it before privileges are dropped: "
                f"--bind {request.kind}:{request.port}{where})"
            )
        raise BindError(f"cannot listen on {request.describe()}: {reason}") from None
    return sock


class Listeners:
    """
    The sockets the master shares with its workers.

    Every worker gets the one socket of an address, unless the scheduling
    policy gives each worker slot a socket of its own (C{reuseport}: TCP
    sockets on the same port, over which the kernel spreads new connections,
    without the master touching any); a slot's socket outlives its worker,
    so a replacement in that slot serves what queued meanwhile.

    @ivar slotNumbers: the worker slots that have sockets of their own.
    """

    _log = Logger()

    def __init__(
        self, perSlot: Callable[[ListenRequest], bool] = lambda request: False
    ) -> None:
        """
        @param perSlot: whether the policy gives each worker slot a socket of
            its own for a request's address.
        """
        self._policyPerSlot = perSlot
        self._sockets: dict[tuple[object, ...], socket.socket] = {}
        # The request each address (a key less its slot) was first bound for.
        self._requests: dict[tuple[object, ...], ListenRequest] = {}
        self._paths: list[str] = []
        self._locks: dict[str, FilesystemLock] = {}
        self.slotNumbers: set[int] = set()
        # Addresses bound ahead (before dropping privileges): one socket for
        # every slot, as another could not be bound now.
        self._bound: set[tuple[object, ...]] = set()

    def bindAhead(self, request: ListenRequest) -> socket.socket:
        """
        Bind C{request}'s address now, while this process may (as root,
        before twistd drops privileges); every slot shares the socket.

        @raise BindError: if it cannot be bound.
        """
        self._bound.add(request.key)
        return self.socketFor(request, 0)

    def adopt(self, request: ListenRequest, sock: socket.socket) -> None:
        """
        Share C{sock}, made by someone else (systemd's socket activation),
        for C{request}'s address: every slot shares it.
        """
        self._bound.add(request.key)
        self._sockets[(*request.key, 0)] = sock
        self._requests[request.key] = request
        self._log.info("Sharing {address} (activated)", address=describeSocket(sock))

    def perSlot(self, request: ListenRequest) -> bool:
        """
        Whether each worker slot has a socket of its own for C{request}'s
        address; else every worker shares one.
        """
        return self._policyPerSlot(request) and request.key not in self._bound

    def socketFor(self, request: ListenRequest, slot: int = 0) -> socket.socket:
        """
        The socket for C{request} in worker slot C{slot}, bound now if this
        is its first request.

        @raise BindError: if it cannot be bound.
        """
        perSlot = self.perSlot(request)
        if not perSlot:
            slot = 0
        key = (*request.key, slot)
        sock = self._sockets.get(key)
        if sock is not None:
            return sock
        if slot:
            # Every slot binds the port the first one got (port 0 included).
            port = self.socketFor(request, 0).getsockname()[1]
            sock = bind(replace(request, port=port), reusePort=True)
        elif request.kind == "unix" and request.wantPID:
            self._lock(request)
            try:
                sock = bind(request)
            except BindError:
                self._unlock(request.path)
                raise
        else:
            sock = bind(request, reusePort=perSlot)
        self._sockets[key] = sock
        self._requests.setdefault(request.key, request)
        if perSlot:
            self.slotNumbers.add(slot)
        if request.kind == "unix":
            self._paths.append(request.path)
        self._log.info(
            "Sharing {address}{which}",
            address=describeSocket(sock),
            which=f" (slot {slot + 1})" if perSlot else "",
        )
        return sock

    def _lock(self, request: ListenRequest) -> None:
        # As listenUNIX(wantPID=True): a lock file with the owner's pid; one
        # a dead master left is broken, and its stale socket file removed.
        lock = FilesystemLock(request.path + ".lock")
        if not lock.lock():
            raise BindError(
                f"cannot listen on {request.describe()}: "
                f"{request.path}.lock is held by a running process"
            )
        if not lock.clean:
            _removeSocketFile(request.path)
        self._locks[request.path] = lock

    def _unlock(self, path: str) -> None:
        lock = self._locks.pop(path, None)
        if lock is not None:
            lock.unlock()

    def __len__(self) -> int:
        return len(self._sockets)

    def sockets(self, request: ListenRequest) -> dict[int, socket.socket]:
        """
        The sockets of C{request}'s address, by slot.
        """
        key = request.key
        return {k[-1]: s for k, s in self._sockets.items() if k[:-1] == key}  # type: ignore[misc]

    def closeSocket(self, request: ListenRequest, slot: int) -> None:
        """
        Close the socket of C{request}'s address in C{slot} (and, with the
        last one, the UNIX socket file the master made): nobody listens on it.
        """
        sock = self._sockets.pop((*request.key, slot), None)
        if sock is None:
            return
        self._log.info(
            "No longer sharing {address}{which}",
            address=describeSocket(sock),
            which=f" (slot {slot + 1})" if slot else "",
        )
        sock.close()
        if request.kind == "unix" and not self.sockets(request):
            path = request.path
            if path in self._paths:
                self._paths.remove(path)
                _removeSocketFile(path)
            self._unlock(path)

    def stopQueueing(self) -> None:
        """
        The cluster is stopping: queue no new connections on any TCP socket
        (L{stopQueueing}); what is queued is still accepted and served.
        """
        for sock in self._sockets.values():
            if sock.family != socket.AF_UNIX and sock.type == socket.SOCK_STREAM:
                stopQueueing(sock)

    def handover(self) -> dict[str, Any]:
        """
        What the master's next image needs to share the same sockets (their
        descriptors, which it inherits, included).
        """
        return {
            "sockets": [
                {
                    "request": self._requests[key[:-1]].toJSON(),
                    "slot": key[-1],
                    "descriptor": sock.fileno(),
                }
                for key, sock in self._sockets.items()
            ],
            "bound": [self._requests[k].toJSON() for k in self._bound],
            "paths": list(self._paths),
            "locks": list(self._locks),
            "slots": sorted(self.slotNumbers),
        }

    def inherit(self, handed: dict[str, Any]) -> None:
        """
        Share the sockets the master's previous image described (L{handover}).
        """
        for entry in handed["sockets"]:
            request = ListenRequest.fromJSON(entry["request"])
            sock = socket.socket(fileno=int(entry["descriptor"]))
            sock.set_inheritable(False)
            self._sockets[(*request.key, int(entry["slot"]))] = sock
            self._requests.setdefault(request.key, request)
        self._bound.update(ListenRequest.fromJSON(body).key for body in handed["bound"])
        self._paths.extend(handed["paths"])
        for path in handed["locks"]:
            # Ours already: the lock file names this process, which it still is.
            lock = FilesystemLock(path + ".lock")
            lock.locked = lock.clean = True
            self._locks[path] = lock
        self.slotNumbers.update(int(slot) for slot in handed["slots"])

    def close(self) -> None:
        """
        Close every socket and remove the UNIX socket files the master made.
        """
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
        for path in self._paths:
            _removeSocketFile(path)
        self._paths.clear()
        for path in list(self._locks):
            self._unlock(path)


_SO_ATTACH_FILTER = 26
"""Linux's socket option for a classic BPF filter (asm-generic/socket.h)."""

_DROP_SYN = b"".join(
    struct.pack("HBBI", *instruction)
    for instruction in (
        (0x30, 0, 0, 13),  # BPF_LD | BPF_B | BPF_ABS: the TCP flags byte
        (0x45, 0, 1, 0x02),  # BPF_JMP | BPF_JSET | BPF_K: SYN set?
        (0x06, 0, 0, 0),  # BPF_RET | BPF_K: drop it
        (0x06, 0, 0, 0xFFFFFFFF),  # BPF_RET | BPF_K: let it through
    )
)
"""A classic BPF program that drops every TCP segment with SYN set.  A
listening socket's filter sees each segment from its TCP header on; the last
ACK of a handshake under way passes, so that the connection is queued (and
served) rather than left half-open, to be reset when the socket closes."""


def stopQueueing(sock: socket.socket) -> bool:
    """
    Have the kernel queue no more connections on the listening TCP socket
    C{sock}, while those it queued already wait to be accepted: it drops
    every new SYN, so that a client retries it and is refused once the
    socket is closed, rather than queued and then reset; a handshake under
    way completes, and its connection waits to be accepted too.  Whether it
    could (Linux only).
    """
    program = ctypes.create_string_buffer(_DROP_SYN)
    fprog = struct.pack("HL", len(_DROP_SYN) // 8, ctypes.addressof(program))
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
    except OSError:
        return False
    return True


def _removeSocketFile(path: str) -> None:
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass


def describeSocket(sock: socket.socket) -> str:
    """
    Say what C{sock} listens on.
    """
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"UNIX socket {name}"
    kind = "UDP" if sock.type == socket.SOCK_DGRAM else "TCP"
    return f"{kind} {name[0]}:{name[1]}"
