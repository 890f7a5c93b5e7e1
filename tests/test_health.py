"""
The health endpoint and draining: 200 while the cluster serves, 503 at
once when a graceful stop begins, while the workers serve on for the
shutdown delay; then the stop.
"""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from twisted_cluster.commands import Online, Ready
from twisted_cluster.master.health import health
from twisted_cluster.master.supervisor import Limits, State

from .support import freePort, get, waitFor, webCluster
from .test_supervisor import Harness

APPS = Path(__file__).parent / "apps"


def probe(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_healthFollowsTheCluster() -> None:
    h = Harness(count=2, limits=Limits(timeout=0, spares=0, shutdownDelay=5.0))
    h.service.startService()
    assert health(h.service) == (
        False,
        {"state": "starting", "serving": 0, "count": 2},
    )
    for process in h.reactor.processes:
        process.call(Online)
        process.call(Ready)
    assert health(h.service) == (True, {"state": "serving", "serving": 2, "count": 2})
    stopped = h.service.stopService()
    assert h.service.state is State.draining
    assert health(h.service) == (
        False,
        {"state": "draining", "serving": 2, "count": 2},
    )
    # The workers are not told to go until the delay is over.
    assert all("Disconnect" not in p.peer.received for p in h.reactor.processes)
    h.reactor.advance(5.0)
    assert h.service.state is State.stopping
    for process in h.reactor.processes:
        process.pump.flush()
        assert "Disconnect" in process.peer.received
        process.exit(code=0)
    assert stopped.called


def test_stopNowEndsTheDrain() -> None:
    h = Harness(count=1, limits=Limits(timeout=0, spares=0, shutdownDelay=30.0))
    h.service.startService()
    h.boot(h.reactor.processes[0])
    h.service.stopService()
    h.service.stopNow()
    h.reactor.advance(0)
    assert h.service.state is State.stopping
    assert h.reactor.processes[0].signals == ["TERM"]


@pytest.mark.timeout(60)
def test_drainKeepsServingWhileHealthFails(cluster, tmp_path: Path) -> None:
    healthPort = freePort()
    health = f"tcp:{healthPort}:interface=127.0.0.1"
    c, port = webCluster(
        cluster, tmp_path, args=["--health", health, "--shutdown-delay", "3"]
    )
    waitFor(lambda: probe(healthPort)[0] == 200 if _up(healthPort) else False)
    assert probe(healthPort) == (200, {"state": "serving", "serving": 2, "count": 2})
    c.signal(signal.SIGTERM)
    waitFor(lambda: probe(healthPort)[0] == 503, timeout=2, what="503")
    assert probe(healthPort)[1]["state"] == "draining"
    # The app still serves, on new connections too.
    for _ in range(10):
        assert get(port).split()[2] == "v1"
    assert c.wait(timeout=20) == 0
    assert "Draining: serving 3s more" in c.log()


def _up(port: int) -> bool:
    try:
        probe(port)
    except OSError:
        return False
    return True


def test_badHealthEndpoint(cluster, tmp_path: Path) -> None:
    c = cluster(APPS / "web.tac", args=["--health", "nonsense:1"])
    assert c.wait() != 0
    lines = c.stderr().strip().splitlines()
    assert len(lines) == 1 and "--health" in lines[0], lines
