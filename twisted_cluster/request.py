"""
One C{listen*} call of an app, as both ends of the channel name it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from typing import Any

KINDS = ("tcp", "udp", "unix")
"""The kinds of socket an app may listen on."""

MAX_OCCURRENCE = 1024
"""More port-0 listens of one kind and interface than a worker may hold."""


@dataclass(frozen=True)
class ListenRequest:
    """
    One C{listen*} call of the app, as a worker describes it.

    @ivar occurrence: for port 0, which of the worker's port-0 listens of this
        kind and interface this is, so that every worker's first one shares
        one ephemeral port and its second one another.
    @ivar wantPID: for UNIX sockets, whether a lock file guards the path (as
        C{listenUNIX(wantPID=True)}), so that a stale socket file left by a
        killed cluster is removed.
    """

    kind: str
    interface: str = ""
    port: int = 0
    path: str = ""
    backlog: int = 50
    mode: int = 0o666
    occurrence: int = 0
    wantPID: bool = False

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

    def toJSON(self) -> dict[str, Any]:
        """
        The request as a JSON value (an object of its fields).
        """
        return asdict(self)

    def toBytes(self) -> bytes:
        """
        The request as JSON, for the channel.
        """
        return json.dumps(self.toJSON(), separators=(",", ":")).encode()

    @classmethod
    def fromBytes(cls, data: bytes) -> ListenRequest:
        """
        The request L{toBytes} wrote.

        @raise ValueError: if C{data} is not one, field by field.
        """
        return cls.fromJSON(json.loads(data))

    @classmethod
    def fromJSON(cls, values: object) -> ListenRequest:
        """
        The request L{toJSON} gave.

        @raise ValueError: if C{values} is not one, field by field.
        """
        if not isinstance(values, dict) or set(values) != {f.name for f in _FIELDS}:
            raise ValueError("a listen request has exactly the fields of one")
        for field in _FIELDS:
            value = values[field.name]
            wanted = _TYPES[field.name]
            if type(value) is not wanted:
                raise ValueError(f"a listen request's {field.name} is a {wanted}")
        request = cls(**values)
        if request.kind not in KINDS:
            raise ValueError(f"no such kind of socket: {request.kind[:16]!r}")
        if (
            not 0 <= request.port < 65536
            or not 0 <= request.occurrence < MAX_OCCURRENCE
        ):
            raise ValueError("a listen request's port or occurrence is out of range")
        if not 0 <= request.mode <= 0o777:
            raise ValueError("a listen request's mode is out of range")
        return request


_FIELDS = fields(ListenRequest)
_TYPES = {
    "kind": str,
    "interface": str,
    "port": int,
    "path": str,
    "backlog": int,
    "mode": int,
    "occurrence": int,
    "wantPID": bool,
}
