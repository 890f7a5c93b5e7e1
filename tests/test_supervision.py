"""
The master replaces dead workers, gives up on an app that cannot start, and
leaves no worker behind when it dies (contract sections 1 and 4).
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from .support import (
    APPS,
    ask,
    freePort,
    processExists,
    tcp,
    waitFor,
    workersAnswering,
)

LISTEN = APPS / "listen.tac"


def tcpCluster(cluster, workers: int = 2, **env: str):
    port = freePort()
    c = cluster(
        LISTEN,
        workers=workers,
        env={"LISTEN_STYLE": "TCPServer", "LISTEN_PORT": str(port), **env},
    )
    return c, port


def answers(port: int) -> tuple[str, int]:
    workerId, pid = ask(tcp(port)).split()
    return workerId, int(pid)


def test_killedWorkerIsReplaced(cluster) -> None:
    """
    A SIGKILLed worker is replaced by one with a new id, while the other
    worker goes on serving every client.
    """
    c, port = tcpCluster(cluster)
    workersAnswering(tcp(port), 2)
    pids = {}
    while len(pids) < 2:
        workerId, pid = answers(port)
        pids[workerId] = pid
    os.kill(pids["1"], signal.SIGKILL)
    seen: set[str] = set()
    failures = 0
    deadline = time.monotonic() + 15
    while "3" not in seen and time.monotonic() < deadline:
        try:
            seen.add(answers(port)[0])
        except OSError:
            failures += 1
    assert "3" in seen, f"no replacement answered; saw {seen}"
    assert failures == 0
    assert set(workersAnswering(tcp(port), 2)) == {"2", "3"}
    assert "Worker 1 (pid" in c.log() and "was killed by SIGKILL" in c.log()


def test_masterKilledLeavesNoWorker(cluster, tmp_path: Path) -> None:
    """
    Workers exit within 5 seconds of their master's SIGKILL, even one whose
    reactor is blocked.
    """
    reports = tmp_path / "reports"
    reports.mkdir()
    c, port = tcpCluster(cluster, BLOCK="1", REPORT_DIR=str(reports))
    waitFor(lambda: len(list(reports.iterdir())) == 2, what="both workers to block")
    workers = c.workerPids()
    assert len(workers) == 2
    c.signal(signal.SIGKILL)
    c.wait()
    start = time.monotonic()
    waitFor(
        lambda: not any(processExists(p) for p in workers),
        timeout=5.5,
        what="orphaned workers to exit",
    )
    assert time.monotonic() - start < 5.0


ERRORS = {
    "missing": (None, "no such file"),
    "syntax": ("x = (\n", "SyntaxError"),
    "noapp": ("y = 1\n", "defines no 'application'"),
    "raises": (
        "raise RuntimeError('database is down')\n",
        "RuntimeError: database is down",
    ),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_appCannotLoad(cluster, tmp_path: Path, case: str) -> None:
    """
    An app that cannot be loaded stops the master with one line naming the
    cause and a non-zero exit, within seconds.
    """
    source, expected = ERRORS[case]
    app = tmp_path / f"{case}.tac"
    if source is not None:
        app.write_text(source)
    start = time.monotonic()
    c = cluster(app, workers=2)
    assert c.wait(15) != 0
    assert time.monotonic() - start < 15
    lines = c.stderr().splitlines()
    assert len(lines) == 1, lines
    assert str(app) in lines[0] and expected in lines[0]
    assert not c.workerPids()


def test_addressInUse(cluster) -> None:
    """
    An address that cannot be bound stops the master with one line naming
    the address and the reason.
    """
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        c = cluster(
            LISTEN,
            workers=2,
            env={"LISTEN_STYLE": "TCPServer", "LISTEN_PORT": str(port)},
        )
        assert c.wait(15) != 0
    lines = c.stderr().splitlines()
    assert len(lines) == 1, lines
    assert f"TCP port {port} on 127.0.0.1" in lines[0]
    assert "Address already in use" in lines[0]


def test_stopLeavesNoWorker(cluster) -> None:
    """
    SIGTERM stops the master and all its workers.
    """
    c, port = tcpCluster(cluster)
    workersAnswering(tcp(port), 2)
    workers = c.workerPids()
    c.signal(signal.SIGTERM)
    c.wait(15)
    assert not any(processExists(p) for p in workers)


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--workers", "2"], "--app is required"),
        (["--app", "x.tac", "--workers", "0"], "must be at least 1"),
        (["--app", "x.tac", "--scheduling", "nope"], "--scheduling must be one of"),
        (["--app", "x.tac", "--master-hook", "nope:x"], "No module named 'nope'"),
        (["--app", "x.tac", "--bogus"], "--bogus not recognized"),
    ],
)
def test_badOptions(tmp_path: Path, args: list[str], expected: str) -> None:
    """
    A mistake on the command line gets one line and a non-zero exit.
    """
    import subprocess

    from .support import TWISTD

    result = subprocess.run(
        [TWISTD, "-n", "--pidfile=", "cluster", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr


@pytest.mark.timeout(60)
def test_secondSigtermIsQuiet(cluster, tmp_path) -> None:
    """
    A second SIGTERM during a graceful stop (as `timeout` or a process
    manager sends to the whole group) changes nothing and logs no error.
    """
    import signal
    import threading

    from .support import get, webCluster

    c, port = webCluster(cluster, tmp_path)
    waitFor(lambda: "Worker 2 is listening" in c.log(), what="both workers")
    slow = threading.Thread(target=lambda: get(port, "/slow?s=2"))
    slow.start()
    waitFor(lambda: "slow request started" in c.log(), what="the slow request")
    c.signal(signal.SIGTERM)
    waitFor(lambda: "-> stopping" in c.log(), what="the stop")
    c.signal(signal.SIGTERM)
    assert c.wait() == 0
    slow.join(10)
    assert "Traceback" not in c.log() and "ReactorNotRunning" not in c.log()
