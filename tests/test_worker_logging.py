"""
A worker's own log: its id in every line, and a log file that follows
rotation.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.logger import LogLevel, formatEvent

from twisted_cluster.worker.logging import ReopeningFile, WorkerSystem


def test_reopensRotatedFile(tmp_path: Path) -> None:
    path = tmp_path / "twistd.log"
    log = ReopeningFile(str(path))
    log.checkEvery = 0.0
    log.write("one\n")
    log.flush()
    os.rename(path, tmp_path / "twistd.log.1")
    log.write("two\n")
    log.flush()
    assert (tmp_path / "twistd.log.1").read_text() == "one\n"
    assert path.read_text() == "two\n"


def test_workerIdInSystem() -> None:
    seen: list[dict] = []
    observe = WorkerSystem(3, seen.append)
    observe({"log_format": "hi", "log_namespace": "app", "log_level": LogLevel.info})
    observe({"log_format": "legacy", "log_system": "-"})
    assert [e["log_system"] for e in seen] == ["worker 3: app#info", "worker 3: -"]
    assert formatEvent(seen[0]) == "hi"
