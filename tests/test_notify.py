"""
systemd's notifications: the messages a master sends on C{NOTIFY_SOCKET},
in order, on fakes and from a real cluster, and the watchdog's pings.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from twisted_cluster.master.notify import SystemdNotifier

from .support import get, waitFor, webCluster


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.setblocking(False)
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


def test_fromEnvironmentTakesSystemdsVariables(tmp_path: Path) -> None:
    environ = {
        "NOTIFY_SOCKET": str(tmp_path / "n"),
        "WATCHDOG_USEC": "2000000",
        "WATCHDOG_PID": str(os.getpid()),
        "OTHER": "x",
    }
    notifier = SystemdNotifier.fromEnvironment(Clock(), environ)
    assert notifier is not None and notifier._watchdog == 2.0
    assert environ == {"OTHER": "x"}  # no worker inherits them
    assert SystemdNotifier.fromEnvironment(Clock(), {}) is None


def test_watchdogOfAnotherProcessIsNotOurs(tmp_path: Path) -> None:
    environ = {
        "NOTIFY_SOCKET": str(tmp_path / "n"),
        "WATCHDOG_USEC": "2000000",
        "WATCHDOG_PID": "1",
    }
    notifier = SystemdNotifier.fromEnvironment(Clock(), environ)
    assert notifier is not None and notifier._watchdog is None


def test_stateChangesInOrder(listener: socket.socket) -> None:
    clock = Clock()
    notifier = SystemdNotifier(
        listener.getsockname(), clock, watchdog=None, monotonic=lambda: 1234
    )
    notifier.stateChanged("starting", "running")
    notifier.servingChanged(2, 2)
    notifier.stateChanged("running", "reloading")
    notifier.stateChanged("reloading", "running")
    notifier.stateChanged("running", "stopping")
    assert received(listener) == [
        "READY=1\nSTATUS=serving",
        "STATUS=2 of 2 workers serving",
        "RELOADING=1\nMONOTONIC_USEC=1234\nSTATUS=reloading",
        "READY=1\nSTATUS=serving",
        "STOPPING=1\nSTATUS=stopping",
    ]


def test_watchdogPingsEveryHalfInterval(listener: socket.socket) -> None:
    clock = Clock()
    notifier = SystemdNotifier(listener.getsockname(), clock, watchdog=2.0)
    notifier.startService()
    for _ in range(10):
        clock.advance(1.0)
    notifier.stopService()
    clock.advance(5.0)
    assert received(listener) == ["WATCHDOG=1"] * 11  # at start, then each second


def test_abstractNamespaceAddress() -> None:
    name = f"twisted-cluster-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.setblocking(False)
    try:
        SystemdNotifier("@" + name, Clock()).send("READY=1")
        assert received(sock) == ["READY=1"]
    finally:
        sock.close()


def test_aMissingSocketIsSaidOnce(tmp_path: Path) -> None:
    from twisted.logger import globalLogPublisher

    seen: list[dict] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        notifier = SystemdNotifier(str(tmp_path / "nobody-listens"), Clock())
        notifier.send("READY=1")
        notifier.send("STATUS=x")
    finally:
        globalLogPublisher.removeObserver(seen.append)
    said = [e for e in seen if "Cannot notify systemd" in e.get("log_format", "")]
    assert len(said) == 1


@pytest.mark.timeout(60)
def test_realCluster(cluster, tmp_path: Path, listener: socket.socket) -> None:
    """
    A real master: READY once its workers serve, RELOADING then READY
    around a SIGHUP, STOPPING at SIGTERM; watchdog pings at half the
    interval; its workers do not inherit systemd's variables.
    """
    c, port = webCluster(
        cluster,
        tmp_path,
        env={"NOTIFY_SOCKET": listener.getsockname(), "WATCHDOG_USEC": "400000"},
    )
    seen: list[str] = []

    def has(text: str) -> bool:
        seen.extend(received(listener))
        return any(text in m for m in seen)

    waitFor(lambda: has("READY=1"), what="READY")
    assert get(port).split()[2] == "v1"
    for pid in c.workerPids():
        environ = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
        assert not [v for v in environ if v.startswith((b"NOTIFY_", b"WATCHDOG_"))]
    # Pings every 0.2 s (half of WATCHDOG_USEC): ten take about 1.8 s.
    times: list[float] = []

    def pinged() -> bool:
        now = received(listener)
        seen.extend(now)
        times.extend(time.monotonic() for m in now if m == "WATCHDOG=1")
        return len(times) >= 11

    waitFor(pinged, what="ten watchdog pings")
    assert 1.4 <= times[10] - times[0] <= 2.6, times
    c.signal(signal.SIGHUP)
    waitFor(lambda: has("RELOADING=1"), what="RELOADING")

    def readies() -> int:
        seen.extend(received(listener))
        return sum(m.startswith("READY=1") for m in seen)

    waitFor(lambda: readies() == 2, what="READY again")
    c.signal(signal.SIGTERM)
    waitFor(lambda: has("STOPPING=1"), what="STOPPING")
    assert c.wait() == 0
    seen.extend(received(listener))
    news = [m.split("\n")[0] for m in seen if m != "WATCHDOG=1"]
    firsts = [m for m in news if not m.startswith("STATUS=")]
    assert firsts == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]
    assert any(m.startswith("STATUS=2 of 2 workers serving") for m in news)
    assert "MONOTONIC_USEC=" in next(m for m in seen if m.startswith("RELOADING"))
