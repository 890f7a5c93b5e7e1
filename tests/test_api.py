"""
Node's cluster API on real processes (contract sections 2 and 3).

One run of tests/apps/api.py exercises the API from its master; the tests
below each check one part of what it saw.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .support import (
    APPS,
    ROOT,
    freePort,
    killTree,
    processExists,
    waitFor,
    workersAnswering,
)

API = APPS / "api.py"


def runScript(script: Path, **env: str) -> Any:
    """
    Run a script-mode app to its end; what its master printed as
    C{RESULT <json>}.  Every process it made is killed, however it ends.
    """
    process = subprocess.Popen(
        [sys.executable, str(script)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=60)
    finally:
        killTree(process)
    for line in output.decode().splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise AssertionError(output.decode()[-3000:])


@pytest.fixture(scope="module")
def api() -> dict:
    result: dict = runScript(API, DELAY="1")
    return result


def test_eventsInOrder(api: dict) -> None:
    assert api["events1"] == [
        ["fork", 1],
        ["online", 1],
        ["listening", 1],
        ["disconnect", 1],
        ["exit", 1],
    ]
    for workerId in range(1, 7):
        names = [e[0] for e in api["allEvents"] if e[1] == workerId]
        expected = ["fork", "online", "listening", "disconnect", "exit"]
        assert names == expected, (workerId, names)
    assert api["state1"] == "listening"
    assert api["ids"] == [1]


def test_disconnectLetsConnectionsFinish(api: dict) -> None:
    assert api["answerDuringDisconnect"] == "accepted done"
    assert api["after1"] == {
        "exitedAfterDisconnect": True,
        "state": "dead",
        "isDead": True,
        "inWorkers": False,
        "exitCode": 0,
    }


def test_exitedAfterDisconnect(api: dict) -> None:
    assert api["kill"] == [False, None, "SIGTERM"]
    assert api["selfDisconnect"] == [True, 0, None]
    assert api["crash"] == [False, 3, None]
    assert api["afterDisconnectAll"] == {
        "workers": [],
        "exited": [True, True],
        "afterDisconnect": [True, True],
    }


def test_forkEnv(api: dict) -> None:
    assert api["env"]["env"] == "yes"
    # The worker's start-up heap is out of the collector's way.
    assert api["env"]["frozen"] > 10_000


def test_messages(api: dict) -> None:
    assert api["echoInOrder"] is True
    assert api["toWorkerInOrder"] == {"inOrder": True}
    assert api["bigToWorker"] is True
    assert api["bigToMaster"] is True


def test_typeError(api: dict) -> None:
    assert "not JSON serializable" in api["typeError"]
    assert api["usableAfterTypeError"] is True


def test_lostChannelEndsWorker(tmp_path: Path) -> None:
    """
    A worker whose channel to the master closes exits, though its lifeline
    (the master's other sign of life) is still open.
    """
    ours, theirs = socket.socketpair()
    lifelineRead, lifelineWrite = os.pipe()
    script = tmp_path / "worker.py"
    script.write_text(
        "from twisted.internet import reactor, protocol\n"
        "from twisted_cluster import cluster\n"
        "assert cluster.isWorker\n"
        "reactor.run()\n"
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import os; os.dup2({theirs.fileno()}, 3); "
            f"os.dup2({lifelineRead}, 4); os.execv({sys.executable!r}, "
            f"[{sys.executable!r}, {str(script)!r}])",
        ],
        env={**os.environ, "TWISTED_CLUSTER_WORKER_ID": "1"},
        pass_fds=(theirs.fileno(), lifelineRead),
    )
    try:
        theirs.close()
        os.close(lifelineRead)
        ours.settimeout(10)
        assert ours.recv(1000)  # its Online: it is up
        ours.close()
        assert worker.wait(5) == 0
    finally:
        worker.kill()
        worker.wait()
        os.close(lifelineWrite)


def runExample(name: str, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / name)],
        env={**os.environ, "PORT": str(port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stopExample(process: subprocess.Popen[bytes]) -> str:
    process.send_signal(signal.SIGINT)
    try:
        output, _ = process.communicate(timeout=10)
    finally:
        killTree(process)
    return output.decode()


def http(port: int):
    def connect() -> socket.socket:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        return s

    return connect


def body(answer: str) -> str:
    return answer.split("\r\n\r\n", 1)[1]


def test_exampleServer() -> None:
    """
    Node's example: one worker per CPU, all serving one port.
    """
    port = freePort()
    cpus = len(os.sched_getaffinity(0))
    process = runExample("server.py", port)
    try:
        seen = workersAnswering(http(port), cpus, who=lambda a: body(a).split()[-1])
        assert set(seen) == {str(n) for n in range(1, cpus + 1)}
    finally:
        output = stopExample(process)
    assert "is running" in output and "started" in output


def test_exampleMessages() -> None:
    """
    Workers report each request; the master counts them every second.
    """
    port = freePort()
    process = runExample("messages.py", port)
    try:
        for _ in range(5):
            waitFor(lambda: _get(port), what="an answer")
        # The count is printed every second; wait until one says 5.
        assert process.stdout is not None
        deadline = time.monotonic() + 10
        line = b""
        while b"numReqs = 5" not in line and time.monotonic() < deadline:
            line = process.stdout.readline()
        assert b"numReqs = 5" in line
    finally:
        stopExample(process)


def _get(port: int) -> str:
    try:
        with http(port)() as s:
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        return body(data.decode())
    except OSError:
        return ""


def test_exampleDeath() -> None:
    """
    A killed worker is replaced by the master's death handler.
    """
    port = freePort()
    process = runExample("death.py", port)
    try:
        seen = workersAnswering(http(port), 2, who=lambda a: body(a).split()[-1])
        assert set(seen) == {"1", "2"}
        workers = [
            int(entry)
            for entry in os.listdir("/proc")
            if entry.isdigit() and _parent(int(entry)) == process.pid
        ]
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        waitFor(lambda: _get(port).endswith("worker 3\n"), what="worker 3 to answer")
    finally:
        output = stopExample(process)
    assert "died (SIGKILL). restarting..." in output
    waitFor(lambda: not any(processExists(p) for p in workers), timeout=5)


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1


def test_relistenOnPortZeroGetsTheSharedPort() -> None:
    """
    As Node's test-cluster-server-restart: a worker that closes its port-0
    server and listens again while another still holds it gets the same
    shared port.
    """
    seen = runScript(APPS / "relisten.py")
    ports = {next(iter(message.values())) for _, message in seen}
    assert len(ports) == 1, seen
    assert seen[2][0] == 2 and "again" in seen[2][1]
