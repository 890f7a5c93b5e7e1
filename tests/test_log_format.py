"""
C{--log-format json}: one JSON object per line, master and workers alike,
each worker's id and slot in its events, a traceback inside its line.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from twisted_cluster.logformat import eventAsJSONLine
from twisted_cluster.master.logs import WorkerLogRelay
from twisted_cluster.worker.logging import JSONLines

from .support import APPS, TWISTD, Cluster, waitFor

CHATTY = APPS / "chatty.tac"


def event(text: str, level: LogLevel = LogLevel.info, **more: object) -> dict:
    return {
        "log_format": text,
        "log_namespace": "app",
        "log_level": level,
        "log_time": 1_700_000_000.25,
        **more,
    }


def test_fields() -> None:
    line = eventAsJSONLine(event("hi {who}", who="there", log_system="web,0"))
    assert line is not None and line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line) == {
        "time": "2023-11-14T22:13:20.250000Z",
        "level": "info",
        "namespace": "app",
        "system": "web,0",
        "message": "hi there",
    }


def test_workerFields() -> None:
    slot: list[int | None] = [None]
    lines = JSONLines(4, lambda: slot[0])
    first = json.loads(lines(event("waiting")) or "")
    slot[0] = 2
    second = json.loads(lines(event("started")) or "")
    assert (first["worker_id"], first["worker_slot"]) == (4, None)
    assert (second["worker_id"], second["worker_slot"]) == (4, 2)


def test_tracebackInField() -> None:
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        failure = Failure()
    line = eventAsJSONLine(event("broke", LogLevel.error, log_failure=failure))
    assert line is not None and line.count("\n") == 1
    fields = json.loads(line)
    assert fields["message"] == "broke"
    assert "ZeroDivisionError" in fields["traceback"]
    assert fields["traceback"].startswith("Traceback")
    bare = json.loads(eventAsJSONLine(event("", log_failure=failure)) or "")
    assert bare["message"] == "ZeroDivisionError: division by zero"


def test_nothingToSay() -> None:
    assert eventAsJSONLine({"log_time": 1.0}) is None


def test_unencodable() -> None:
    """
    What JSON cannot encode is written as its text.
    """
    line = eventAsJSONLine(event("x", log_system=object()))
    assert line is not None and json.loads(line)["system"].startswith("<object")


def test_relayNamesWorker() -> None:
    """
    What the master publishes for a worker carries its id and slot.
    """
    published: list[dict[str, Any]] = []
    relay = WorkerLogRelay(7, published.append, slot=lambda: 3)
    relay.errorsReceived(b"stray output\n")
    assert published[0]["worker_id"] == 7 and published[0]["worker_slot"] == 3
    line = json.loads(eventAsJSONLine(published[0]) or "")
    assert (line["worker_id"], line["worker_slot"]) == (7, 3)
    assert line["message"] == "stray output"


def jsonLines(text: str) -> list[dict[str, Any]]:
    """
    Every line of C{text}, each of which must be a JSON object.
    """
    objects = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            raise AssertionError(f"not JSON: {line!r}") from None
        assert isinstance(value, dict), line
        objects.append(value)
    return objects


def started(report: Path, count: int) -> Callable[[], bool]:
    return lambda: len(list(report.glob("started-*"))) >= count


@pytest.mark.timeout(60)
def test_clusterLogIsJSON(tmp_path: Path, cluster: Callable[..., Cluster]) -> None:
    """
    Every line of a JSON cluster's log file is a JSON object: a worker's
    app event carries its id and slot, a master event neither, and a
    traceback stays in its line.
    """
    report = tmp_path / "report"
    report.mkdir()
    c = cluster(
        CHATTY,
        workers=2,
        args=["--log-format", "json"],
        env={"REPORT_DIR": str(report)},
    )
    waitFor(started(report, 2), what="both workers' apps to start")
    waitFor(lambda: "is online" in c.log() and c.log().count("it broke") >= 2)
    events = jsonLines(c.log())
    hello = [e for e in events if e["message"].startswith("hello from worker")]
    assert sorted((e["worker_id"], e["worker_slot"]) for e in hello) == [
        (1, 1),
        (2, 2),
    ]
    assert all(e["message"] == f"hello from worker {e['worker_id']}" for e in hello)
    assert all(e["namespace"] == "chatty" and e["level"] == "info" for e in hello)
    master = [e for e in events if "is online" in e["message"]]
    assert master and all("worker_id" not in e for e in master)
    assert any("starting up" in e["message"] and "worker_id" not in e for e in events)
    broke = [e for e in events if e["message"] == "it broke on purpose"]
    assert len(broke) == 2
    assert all("ZeroDivisionError" in e["traceback"] for e in broke)
    assert all(e["time"].endswith("Z") for e in events)


@pytest.mark.timeout(60)
def test_standardOutputIsJSON(tmp_path: Path) -> None:
    """
    With C{-n} and no log file, standard output has the JSON lines, and
    nothing else.
    """
    report = tmp_path / "report"
    report.mkdir()
    c = Cluster(tmp_path, CHATTY, workers=1, env={"REPORT_DIR": str(report)})
    c.argv = [a for a in c.argv if not a.startswith("--logfile")]
    c.argv += ["--log-format", "json"]
    out = tmp_path / "stdout"
    try:
        with open(out, "wb") as stdout:
            c.process = subprocess.Popen(
                c.argv,
                cwd=tmp_path,
                env={**c.env, "REPORT_DIR": str(report)},
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        waitFor(started(report, 1), what="the worker's app to start")
        waitFor(lambda: "it broke on purpose" in out.read_text())
        waitFor(lambda: "is online" in out.read_text())
        events = jsonLines(out.read_text())
    finally:
        c.kill()
    assert any(e.get("worker_id") == 1 and e["worker_slot"] == 1 for e in events)
    assert any("is online" in e["message"] for e in events)


def test_notWithSyslog(tmp_path: Path) -> None:
    process = subprocess.run(
        [TWISTD, "-n", "--pidfile=", "--syslog", "cluster", "--app", str(CHATTY)]
        + ["--log-format", "json"],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "TWISTED_CLUSTER_WORKER_ID"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert process.returncode != 0
    lines = (process.stderr + process.stdout).strip().splitlines()
    assert len(lines) == 1 and "--log-format json" in lines[0], lines
