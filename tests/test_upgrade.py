"""
Upgrading the master in place (contract §6): real clusters, real clients.

The master re-executes itself with the same pid; its workers, sockets and
descriptors carry over, and clients on fresh and on kept-alive connections
see no failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

import twisted_cluster

from .support import (
    ROOT,
    TWISTD,
    WEB,
    KeepAlive,
    Load,
    childrenOf,
    freePort,
    get,
    openDescriptors,
    processExists,
    udpWorkersAnswering,
    unix,
    waitFor,
    webCluster,
    workersAnswering,
)
from .test_control import ctl, ok, oneLine, settled, status, web


def generation(path: Path) -> int | None:
    """
    The master's generation (upgrades so far), if it answers.
    """
    done = ctl(path, "status", "--json")
    if done.returncode:
        return None
    value: int = json.loads(done.stdout)["master"]["generation"]
    return value


def killEvery(pids: list[int]) -> None:
    """
    SIGKILL what a test started outside the C{cluster} fixture's reach.
    """
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def workerPids(path: Path) -> set[int]:
    return {w["pid"] for w in status(path)["workers"]}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("scheduling", ["reuseport", "shared", "roundrobin"])
def test_upgradeKeepsEverything(cluster: Any, tmp_path: Path, scheduling: str) -> None:
    """
    C{upgrade}, then SIGUSR2: the master's pid and every worker's stay, the
    master holds as many descriptors as before, and clients on new and on
    kept-alive connections see no failure.  The cluster then still obeys
    SIGHUP, SIGTTIN, the CLI and a worker's SIGKILL.
    """
    deaths = tmp_path / "deaths.txt"
    c, port, path = web(
        cluster,
        tmp_path,
        workers=2,
        spares=1,
        args=("--scheduling", scheduling, "--master-hook", "hook:recordDeaths"),
        env={"DEATHS": str(deaths), "PYTHONPATH": str(ROOT / "tests" / "apps")},
    )
    before = workerPids(path)
    descriptors = openDescriptors(c.pid)
    with Load(port) as fresh, KeepAlive(port, clients=3) as kept:
        waitFor(lambda: len(fresh.answers) > 20 and kept.answers > 20, what="load")
        done = ok(path, "upgrade", timeout=60)
        assert "Upgraded the master" in done and "generation 1" in done
        answered = len(fresh.answers), kept.answers
        c.signal(signal.SIGUSR2)
        waitFor(lambda: generation(path) == 2, timeout=60, what="a second upgrade")
        # Still served after both.
        waitFor(
            lambda: (
                len(fresh.answers) > answered[0] + 20
                and kept.answers > answered[1] + 20
            ),
            what="answers after the upgrades",
        )
    assert fresh.failures == [] and kept.failures == []
    assert processExists(c.pid) and c.process is not None and c.process.poll() is None
    assert workerPids(path) == before
    # The keeper forked for the exec has gone, and its pipe with it.
    waitFor(lambda: set(childrenOf(c.pid)) == before, what="the keeper to go")
    assert openDescriptors(c.pid) == descriptors
    document = status(path)
    assert document["master"]["pid"] == c.pid
    assert document["master"]["generation"] == 2
    assert ", upgraded in place 2 times" in ok(path, "status")
    log = c.log()
    assert log.count("Took over 3 workers from the previous master image") == 2
    assert "Upgraded in place: generation 2" in log

    # It supervises on: a killed worker is replaced, its death reported.
    victim = next(w for w in document["workers"] if w["state"] == "serving")
    os.kill(victim["pid"], signal.SIGKILL)
    waitFor(
        lambda: (
            f"Worker {victim['id']} (pid {victim['pid']}) is dead: killed by SIGKILL"
            in c.log()
        ),
        what="the death logged",
    )
    # Node's death event, to the master hook the new image ran again.
    waitFor(deaths.exists, what="the death event")
    assert deaths.read_text() == f"{victim['id']} SIGKILL\n"
    waitFor(lambda: settled(path, 2, 1), what="a replacement")
    # SIGTTIN adds one, SIGHUP replaces them all.
    c.signal(signal.SIGTTIN)
    waitFor(lambda: settled(path, 3, 1), what="three workers")
    old = workerPids(path)
    c.signal(signal.SIGHUP)
    waitFor(
        lambda: (
            (s := settled(path, 3, 1)) is not None
            and not {w["pid"] for w in s["workers"] if w["state"] == "serving"} & old
        ),
        timeout=60,
        what="a reload",
    )
    ok(path, "scale", "2")
    assert len(get(port).split()) == 3
    ok(path, "stop")
    assert c.wait() == 0


@pytest.mark.timeout(120)
def test_brokenNewCodeLeavesTheOldMaster(cluster: Any, tmp_path: Path) -> None:
    """
    If the code installed now cannot start (a broken install: a package on
    C{PYTHONPATH} that fails to import), the upgrade is refused with one
    line, the master logs one line why and serves on; fixed, it upgrades.
    """
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    c, port, path = clusterWithPath(cluster, tmp_path, shadow)
    before = workerPids(path)
    broken = shadow / "twisted_cluster"
    broken.mkdir()
    (broken / "__init__.py").write_text('raise ImportError("this install is broken")\n')
    with Load(port) as load:
        done = ctl(path, "upgrade", timeout=60)
        line = oneLine(done, 1)
        assert "the new code cannot start" in line and "this install is broken" in line
        waitFor(lambda: len(load.answers) > 10, what="answers after the refusal")
    assert load.failures == []
    log = c.log()
    assert log.count("Not upgrading:") == 1
    (refusal,) = [x for x in log.splitlines() if "Not upgrading:" in x]
    assert "this install is broken" in refusal
    assert generation(path) == 0
    assert workerPids(path) == before
    assert settled(path, 2, 0) is not None

    # Fixed, it upgrades, and the old image's refusal left nothing behind.
    (broken / "__init__.py").unlink()
    broken.rmdir()
    ok(path, "upgrade", timeout=60)
    assert generation(path) == 1
    assert workerPids(path) == before


def clusterWithPath(
    cluster: Any, tmp_path: Path, shadow: Path
) -> tuple[Any, int, Path]:
    env = os.environ.get("PYTHONPATH")
    paths = [str(shadow), str(ROOT), *([env] if env else [])]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    try:
        return web(cluster, tmp_path, workers=2)
    finally:
        if env is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = env


@pytest.mark.timeout(60)
def test_upgradeRefusedUnlessSettled(cluster: Any, tmp_path: Path) -> None:
    """
    While a worker is retiring (a reload's, finishing a slow request), an
    upgrade is refused with one line and nothing changes; once the cluster
    has settled, it upgrades.
    """
    c, port, path = web(cluster, tmp_path, workers=1)
    slow = threading.Thread(target=get, args=(port, "/slow?s=5"), daemon=True)
    slow.start()
    waitFor(lambda: "slow request started" in c.log(), what="the slow request")
    c.signal(signal.SIGHUP)
    waitFor(lambda: "Retiring worker 1" in c.log(), what="the old worker retiring")
    line = oneLine(ctl(path, "upgrade"), 1)
    assert "settled" in line, line
    assert generation(path) == 0
    slow.join(15)
    waitFor(lambda: settled(path, 1), what="the cluster to settle")
    ok(path, "upgrade", timeout=60)
    assert generation(path) == 1


@pytest.mark.timeout(90)
def test_upgradeADaemon(tmp_path: Path) -> None:
    """
    A daemonized master (no C{-n}, a pid file, the default log file) runs
    on as the same daemon: the new image neither forks again nor takes its
    own pid file for another master's, and logs to the same file.  The pid
    file goes when it stops.
    """
    port = freePort()
    version = tmp_path / "version.txt"
    version.write_text("v1")
    env = {**os.environ, "PORT": str(port), "VERSION_FILE": str(version)}
    pidfile = tmp_path / "twistd.pid"
    argv = [TWISTD, f"--pidfile={pidfile}", "cluster", "--app", str(WEB), "-w", "1"]
    argv += ["--spares", "0"]
    done = subprocess.run(argv, cwd=tmp_path, env=env, timeout=30)
    assert done.returncode == 0
    waitFor(pidfile.exists, what="the pid file")
    pid = int(pidfile.read_text())
    try:
        path = tmp_path / "twistd.ctl"
        waitFor(lambda: settled(path, 1), what="one worker")
        before = workerPids(path)
        ok(path, "upgrade", timeout=60)
        assert generation(path) == 1
        assert int(pidfile.read_text()) == pid
        assert workerPids(path) == before
        log = (tmp_path / "twistd.log").read_text()
        assert "Upgraded in place: generation 1" in log
        ok(path, "stop")
        waitFor(lambda: not processExists(pid), what="the master to exit")
        waitFor(lambda: not pidfile.exists(), what="the pid file removed")
    finally:
        killEvery([pid, *childrenOf(pid)])


@pytest.mark.timeout(60)
def test_upgradeWithAPidFile(cluster: Any, tmp_path: Path) -> None:
    """
    Run with C{-n} and a pid file: the pid file keeps naming the master
    through an upgrade, the control socket stays beside it, and the pid
    file goes when the master stops.
    """
    pidfile = tmp_path / "run" / "master.pid"
    pidfile.parent.mkdir()
    c, port = webCluster(
        cluster, tmp_path, workers=1, twistd=["-n", f"--pidfile={pidfile}"]
    )
    path = pidfile.parent / "twistd.ctl"
    waitFor(lambda: settled(path, 1), what="one worker")
    assert pidfile.read_text() == str(c.pid)
    ok(path, "upgrade", timeout=60)
    assert generation(path) == 1
    assert pidfile.read_text() == str(c.pid)
    ok(path, "stop")
    assert c.wait() == 0
    assert not pidfile.exists()


@pytest.mark.timeout(90)
def test_aNewImageThatDiesLosesNoWorker(cluster: Any, tmp_path: Path) -> None:
    """
    A new release that passes the check but dies as it starts (its master
    hook fails) takes no worker with it: the keeper holds them, they serve
    on, and the keeper says in one line what to do; SIGTERM to the keeper
    then lets them go.
    """
    mark = tmp_path / "broken-release"
    c, port = webCluster(
        cluster,
        tmp_path,
        env={"FAIL_MARK": str(mark), "PYTHONPATH": str(ROOT / "tests" / "apps")},
        args=["--master-hook", "hook:failsOnceMarked"],
    )
    path = tmp_path / "twistd.ctl"
    waitFor(lambda: settled(path, 2), what="two workers")
    workers = workerPids(path)
    keepers: list[int] = []
    try:
        mark.write_text("")
        with Load(port) as load:
            done = ctl(path, "upgrade", timeout=60)
            assert done.returncode == 1, (done.stdout, done.stderr)
            assert "the master exited while upgrading" in done.stderr
            assert c.wait(30) != 0
            waitFor(lambda: "held by pid" in c.log(), what="the keeper's word")
            answered = len(load.answers)
            waitFor(lambda: len(load.answers) > answered + 20, what="answers after")
        assert load.failures == []
        assert load.pids(answered) == workers
        (line,) = [x for x in c.log().splitlines() if "held by pid" in x]
        assert f"the master (pid {c.pid}) died while upgrading" in line
        keeper = int(line.split("held by pid ")[1].split(":")[0])
        keepers.append(keeper)
        assert all(map(processExists, workers)) and processExists(keeper)
        os.kill(keeper, signal.SIGTERM)
        waitFor(
            lambda: not any(map(processExists, [keeper, *workers])),
            timeout=30,
            what="the workers to go with the keeper",
        )
    finally:
        killEvery([*keepers, *workers])


@pytest.mark.timeout(90)
def test_theMastersOwnPagesAnswerThroughAnUpgrade(cluster: Any, tmp_path: Path) -> None:
    """
    The health page, the metrics page and the control socket are the same
    sockets after an upgrade: a load balancer's checks throughout it see
    no refusal, and the control socket is still the owner's alone.
    """
    health, metrics = freePort(), freePort()
    c, port, path = web(
        cluster,
        tmp_path,
        workers=2,
        args=(
            "--health",
            f"tcp:{health}:interface=127.0.0.1",
            "--metrics",
            f"tcp:{metrics}:interface=127.0.0.1",
        ),
    )
    checks: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def check() -> None:
        while not stop.is_set():
            try:
                checks.append(get(health, "/health"))
            except OSError as e:
                failures.append(repr(e))

    checker = threading.Thread(target=check, daemon=True)
    checker.start()
    try:
        waitFor(lambda: len(checks) > 20, what="health checks")
        ok(path, "upgrade", timeout=60)
        before = len(checks)
        waitFor(lambda: len(checks) > before + 20, what="health checks after")
    finally:
        stop.set()
        checker.join(15)
    assert failures == []
    assert json.loads(checks[-1])["state"] == "serving"
    assert "twisted_cluster_workers" in get(metrics, "/metrics")
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert generation(path) == 1
    ok(path, "stop")
    assert c.wait() == 0
    assert not path.exists()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("style", ["UNIXServer-wantPID", "UDPServer"])
def test_upgradeKeepsUNIXAndUDPSockets(
    cluster: Any, tmp_path: Path, style: str
) -> None:
    """
    A UNIX socket with its pid lock file, and a UDP socket, are the same
    after an upgrade: served by the same workers, then by a replacement the
    new image forks; the lock still names the master, and at the stop the
    socket file and the lock go.
    """
    path = str(tmp_path / "app.sock")
    udp = freePort(socket.SOCK_DGRAM)
    env = {"LISTEN_STYLE": style, "LISTEN_PATH": path, "LISTEN_PORT": str(udp)}
    c = cluster(WEB.parent / "listen.tac", workers=2, env=env)
    answering = (
        (lambda: udpWorkersAnswering(udp, 2))
        if style == "UDPServer"
        else (lambda: workersAnswering(unix(path), 2))
    )
    control = tmp_path / "twistd.ctl"
    waitFor(lambda: settled(control, 2), what="two workers")
    answering()
    before = workerPids(control)
    ok(control, "upgrade", timeout=60)
    assert generation(control) == 1
    assert set(answering()) == {str(w["id"]) for w in status(control)["workers"]}
    assert workerPids(control) == before
    if style != "UDPServer":
        assert os.readlink(path + ".lock") == str(c.pid)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    waitFor(
        lambda: (
            (s := settled(control, 2)) is not None
            and victim not in {w["pid"] for w in s["workers"]}
        ),
        what="a replacement",
    )
    answering()
    ok(control, "stop")
    assert c.wait() == 0
    # Each worker stopped by itself (a UDP port once made it wait for
    # --graceful-timeout: Twisted's UDP port ends with no reason).
    assert "did not stop in" not in c.log() and "Traceback" not in c.log()
    assert not os.path.exists(path) and not os.path.exists(path + ".lock")


@pytest.mark.timeout(120)
def test_upgradeRunsTheNewCode(cluster: Any, tmp_path: Path) -> None:
    """
    As after C{pip install -U}: once new code is installed (a changed copy
    of the package, first on the master's C{PYTHONPATH}), the master runs
    it after C{upgrade} while the workers run on unchanged; a C{reload}
    then gives them the new code too.
    """
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    c, port, path = clusterWithPath(cluster, tmp_path, shadow)
    before = workerPids(path)
    assert status(path)["master"]["version"] == twisted_cluster.__version__
    installed = shadow / "twisted_cluster"
    shutil.copytree(
        ROOT / "twisted_cluster",
        installed,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    init = installed / "__init__.py"
    init.write_text(init.read_text() + '\n__version__ = "99.0-new"\n')
    # The workers' code, changed too: a worker that loads it says so.
    bootstrap = installed / "worker" / "bootstrap.py"
    bootstrap.write_text(
        bootstrap.read_text() + '\nsys.stderr.write("new worker code\\n")\n'
    )
    with Load(port) as load:
        ok(path, "upgrade", timeout=60)
        waitFor(lambda: len(load.answers) > 20, what="answers after")
    assert load.failures == []
    document = status(path)
    assert document["master"]["version"] == "99.0-new"
    assert workerPids(path) == before
    old = twisted_cluster.__version__
    assert {w["version"] for w in document["workers"]} == {old}
    ids = ", ".join(str(w["id"]) for w in document["workers"])
    assert f"master 99.0-new, upgraded in place 1 time; workers {ids} on {old}" in ok(
        path, "status"
    )
    assert "new worker code" not in c.log()
    ok(path, "reload", timeout=60)
    assert not workerPids(path) & before
    waitFor(lambda: c.log().count("new worker code") == 2, what="the new workers")
    assert {w["version"] for w in status(path)["workers"]} == {"99.0-new"}
    assert " on " not in ok(path, "status").splitlines()[-1]
