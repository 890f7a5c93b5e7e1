"""
Graceful stop, rolling reload, scaling, hung workers and recycling, on real
clusters under a steady stream of requests (contract section 4).
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from .support import APPS, Load, ask, freePort, get, processExists, tcp, waitFor

WEB = APPS / "web.tac"


def start(cluster, tmp_path: Path, workers: int = 2, args=(), version: str = "v1"):
    port = freePort()
    versionFile = tmp_path / "version.txt"
    versionFile.write_text(version)
    c = cluster(
        WEB,
        workers=workers,
        env={"PORT": str(port), "VERSION_FILE": str(versionFile)},
        args=list(args),
    )
    waitFor(lambda: len(servingPids(port)) == workers, what=f"{workers} workers")
    return c, port, versionFile


def servingPids(port: int, tries: int = 60, path: str | None = "/") -> set[int]:
    """
    The pids that answer C{tries} new connections: over HTTP, or (with no
    C{path}) from the greeting of tests/apps/listen.tac.
    """
    pids = set()
    for _ in range(tries):
        try:
            answer = get(port, path, timeout=2) if path else ask(tcp(port))
            pids.add(int(answer.split()[1]))
        except OSError:
            pass
    return pids


def test_gracefulStop(cluster, tmp_path: Path) -> None:
    """
    SIGTERM lets a 2 s request in flight complete; the master exits 0 and
    leaves no worker.
    """
    c, port, _ = start(cluster, tmp_path)
    workers = c.workerPids()
    answer: list[str] = []
    slow = threading.Thread(target=lambda: answer.append(get(port, "/slow?s=2")))
    slow.start()
    waitFor(lambda: "slow request started" in c.log(), what="the slow request")
    c.signal(signal.SIGTERM)
    assert c.wait(20) == 0
    slow.join(5)
    assert answer and answer[0].split()[2] == "v1"
    assert not any(processExists(p) for p in workers)
    assert "All workers have stopped" in c.log()


@pytest.mark.parametrize("scheduling", ["reuseport", "roundrobin"])
def test_rollingReload(cluster, tmp_path: Path, scheduling: str) -> None:
    """
    SIGHUP replaces every worker, loses no request, and the new workers run
    the changed code, however connections reach them.
    """
    c, port, versionFile = start(cluster, tmp_path, args=["--scheduling", scheduling])
    old = set(c.workerPids())
    with Load(port) as load:
        waitFor(lambda: len(load.answers) > 20)
        versionFile.write_text("v2")
        c.signal(signal.SIGHUP)
        waitFor(lambda: "Reload done" in c.log(), timeout=30, what="the reload")
        waitFor(lambda: not set(c.workerPids()) & old, what="the old workers to go")
        mark = len(load.answers)
        waitFor(lambda: len(load.answers) > mark + 50)
    assert load.failures == []
    new = set(c.workerPids())
    assert len(new) == 2 and not new & old
    assert {a.split()[2] for a in load.answers[mark:]} == {"v2"}


def test_brokenReloadKeepsOldWorkers(cluster, tmp_path: Path) -> None:
    c, port, versionFile = start(cluster, tmp_path)
    old = set(c.workerPids())
    versionFile.unlink()  # the app now fails to load
    c.signal(signal.SIGHUP)
    waitFor(lambda: "Reload aborted" in c.log(), timeout=30, what="the abort")
    assert "could not start" in c.log()
    assert servingPids(port) == old
    assert set(c.workerPids()) == old
    assert c.process is not None and c.process.poll() is None


def test_scaling(cluster, tmp_path: Path) -> None:
    c, port, _ = start(cluster, tmp_path)
    c.signal(signal.SIGTTIN)
    waitFor(lambda: len(servingPids(port)) == 3, what="a third worker")
    with Load(port) as load:
        c.signal(signal.SIGTTOU)
        waitFor(lambda: len(c.workerPids()) == 2, what="one fewer worker")
        mark = len(load.answers)
        waitFor(lambda: len(load.answers) > mark + 20)
    assert load.failures == []
    assert len(load.pids(mark)) == 2


def test_hungWorkerReplaced(cluster, tmp_path: Path) -> None:
    """
    A worker stuck in a blocking call in a request handler is killed after
    --timeout and replaced; the log says which and why.
    """
    c, port, _ = start(cluster, tmp_path, args=["--timeout", "2"])
    before = set(c.workerPids())
    stuck = threading.Thread(target=lambda: _ignore(lambda: get(port, "/block", 30)))
    stuck.start()
    waitFor(
        lambda: "has not answered heartbeats" in c.log(), timeout=15, what="detection"
    )
    waitFor(lambda: len(set(c.workerPids()) - before) == 1, what="a replacement")
    waitFor(lambda: len(servingPids(port)) == 2, what="two workers serving")
    # SIGABRT first, so the stuck worker says where it was stuck.
    assert "Fatal Python error: Aborted" in c.log()
    assert "in render_GET" in c.log()


def _ignore(f) -> None:
    try:
        f()
    except OSError:
        pass


def test_maxAgeRecycles(cluster, tmp_path: Path) -> None:
    c, port, _ = start(cluster, tmp_path, args=["--max-age", "2"])
    first = set(c.workerPids())
    with Load(port) as load:
        waitFor(lambda: not set(c.workerPids()) & first, timeout=20, what="recycling")
        mark = len(load.answers)
        waitFor(lambda: len(load.answers) > mark + 20)
    assert load.failures == []
    assert "older than" in c.log()


def test_maxMemoryRecycles(cluster, tmp_path: Path) -> None:
    c, port, _ = start(cluster, tmp_path, args=["--max-memory", "150"])
    with Load(port) as load:
        fat = int(get(port, "/grow?mb=200").split()[1])
        waitFor(
            lambda: fat not in c.workerPids(), timeout=20, what="the fat worker to go"
        )
        mark = len(load.answers)
        waitFor(lambda: len(load.answers) > mark + 20)
    assert load.failures == []
    assert "MB resident, over 150 MB" in c.log()
    assert len(c.workerPids()) == 2


def test_spareReplacesKilledWorker(cluster, tmp_path: Path) -> None:
    """
    With a warm spare, a killed worker's place is taken by the spare, which
    had loaded the app already; no request fails but one the killed worker
    had accepted, and a new spare follows.
    """
    c, port, _ = start(cluster, tmp_path, args=["--spares", "1"])
    waitFor(lambda: "Worker 3 (pid" in c.log(), what="the spare to be online")
    spare = int(c.log().split("Worker 3 (pid ")[1].split(")")[0])
    serving = servingPids(port)
    assert spare not in serving
    with Load(port) as load:
        os.kill(min(serving), signal.SIGKILL)
        waitFor(lambda: spare in load.pids(), what="the spare to serve")
        waitFor(lambda: "Worker 4 (pid" in c.log(), what="a new spare")
        mark = len(load.answers)
        waitFor(lambda: len(load.answers) > mark + 20)
    # The one request the killed worker may have had in hand is lost with it
    # (the load is one request at a time); nothing else is.
    assert len(load.failures) <= 1, load.failures
    lost = ("Reset", "BrokenPipe", "bad answer")
    assert all(any(w in f for w in lost) for f in load.failures), load.failures
    assert "Spare worker 3 takes slot" in c.log()
    assert len(c.workerPids()) == 3  # two serving, one spare


def test_appListeningWhileLoadingHasNoSpare(cluster, tmp_path: Path) -> None:
    port = freePort()
    env = {"LISTEN_STYLE": "endpoint-tcp", "LISTEN_PORT": str(port)}
    c = cluster(APPS / "listen.tac", workers=2, env=env, args=["--spares", "1"])
    waitFor(lambda: "cannot wait as a warm spare" in c.log(), what="the warning")
    waitFor(lambda: len(c.workerPids()) == 2, what="the spare to go")
    assert len(servingPids(port, path=None)) == 2
    assert c.process is not None and c.process.poll() is None


@pytest.mark.parametrize("spares", ["0", "1"])
def test_replacementTakesTheSlot(cluster, tmp_path: Path, spares: str) -> None:
    """
    Each worker has a slot, 1..N; the worker that replaces a killed one has
    its slot (a spare as well as a cold start).
    """
    c, port, _ = start(cluster, tmp_path, args=["--spares", spares])

    def slots() -> dict[int, int]:
        found = {}
        for _ in range(40):
            _, pid, slot = get(port, "/slot", timeout=2).split()
            found[int(slot)] = int(pid)
        return found

    waitFor(lambda: len(slots()) == 2, what="both slots to answer")
    first = slots()
    assert sorted(first) == [1, 2]
    os.kill(first[1], signal.SIGKILL)
    waitFor(
        lambda: (now := slots()).keys() == {1, 2} and now[1] != first[1],
        what="slot 1 served by a new worker",
    )
    assert slots()[2] == first[2]
