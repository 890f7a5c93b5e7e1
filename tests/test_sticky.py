"""
C{--scheduling sticky} on real processes: a client address keeps going to
one worker while it lives; different addresses spread; a dead worker's
clients move to a live one.
"""

from __future__ import annotations

import os
import signal
import socket
from collections import Counter
from pathlib import Path

import pytest

from .support import APPS, freePort, waitFor

LISTEN = APPS / "listen.tac"


def greetFrom(address: str, port: int) -> tuple[str, int]:
    """
    The worker id and pid that greet a new connection from C{address}.
    """
    with socket.create_connection(
        ("127.0.0.1", port), timeout=5, source_address=(address, 0)
    ) as s:
        s.settimeout(5)
        chunks = []
        while chunk := s.recv(1024):
            chunks.append(chunk)
    workerId, pid = b"".join(chunks).decode().split()
    return workerId, int(pid)


def greeted(address: str, port: int) -> tuple[str, int] | None:
    # A connection the dying worker held is reset; the next is not.
    try:
        return greetFrom(address, port)
    except (OSError, ValueError):
        return None


@pytest.mark.timeout(90)
def test_stickyClientsStayAndMove(cluster, tmp_path: Path) -> None:
    port = freePort()
    env = {
        "LISTEN_STYLE": "listenTCP",
        "LISTEN_PORT": str(port),
        "REPORT_DIR": str(tmp_path),
    }
    c = cluster(LISTEN, workers=3, env=env, args=["--scheduling", "sticky"])
    waitFor(lambda: len(list(tmp_path.glob("port-*"))) == 3, what="3 listening")

    # Different addresses spread: the first three go to the three workers.
    addresses = [f"127.0.0.{n}" for n in range(2, 8)]
    first = {address: greetFrom(address, port) for address in addresses}
    assert len({first[a] for a in addresses[:3]}) == 3

    # Many connections from one address land on one worker, each address its own.
    for address in addresses:
        assert {greetFrom(address, port) for _ in range(15)} == {first[address]}

    # The worker of 127.0.0.2 dies: its clients move to a live worker, and stay.
    victim, victimPid = first["127.0.0.2"]
    survivors = {pid for _, pid in first.values() if pid != victimPid}
    os.kill(victimPid, signal.SIGKILL)
    moved = waitFor(
        lambda: (g := greeted("127.0.0.2", port)) and g[1] != victimPid and g,
        what="127.0.0.2 served by another worker",
    )
    assert moved[1] in survivors
    assert {greetFrom("127.0.0.2", port) for _ in range(15)} == {moved}
    # Other clients of the dead worker move too; the rest do not.
    for address in addresses[1:]:
        now = greetFrom(address, port)
        if first[address][1] == victimPid:
            assert now[1] in survivors
        else:
            assert now == first[address]
    # The replacement gets new addresses, not those that moved.
    waitFor(lambda: len(c.workerPids()) == 3, what="a replacement")
    waitFor(lambda: len(list(tmp_path.glob("port-*"))) == 4, what="it listens")
    later = Counter(greetFrom(f"127.0.0.{n}", port)[1] for n in range(20, 29))
    assert len(later) == 3 and victimPid not in later
    assert greetFrom("127.0.0.2", port) == moved
