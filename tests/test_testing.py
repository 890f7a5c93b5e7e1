"""
twisted_cluster.testing, as a user's pytest-twisted test would use it; and
twistd cluster's --master-hook.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest_twisted
from twisted.internet import threads

from twisted_cluster.testing import startCluster

from .support import APPS, ROOT, freePort, processExists, tcp, waitFor, workersAnswering


@pytest_twisted.inlineCallbacks
def test_startClusterOfTac():
    env = {"LISTEN_STYLE": "listenTCP", "LISTEN_PORT": "0"}
    running = yield startCluster(str(APPS / "listen.tac"), workers=2, env=env)
    try:
        assert len(running.workers) == 2
        assert running.addresses == [["TCP", "127.0.0.1", running.port]]
        seen = yield threads.deferToThread(workersAnswering, tcp(running.port), 2)
        assert set(seen) == {"1", "2"}
        pids = list(running.workers.values())
    finally:
        status = yield running.stop()
    assert not any(processExists(pid) for pid in pids)
    assert running.workers == {}
    assert status is not None


@pytest_twisted.inlineCallbacks
def test_startClusterOfScript():
    port = freePort()
    script = str(ROOT / "examples" / "death.py")
    running = yield startCluster(script, workers=2, env={"PORT": str(port)})
    try:
        assert sorted(running.workers) == [1, 2]
        os.kill(running.workers[1], 9)
        event = yield running.whenEvent(
            lambda e: e["event"] == "listening" and e["worker"] == 3
        )
        assert event["address"][2] == port
    finally:
        yield running.stop()
    assert b"restarting" in running.output


@pytest_twisted.inlineCallbacks
def test_startClusterReportsFailure(tmp_path: Path):
    broken = tmp_path / "broken.tac"
    broken.write_text("x = (\n")
    try:
        yield startCluster(str(broken), workers=1)
    except Exception as e:
        assert "SyntaxError" in str(e)
    else:
        raise AssertionError("a broken app started")


def test_masterHook(cluster, tmp_path: Path) -> None:
    """
    --master-hook gives a twistd cluster's master the cluster API: here it
    answers the workers' messages.
    """
    reports = tmp_path / "reports"
    reports.mkdir()
    cluster(
        APPS / "ping.tac",
        workers=2,
        env={"REPORT_DIR": str(reports), "PYTHONPATH": str(APPS)},
        args=["--master-hook", "hook:install"],
    )
    files = waitFor(
        lambda: len(list(reports.iterdir())) == 2 and sorted(reports.iterdir())
    )
    answers = [json.loads(waitFor(f.read_text)) for f in files]
    assert answers == [
        {"pong": {"ping": 1}, "from": "master"},
        {"pong": {"ping": 2}, "from": "master"},
    ]
