"""
The control socket and the C{twisted-cluster} command (contract section 5),
on real clusters: the command runs as a process of its own, as a user
would run it.  The unit tests of the status document, on fakes, are last.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest

import twisted_cluster
from twisted_cluster.commands import Online, Ready
from twisted_cluster.master.master import Master
from twisted_cluster.master.status import Status
from twisted_cluster.master.supervisor import ClusterService, Limits

from .fakes import FakeProcessReactor
from .nobody import asNobody, cleanEnviron, nobodyIds, skipUnlessNobody
from .support import (
    APPS,
    ROOT,
    Cluster,
    Load,
    childrenOf,
    freePort,
    get,
    processExists,
    waitFor,
    webCluster,
)

WEB = APPS / "web.tac"
PING = APPS / "ping.tac"


# Helpers


def ctl(
    path: Path | str,
    *args: str,
    timeout: float = 30.0,
    python: Path | str = sys.executable,
    user: bool = False,
) -> subprocess.CompletedProcess[str]:
    """
    Run C{twisted-cluster --control path args...}; its exit status and
    output.  With C{user}, as C{nobody}, with C{python}.
    """
    argv: list[str] = [str(python), "-m", "twisted_cluster", "--control", str(path)]
    argv += args
    if user:
        argv, env, cwd = asNobody(argv), cleanEnviron(), "/"
    else:
        env, cwd = {**os.environ, "PYTHONPATH": str(ROOT)}, str(ROOT)
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd
    )


def ok(path: Path | str, *args: str, timeout: float = 30.0) -> str:
    """
    Run the command, which must succeed; its standard output.
    """
    done = ctl(path, *args, timeout=timeout)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    assert done.stderr == ""
    return done.stdout


def oneLine(done: subprocess.CompletedProcess[str], code: int) -> str:
    """
    The one line C{done} wrote on standard error, having exited C{code}.
    """
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("twisted-cluster: ")
    return lines[0]


def status(path: Path | str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(ok(path, "status", "--json"))
    return document


def serving(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [w for w in document["workers"] if w["state"] == "serving"]


def settled(path: Path | str, count: int, spares: int = 0) -> dict[str, Any] | None:
    """
    The status, if the cluster serves with C{count} workers and C{spares}
    spares and nothing else; else C{None}.
    """
    done = ctl(path, "status", "--json")
    if done.returncode:
        return None  # not yet listening
    document: dict[str, Any] = json.loads(done.stdout)
    states = sorted(w["state"] for w in document["workers"])
    if document["state"] != "serving":
        return None
    if states != sorted(["serving"] * count + ["spare"] * spares):
        return None
    return document


def web(
    cluster: Any,
    tmp_path: Path,
    workers: int = 2,
    args: tuple[str, ...] = (),
    spares: int = 0,
    env: dict[str, str] | None = None,
) -> tuple[Cluster, int, Path]:
    """
    A cluster of tests/apps/web.tac, once it serves (its spares ready): the
    cluster, its port, its control socket.
    """
    c, port = webCluster(
        cluster,
        tmp_path,
        workers,
        [*args, "--spares", str(spares), "--restart-delay", "0.1"],
        env,
    )
    path = tmp_path / "twistd.ctl"
    waitFor(path.exists, what="the control socket")
    waitFor(lambda: settled(path, workers, spares), what=f"{workers} workers serving")
    return c, port, path


def tableRows(text: str) -> dict[str, list[str]]:
    """
    The rows of C{status}'s table, by their first cell (a worker id, or
    C{master}); the header row under C{ID}.
    """
    rows = {}
    for line in text.splitlines():
        if not line.strip():
            break
        cells = line.split()
        rows[cells[0]] = cells
    return rows


# status


@pytest.mark.timeout(60)
def test_statusMatchesTheProcesses(cluster: Any, tmp_path: Path) -> None:
    """
    C{status --json} has a row for each of the master's children, the
    spare as C{spare}, with the slots 1..N, and the master's own pid; the
    table shows the same rows; the socket is the owner's alone.
    """
    c, port, path = web(cluster, tmp_path, workers=2, spares=1)
    document = status(path)
    workers = document["workers"]
    assert sorted(w["pid"] for w in workers) == sorted(childrenOf(c.pid))
    assert document["master"]["pid"] == c.pid
    assert document["state"] == "serving"
    assert document["count"] == 2
    assert document["scheduling"] == "reuseport"
    (spare,) = [w for w in workers if w["state"] == "spare"]
    assert spare["slot"] is None
    assert sorted(w["slot"] for w in serving(document)) == [1, 2]
    assert all(w["restarts"] == 0 for w in workers)
    for w in workers:
        assert w["rss"] > 0 and w["cpu"] >= 0 and w["uptime"] >= 0
    # The workers that answer say the same slots.
    slotOf = {w["pid"]: w["slot"] for w in serving(document)}
    for _ in range(10):
        _, pid, slot = get(port, "/slot").split()
        assert slotOf[int(pid)] == int(slot)

    rows = tableRows(ok(path, "status"))
    assert rows.pop("ID")[:4] == ["ID", "SLOT", "PID", "STATE"]
    master = rows.pop("master")
    assert master[2] == str(c.pid) and master[3] == "serving"
    assert {k: v[1:4] for k, v in rows.items()} == {
        str(w["id"]): [str(w["slot"] or "-"), str(w["pid"]), w["state"]]
        for w in status(path)["workers"]
    }
    assert "cluster serving: 2 of 2 workers serving (reuseport)" in ok(path, "status")

    mode = os.stat(path)
    assert stat.S_ISSOCK(mode.st_mode)
    assert stat.S_IMODE(mode.st_mode) == 0o600
    assert mode.st_uid == os.getuid()


@pytest.mark.timeout(60)
def test_slotReusedAfterKill(cluster: Any, tmp_path: Path) -> None:
    """
    A worker killed with SIGKILL is replaced in its slot, whose restarts
    become 1; the other slot's stay 0.
    """
    c, port, path = web(cluster, tmp_path, workers=2)
    before = {w["slot"]: w for w in status(path)["workers"]}
    victim = before[2]
    os.kill(victim["pid"], signal.SIGKILL)

    def replaced() -> dict[str, Any] | None:
        document = settled(path, 2)
        if document is None or victim["pid"] in {w["pid"] for w in document["workers"]}:
            return None
        return document

    document = waitFor(replaced, what="the replacement")
    assert document is not None
    after = {w["slot"]: w for w in document["workers"]}
    assert sorted(after) == [1, 2]
    assert after[1]["id"] == before[1]["id"] and after[1]["restarts"] == 0
    assert after[2]["id"] > victim["id"] and after[2]["restarts"] == 1
    assert sorted(w["pid"] for w in after.values()) == sorted(childrenOf(c.pid))
    rows = tableRows(ok(path, "status"))
    # ID SLOT PID STATE UPTIME RESTARTS ...
    replacement, other = rows[str(after[2]["id"])], rows[str(after[1]["id"])]
    assert replacement[1:4] == ["2", str(after[2]["pid"]), "serving"]
    assert replacement[5] == "1"
    assert other[1:4] == ["1", str(after[1]["pid"]), "serving"]
    assert other[5] == "0"
    assert str(victim["id"]) not in rows


# reload and scale


@pytest.mark.timeout(90)
def test_scaleAndReloadUnderLoad(cluster: Any, tmp_path: Path) -> None:
    """
    C{scale +1}, C{scale 3}, C{scale -1} and C{reload} each exit 0 once
    done, with the workers as asked, and no request fails meanwhile.
    """
    c, port, path = web(cluster, tmp_path, workers=2)

    def pids() -> set[int]:
        document = status(path)
        assert document["state"] == "serving"
        assert all(w["state"] == "serving" for w in document["workers"])
        found = {w["pid"] for w in document["workers"]}
        assert found == set(childrenOf(c.pid))
        return found

    with Load(port) as load:
        waitFor(lambda: len(load.answers) > 10, what="answers")
        out = ok(path, "scale", "+1")
        assert out.splitlines()[-1] == "3 workers serving"
        assert "Scaling from 2 to 3 workers" in out  # the master's progress
        three = pids()
        assert len(three) == 3
        seen = len(load.answers)
        waitFor(lambda: load.pids(seen) == three, what="all 3 answering")

        assert ok(path, "scale", "3").splitlines()[-1] == "3 workers serving"
        assert pids() == three

        assert ok(path, "scale", "-1").splitlines()[-1] == "2 workers serving"
        two = pids()
        assert len(two) == 2 and two < three

        out = ok(path, "reload")
        assert "Reload done" in out
        assert out.splitlines()[-1] == "Reloaded: every worker runs fresh code"
        fresh = pids()
        assert len(fresh) == 2 and not fresh & two
        seen = len(load.answers)
        waitFor(lambda: load.pids(seen) == fresh, what="the new workers answering")
    assert load.failures == []
    assert len(load.answers) > 50


@pytest.mark.timeout(60)
def test_failedReload(cluster: Any, tmp_path: Path) -> None:
    """
    A reload whose new worker cannot start exits 1 with one line, and the
    old workers go on serving.
    """
    c, port, path = web(cluster, tmp_path, workers=2)
    before = sorted(w["pid"] for w in status(path)["workers"])
    (tmp_path / "version.txt").unlink()  # the app cannot load without it
    done = ctl(path, "reload")
    assert "the reload failed" in oneLine(done, 1)
    document = waitFor(lambda: settled(path, 2), what="the old workers serving")
    assert document is not None
    assert sorted(w["pid"] for w in document["workers"]) == before
    assert sorted(childrenOf(c.pid)) == before
    get(port)


@pytest.mark.timeout(60)
def test_refusedCommands(cluster: Any, tmp_path: Path) -> None:
    """
    C{scale 0} is refused by the master (exit 1), C{scale abc} by the
    command (exit 2), C{send} to a worker that is not there (exit 1): one
    line each, and the cluster is as it was.
    """
    c, port, path = web(cluster, tmp_path, workers=1)
    before = status(path)["workers"]
    line = oneLine(ctl(path, "scale", "0"), 1)
    assert "at least 1" in line
    line = oneLine(ctl(path, "scale", "-5"), 1)
    assert "at least 1" in line
    line = oneLine(ctl(path, "scale", "abc"), 2)
    assert "'abc'" in line
    line = oneLine(ctl(path, "send", "99", "1"), 1)
    assert "no worker 99" in line
    assert "not JSON" in oneLine(ctl(path, "send", "all", "{nope"), 2)
    after = status(path)
    assert after["count"] == 1
    assert [w["pid"] for w in after["workers"]] == [w["pid"] for w in before]


# stop


@pytest.mark.timeout(60)
@pytest.mark.parametrize("now", [False, True])
def test_stop(cluster: Any, tmp_path: Path, now: bool) -> None:
    """
    C{stop} (and C{stop --now}) exits 0 only once the master has exited:
    it and its workers are gone when the command returns.
    """
    c, port, path = web(cluster, tmp_path, workers=2)
    workers = childrenOf(c.pid)
    out = ok(path, "stop", *(["--now"] if now else []))
    assert not processExists(c.pid)
    assert not any(map(processExists, workers))
    lines = out.splitlines()
    assert lines[0] == ("Stopping at once" if now else "Stopping")
    assert lines[-1] == "Stopped"
    assert "  Cluster running -> stopping" in lines
    assert c.wait(5) == 0
    assert not path.exists()


@pytest.mark.timeout(60)
def test_stopWhileStopping(cluster: Any, tmp_path: Path) -> None:
    """
    While a graceful stop waits for a slow request: C{status} says
    C{stopping}; another C{stop} follows it to the end, as the first does
    (exit 0, the master gone); the request is answered.
    """
    c, port, path = web(cluster, tmp_path, workers=1)
    answer: list[str] = []
    slow = threading.Thread(target=lambda: answer.append(get(port, "/slow?s=3")))
    slow.start()
    waitFor(lambda: "slow request started" in c.log(), what="the slow request")
    first = _stopping(path)
    try:
        waitFor(
            lambda: status(path)["state"] == "stopping", what="the cluster stopping"
        )
        out = ok(path, "stop")
        assert not processExists(c.pid)
        assert out.splitlines()[-1] == "Stopped"
        out, err = first.communicate(timeout=10)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == 0, err
    assert out.splitlines()[-1] == "Stopped" and err == ""
    slow.join(5)
    assert answer and answer[0].split()[2] == "v1"
    assert c.wait(5) == 0
    assert "Traceback" not in c.log()


@pytest.mark.timeout(60)
def test_stopNowHurriesAStop(cluster: Any, tmp_path: Path) -> None:
    """
    C{stop --now} during a graceful stop that waits for a long request ends
    it at once (as SIGQUIT after SIGTERM does): the workers get SIGTERM, and
    both commands return with the master gone, long before the request
    would have finished.
    """
    c, port, path = web(cluster, tmp_path, workers=1)
    slow = threading.Thread(target=lambda: _quietly(get, port, "/slow?s=60"))
    slow.start()
    waitFor(lambda: "slow request started" in c.log(), what="the slow request")
    first = _stopping(path)
    try:
        waitFor(
            lambda: status(path)["state"] == "stopping", what="the cluster stopping"
        )
        started = time.monotonic()
        out = ok(path, "stop", "--now")
        assert out.splitlines()[-1] == "Stopped"
        assert not processExists(c.pid)
        assert time.monotonic() - started < 15
        out, err = first.communicate(timeout=10)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == 0, err
    slow.join(10)
    assert "Traceback" not in c.log()


def _stopping(path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "twisted_cluster", "--control", str(path), "stop"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _quietly(f: Any, *args: Any) -> None:
    try:
        f(*args)
    except OSError:
        pass  # Cut off by the immediate stop: what the test asks for.


# send


@pytest.mark.timeout(60)
def test_send(cluster: Any, tmp_path: Path) -> None:
    """
    C{send all} reaches every worker's app, C{send ID} only that one's.
    """
    reports = tmp_path / "reports"
    reports.mkdir()
    cluster(PING, workers=2, env={"REPORT_DIR": str(reports)})
    path = tmp_path / "twistd.ctl"
    waitFor(path.exists, what="the control socket")
    document = waitFor(lambda: settled(path, 2), what="2 workers serving")
    assert document is not None
    ids = sorted(w["id"] for w in document["workers"])

    def received(worker: int) -> object:
        try:
            return json.loads((reports / f"pong-{worker}").read_text())
        except (FileNotFoundError, ValueError):
            return None

    assert ok(path, "send", "all", '{"a": [1, "two"]}') == "Sent to 2 workers\n"
    waitFor(
        lambda: all(received(w) == {"a": [1, "two"]} for w in ids),
        what="the message in each worker",
    )
    assert ok(path, "send", str(ids[0]), '"only you"') == "Sent to 1 worker\n"
    waitFor(lambda: received(ids[0]) == "only you", what="the message")
    assert received(ids[1]) == {"a": [1, "two"]}
    messages = {w["id"]: w["messagesOut"] for w in status(path)["workers"]}
    assert messages[ids[0]] >= 2 and messages[ids[1]] >= 1


# no cluster there


@pytest.mark.timeout(30)
def test_noCluster(tmp_path: Path) -> None:
    """
    No socket, a socket file nobody listens on, or something else at the
    path: one line, exit 1.
    """
    path = tmp_path / "twistd.ctl"
    assert "no cluster is running at" in oneLine(ctl(path, "status"), 1)
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))  # the file stays: nobody listens
    assert "no cluster is running at" in oneLine(ctl(path, "reload"), 1)
    path.unlink()
    path.write_text("not a socket")
    assert oneLine(ctl(path, "stop"), 1)


@pytest.mark.timeout(60)
def test_staleSocketReplaced(cluster: Any, tmp_path: Path) -> None:
    """
    A master killed with SIGKILL leaves its socket behind: the command
    says no cluster runs there, and the next master replaces it.
    """
    c, port, path = web(cluster, tmp_path, workers=1)
    c.kill()
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    assert "no cluster is running at" in oneLine(ctl(path, "status"), 1)
    again, _, _ = web(cluster, tmp_path, workers=1)
    assert status(path)["master"]["pid"] == again.pid != c.pid
    assert "No control socket" not in again.log()


# who may use it


@pytest.mark.timeout(120)
def test_otherUserRefused(
    cluster: Any, tmp_path: Path, nobodyPython: Path, nobodyWorkdir: Path
) -> None:
    """
    Another user (nobody) cannot open the socket (mode 0600); with the
    socket opened to all, the master refuses that user by its uid.  One
    line and exit 1 each time.
    """
    skipUnlessNobody()
    path = nobodyWorkdir / "cluster.ctl"
    port = freePort()
    versionFile = tmp_path / "version.txt"
    versionFile.write_text("v1")
    c = cluster(
        WEB,
        workers=1,
        env={"PORT": str(port), "VERSION_FILE": str(versionFile)},
        args=["--control", str(path)],
    )
    waitFor(path.exists, what="the control socket")
    waitFor(lambda: settled(path, 1), what="1 worker serving")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    done = ctl(path, "status", python=nobodyPython, user=True)
    assert "Permission denied" in oneLine(done, 1)

    os.chmod(path, 0o666)
    done = ctl(path, "status", python=nobodyPython, user=True)
    assert "refuse" in oneLine(done, 1)
    assert done.stdout == ""
    uid, _ = nobodyIds()
    waitFor(
        lambda: f"Control socket: refused a client of uid {uid}" in c.log(),
        what="the refusal in the log",
    )
    # The owner still may.
    assert status(path)["master"]["pid"] == c.pid


# --control


@pytest.mark.timeout(60)
def test_anotherMasterThere(tmp_path: Path) -> None:
    """
    A master whose control socket another master already serves gives one
    warning line and runs without it; the first keeps its socket.
    """
    path = tmp_path / "shared.ctl"
    started = []
    try:
        for name in ("first", "second"):
            where = tmp_path / name
            where.mkdir()
            port = freePort()
            (where / "version.txt").write_text(name)
            c = Cluster(
                where,
                WEB,
                workers=1,
                env={"PORT": str(port), "VERSION_FILE": str(where / "version.txt")},
                args=["--control", str(path)],
            )
            started.append(c.start())
            waitFor(partial(_answers, port), what=f"the {name} cluster to serve")
            waitFor(partial(_saysControl, c), what="the control socket line")
        first, second = started
        lines = [line for line in second.log().splitlines() if "ontrol socket" in line]
        assert len(lines) == 1, lines
        assert f"No control socket at {path}: another master answers there" in lines[0]
        assert status(path)["master"]["pid"] == first.pid
    finally:
        for c in started:
            c.kill()


@pytest.mark.timeout(60)
def test_controlNone(cluster: Any, tmp_path: Path) -> None:
    """
    C{--control none}: no socket, and the command finds no cluster.
    """
    c, port = webCluster(cluster, tmp_path, workers=1, args=["--control", "none"])
    waitFor(lambda: _answers(port), what="the cluster to serve")
    assert not list(tmp_path.glob("*.ctl"))
    assert "ontrol socket" not in c.log()
    assert "no cluster" in oneLine(ctl(tmp_path / "twistd.ctl", "status"), 1)


@pytest.mark.timeout(60)
def test_controlCannotBeMade(cluster: Any, tmp_path: Path) -> None:
    """
    A control socket that cannot be made is one warning line, and the
    cluster serves without it.
    """
    c, port = webCluster(
        cluster, tmp_path, workers=1, args=["--control", "/nonexistent-dir/x.ctl"]
    )
    waitFor(lambda: _answers(port), what="the cluster to serve")
    lines = [line for line in c.log().splitlines() if "ontrol socket" in line]
    assert len(lines) == 1, lines
    assert "No control socket at /nonexistent-dir/x.ctl: " in lines[0]
    assert "#warn]" in lines[0]
    assert not os.path.exists("/nonexistent-dir")


def _saysControl(c: Cluster) -> bool:
    return "ontrol socket" in c.log()


def _answers(port: int) -> bool:
    try:
        get(port, timeout=2)
    except OSError:
        return False
    return True


# The status document, on fakes


class Harness:
    """
    A cluster service on a fake reactor, and its status with CPU and memory
    readings the test sets.
    """

    def __init__(self, count: int = 2, spares: int = 0) -> None:
        self.reactor = FakeProcessReactor()
        self.master = Master(self.reactor, environ={})  # type: ignore[arg-type]
        self.service = ClusterService(
            self.master,
            count,
            self.reactor,
            onFatal=lambda why: None,
            limits=Limits(gracefulTimeout=5.0, timeout=0, spares=spares),
        )
        self.cpu: dict[int, float] = {}
        self.rss: dict[int, int] = {}
        self.status = Status(
            self.service, self.reactor, self.cpu.get, self.rss.get, pid=42
        )

    def serve(self) -> None:
        """
        Start the service; each worker comes up.
        """
        self.service.startService()
        for process in list(self.reactor.live):
            boot(process)


def boot(process: Any) -> None:
    process.call(Online)
    process.call(Ready)


def test_statusRows() -> None:
    """
    A row per worker with its id, slot, pid, role, uptime, restarts, CPU,
    memory and connections; the master's row; the count and scheduling.
    """
    h = Harness(count=2)
    h.reactor.advance(10)
    h.serve()
    h.reactor.advance(5)
    pids = [p.pid for p in h.reactor.live]
    h.rss.update({pids[0]: 1000, pids[1]: 2000, 42: 3000})
    document = h.status.document()
    assert document["state"] == "serving"
    assert document["count"] == 2
    assert document["scheduling"] == "reuseport"
    # The master has been up since the service was made, and never upgraded.
    assert document["master"] == {
        "pid": 42,
        "uptime": 15.0,
        "generation": 0,
        "version": twisted_cluster.__version__,
        "cpu": None,
        "rss": 3000,
    }
    first, second = document["workers"]
    assert first == {
        "id": 1,
        "slot": 1,
        "pid": pids[0],
        "state": "serving",
        "uptime": 5.0,
        "restarts": 0,
        "cpu": None,
        "rss": 1000,
        "open": 0,
        "accepted": 0,
        "messagesIn": 0,
        "messagesOut": 0,
        "version": None,
        "heartbeatMs": None,
    }
    assert (second["id"], second["slot"], second["rss"]) == (2, 2, 2000)


def test_statusCPU() -> None:
    """
    CPU % is the share of one core used since the last document, and
    since the process started in the first.
    """
    h = Harness(count=1)
    h.serve()
    (pid,) = [p.pid for p in h.reactor.live]
    h.reactor.advance(4)
    h.cpu.update({pid: 1.0, 42: 2.0})
    document = h.status.document()
    assert document["workers"][0]["cpu"] == 25.0
    assert document["master"]["cpu"] == 50.0
    h.reactor.advance(2)
    h.cpu.update({pid: 2.5, 42: 2.0})
    document = h.status.document()
    assert document["workers"][0]["cpu"] == 75.0
    assert document["master"]["cpu"] == 0.0
    # A reading that goes back (another process has the pid) is not negative.
    h.reactor.advance(1)
    h.cpu[pid] = 0.5
    assert h.status.document()["workers"][0]["cpu"] == 0.0


def test_statusRestartsAndSpares() -> None:
    """
    A replacement shows its slot's restarts, the others none; a spare has
    no slot, and no restarts.
    """
    h = Harness(count=2, spares=1)
    h.serve()
    rows = h.status.document()["workers"]
    assert [(w["state"], w["slot"], w["restarts"]) for w in rows] == [
        ("serving", 1, 0),
        ("serving", 2, 0),
        ("spare", None, 0),
    ]
    h.reactor.advance(100)
    h.reactor.processes[0].exit(signal="SIGKILL")
    h.reactor.processes[2].call(Ready)  # the spare takes slot 1
    rows = h.status.document()["workers"]
    bySlot = {w["slot"]: w for w in rows if w["state"] == "serving"}
    assert bySlot[1]["id"] == 3 and bySlot[1]["restarts"] == 1
    assert bySlot[2]["id"] == 2 and bySlot[2]["restarts"] == 0
    assert 1 not in {w["id"] for w in rows}


@pytest.mark.parametrize(
    ("state", "shown"),
    [
        ("starting", "starting"),
        ("running", "serving"),
        ("reloading", "reloading"),
        ("stopping", "stopping"),
    ],
)
def test_statusClusterState(state: str, shown: str) -> None:
    """
    The cluster's states under the names the contract gives them.
    """
    from twisted_cluster.master.supervisor import State

    h = Harness(count=1)
    h.service.state = State(state)
    assert h.status.document()["state"] == shown
