"""
Every way a Twisted app listens is shared by all workers through one socket
the master owns (contract section 1).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from .support import (
    APPS,
    ask,
    freePort,
    tcp,
    tls,
    udp,
    udpWorkersAnswering,
    unix,
    waitFor,
    workersAnswering,
)

LISTEN = APPS / "listen.tac"

STREAM_STYLES = {
    "TCPServer": tcp,
    "strports": tcp,
    "endpoint-tcp": tcp,
    "listenTCP": tcp,
    "SSLServer": tls,
    "endpoint-ssl": tls,
    "listenSSL": tls,
    "UDPServer": udp,
    "listenUDP": udp,
}
UNIX_STYLES = ["UNIXServer", "endpoint-unix", "listenUNIX"]


def masterSockets(pid: int) -> set[str]:
    """
    The socket inodes a process holds open.
    """
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            found.add(target)
    return found


def assertOneSharedSocket(c, address: str) -> None:
    """
    The socket serving C{address} is the master's, held by every worker.
    """
    workers = c.workerPids()
    assert len(workers) == 2
    shared = masterSockets(c.pid)
    for pid in workers:
        assert masterSockets(pid) & shared, f"worker {pid} shares no socket"


@pytest.mark.parametrize("style", sorted(STREAM_STYLES))
def test_internetStyles(cluster, tmp_path: Path, pem: str, style: str) -> None:
    """
    TCP, SSL and UDP listeners, however started, are served by both workers.
    """
    udpStyle = "UDP" in style
    port = freePort(socket.SOCK_DGRAM if udpStyle else socket.SOCK_STREAM)
    env = {"LISTEN_STYLE": style, "LISTEN_PORT": str(port), "LISTEN_PEM": pem}
    c = cluster(LISTEN, workers=2, env=env)
    if udpStyle:
        seen = udpWorkersAnswering(port, 2)
    else:
        seen = workersAnswering(STREAM_STYLES[style](port), 2)
    assert set(seen) == {"1", "2"}
    assertOneSharedSocket(c, f"127.0.0.1:{port}")
    assert "Sharing" in c.log()


@pytest.mark.parametrize("style", UNIX_STYLES)
def test_unixStyles(cluster, tmp_path: Path, style: str) -> None:
    """
    UNIX listeners are served by both workers; the master removes the socket
    file when it stops.
    """
    path = str(tmp_path / "app.sock")
    c = cluster(LISTEN, workers=2, env={"LISTEN_STYLE": style, "LISTEN_PATH": path})
    seen = workersAnswering(unix(path), 2)
    assert set(seen) == {"1", "2"}
    assertOneSharedSocket(c, path)
    c.signal(15)
    c.wait()
    assert not os.path.exists(path)


def test_portZero(cluster, tmp_path: Path) -> None:
    """
    Port 0 gives every worker the same ephemeral port, which getHost() tells.
    """
    reports = tmp_path / "reports"
    reports.mkdir()
    env = {"LISTEN_STYLE": "listenTCP", "LISTEN_PORT": "0", "REPORT_DIR": str(reports)}
    cluster(LISTEN, workers=2, env=env)
    files = waitFor(
        lambda: len(list(reports.iterdir())) == 2 and list(reports.iterdir())
    )
    ports = {waitFor(f.read_text) for f in files}
    assert len(ports) == 1
    port = int(ports.pop())
    assert port > 0
    assert set(workersAnswering(tcp(port), 2)) == {"1", "2"}


def test_exampleServes(cluster) -> None:
    """
    The README's example answers from every worker.
    """
    port = freePort()
    example = Path(__file__).parent.parent / "examples" / "server.tac"
    cluster(example, workers=2, env={"PORT": str(port)})

    def get() -> socket.socket:
        s = tcp(port)()
        s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        return s

    def worker(answer: str) -> str:
        body = answer.split("\r\n\r\n", 1)[1]
        assert body.startswith("hello from worker ")
        return body.split()[3]

    assert set(workersAnswering(get, 2, who=worker)) == {"1", "2"}


def test_roundRobinHandsOutConnectionsInTurn(cluster, pem: str) -> None:
    """
    With --scheduling roundrobin the master accepts and hands connections
    to the workers in turn (TLS too: the workers do it).
    """
    port = freePort()
    env = {"LISTEN_STYLE": "listenSSL", "LISTEN_PORT": str(port), "LISTEN_PEM": pem}
    c = cluster(LISTEN, workers=2, env=env, args=["--scheduling", "roundrobin"])
    workersAnswering(tls(port), 2)
    answers = [ask(tls(port)).split()[0] for _ in range(20)]
    assert answers.count("1") == answers.count("2") == 10
    assert all(a != b for a, b in zip(answers, answers[1:], strict=False))
    assert "roundrobin" not in c.stderr()


def test_roundRobinToLeastBusy(cluster, tmp_path: Path) -> None:
    """
    Round robin hands a connection to the worker with the fewest open ones:
    once a worker's connections close, the next ones go to it.
    """
    port = freePort()
    env = {
        "LISTEN_STYLE": "listenTCP",
        "LISTEN_PORT": str(port),
        "HOLD": "1",
        "REPORT_DIR": str(tmp_path),
    }
    cluster(LISTEN, workers=2, env=env, args=["--scheduling", "roundrobin"])
    held: dict[str, list[socket.socket]] = {}

    def hold() -> str:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        worker, pid = s.makefile().readline().split()
        held.setdefault(pid, []).append(s)
        return pid

    waitFor(lambda: len(list(tmp_path.glob("port-*"))) == 2, what="both listening")
    for _ in range(6):
        hold()
    assert sorted(len(connections) for connections in held.values()) == [3, 3]
    freed, busy = held
    for s in held.pop(freed):
        s.close()
    closed = tmp_path / f"closed-{freed}"
    waitFor(lambda: closed.exists() and closed.read_text() == "xxx", what="closes")
    assert [hold() for _ in range(3)] == [freed] * 3
    assert hold() != hold()  # Level again: in turn.
    for connections in held.values():
        for s in connections:
            s.close()
