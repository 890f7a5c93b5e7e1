"""
The helper that runs this checkout's code as C{nobody} (L{tests.nobody}),
and a cluster that drops privileges to C{nobody}.
"""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from .nobody import (
    asNobody,
    cleanEnviron,
    nobodyIds,
    twistdScript,
)
from .support import APPS, childrenOf, freePort, get, killTree, waitFor


def runAsNobody(argv: list[str | Path], cwd: Path) -> str:
    """
    Run C{argv} as C{nobody}; its standard output.
    """
    done = subprocess.run(
        asNobody(argv), cwd=cwd, env=cleanEnviron(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def ids(pid: int) -> dict[str, list[int]]:
    """
    The C{Uid}, C{Gid} and C{Groups} lines of C{/proc/PID/status}.
    """
    found = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid", "Groups"):
                found[key] = [int(n) for n in value.split()]
    return found


def test_interpreter(nobodyPython: Path, nobodyWorkdir: Path) -> None:
    """
    Run as C{nobody}, the interpreter imports this checkout's code (its
    copy beside the interpreter) and Twisted's TLS.
    """
    out = runAsNobody(
        [
            nobodyPython,
            "-c",
            "import os, twisted, twisted_cluster, twisted.internet.ssl\n"
            "print(os.getuid(), os.getgid(), os.getgroups())\n"
            "print(twisted_cluster.__file__)",
        ],
        cwd=nobodyWorkdir,
    )
    uid, gid = nobodyIds()
    lines = out.splitlines()
    assert lines[0] == f"{uid} {gid} []"
    assert Path(lines[1]).is_relative_to(nobodyPython.parent.parent)


def test_twistd(nobodyPython: Path, nobodyWorkdir: Path) -> None:
    """
    Run as C{nobody}, C{twistd} knows C{cluster}, and Twisted finds every
    plugin cache fresh: it tries to write none.
    """
    out = runAsNobody([twistdScript(nobodyPython), "--help"], cwd=nobodyWorkdir)
    assert re.search(r"^\s+cluster\s", out, re.MULTILINE), out
    out = runAsNobody(
        [
            nobodyPython,
            "-c",
            "from twisted.python.filepath import FilePath\n"
            "written = []\n"
            "FilePath.setContent = lambda self, *a, **k: written.append(self.path)\n"
            "from twisted.plugin import IPlugin, getPlugins\n"
            "print(len(list(getPlugins(IPlugin))), written)",
        ],
        cwd=nobodyWorkdir,
    )
    count, written = out.split(" ", 1)
    assert int(count) > 0
    assert written.strip() == "[]"


def lowPort() -> int:
    """
    A free TCP port below 1024 on 127.0.0.1.
    """
    import socket

    for port in range(1023, 900, -1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port below 1024 on 127.0.0.1")


def startAsNobody(
    nobodyPython: Path, workdir: Path, logTo: str, port: int, args=()
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """
    Start, as root, a cluster of tests/apps/web.tac on C{port} that drops
    to C{nobody}; the process, its log and its standard error.
    """
    app = workdir / "web.tac"
    shutil.copyfile(APPS / "web.tac", app)
    version = workdir / "version"
    version.write_text("1\n")
    out, err = workdir / "cluster.out", workdir / "cluster.err"
    log = out if logTo == "stdout" else workdir / "cluster.log"
    argv: list[str | Path] = [twistdScript(nobodyPython), "-n", "--pidfile="]
    argv += ["--logfile=-" if logTo == "stdout" else f"--logfile={log}"]
    argv += ["-u", "nobody", "-g", "nogroup", "cluster", "--app", str(app)]
    argv += ["--workers", "2", "--spares", "0", *args]
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        process = subprocess.Popen(
            argv,
            cwd=workdir,
            env=cleanEnviron(PORT=str(port), VERSION_FILE=str(version)),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    return process, log, err


def servesAsNobody(process: subprocess.Popen[bytes], log: Path, err: Path, port: int):
    """
    Wait until two workers answer on C{port}; check that they and the
    master run as C{nobody}.
    """
    served: set[int] = set()

    def bothWorkersServed() -> bool:
        if process.poll() is not None:
            raise AssertionError(
                f"twistd exited {process.returncode}:\n"
                f"{err.read_text()}\n{log.read_text() if log.exists() else ''}"
            )
        try:
            served.add(int(get(port, timeout=2).split()[1]))
        except OSError:
            pass
        return len(served) == 2

    waitFor(bothWorkersServed, timeout=30, what="two workers to answer")
    workers = childrenOf(process.pid)
    assert served <= set(workers), (served, workers)
    uid, gid = nobodyIds()
    for pid in [process.pid, *workers]:
        found = ids(pid)
        assert found["Uid"] == [uid] * 4 and found["Gid"] == [gid] * 4, found
        # twistd calls initgroups: nobody's groups, root's none.
        assert set(found["Groups"]) <= {gid}, found


@pytest.mark.parametrize("logTo", ["stdout", "file"])
def test_dropPrivileges(nobodyPython: Path, nobodyWorkdir: Path, logTo: str) -> None:
    """
    Started as root with C{-u nobody -g nogroup}, the master runs as
    C{nobody} once it serves, and so do the workers it spawns; with its log
    on its standard output or in a file (which the workers open too).
    """
    port = freePort()
    process, log, err = startAsNobody(nobodyPython, nobodyWorkdir, logTo, port)
    try:
        servesAsNobody(process, log, err, port)
        # The control socket is made after the drop: the user's alone.
        control = (nobodyWorkdir / "twistd.ctl").stat()
        assert control.st_uid == nobodyIds()[0]
        assert stat.S_IMODE(control.st_mode) == 0o600
    finally:
        killTree(process)


def test_privilegedPortWithBind(nobodyPython: Path, nobodyWorkdir: Path) -> None:
    """
    With C{--bind}, a port below 1024 is bound as root and served by
    workers that, like the master, run as C{nobody}.
    """
    process, log, err, port = startWithBind(nobodyPython, nobodyWorkdir)
    try:
        servesAsNobody(process, log, err, port)
    finally:
        killTree(process)


def startWithBind(
    nobodyPython: Path, nobodyWorkdir: Path
) -> tuple[subprocess.Popen[bytes], Path, Path, int]:
    """
    L{startAsNobody} on a port below 1024, bound as root with C{--bind};
    the port last.
    """
    port = lowPort()
    bind = f"tcp:{port}:interface=127.0.0.1"
    process, log, err = startAsNobody(
        nobodyPython, nobodyWorkdir, "file", port, ["--bind", bind]
    )
    return process, log, err, port


def test_privilegedPortWithoutBind(nobodyPython: Path, nobodyWorkdir: Path) -> None:
    """
    Without C{--bind}, a port below 1024 fails in one line that says to add
    it, and the master exits non-zero.
    """
    port = lowPort()
    process, log, err = startAsNobody(nobodyPython, nobodyWorkdir, "file", port)
    try:
        assert process.wait(20) != 0
    finally:
        killTree(process)
    lines = err.read_text().strip().splitlines()
    assert lines == [
        f"twisted-cluster: cannot listen on TCP port {port} on 127.0.0.1: "
        f"Permission denied (bind it before privileges are dropped: "
        f"--bind tcp:{port}:interface=127.0.0.1)"
    ], lines


def test_unreadableApp(nobodyPython: Path, nobodyWorkdir: Path) -> None:
    """
    An app the user cannot read is one line and a non-zero exit, before any
    worker starts.
    """
    app = nobodyWorkdir / "secret.tac"
    shutil.copyfile(APPS / "web.tac", app)
    app.chmod(0o000)
    process = subprocess.run(
        asNobody([twistdScript(nobodyPython), "-n", "--pidfile=", "--logfile=-"])
        + ["cluster", "--app", str(app)],
        cwd=nobodyWorkdir,
        env=cleanEnviron(),
        capture_output=True,
        timeout=20,
    )
    assert process.returncode != 0
    assert process.stderr.decode().strip().splitlines() == [
        f"twistd cluster: --app {app}: Permission denied (see --help)"
    ]


def test_upgradeAfterDroppingPrivileges(
    nobodyPython: Path, nobodyWorkdir: Path
) -> None:
    """
    A master that bound a port below 1024 as root and runs as C{nobody}
    upgrades in place: the new image, C{nobody} from the start, could not
    bind that port, and serves on it all the same, with the same workers,
    as C{nobody}; the control socket stays C{nobody}'s alone.
    """
    from .test_control import ok, status

    process, log, err, port = startWithBind(nobodyPython, nobodyWorkdir)
    try:
        servesAsNobody(process, log, err, port)
        control = nobodyWorkdir / "twistd.ctl"
        workers = set(childrenOf(process.pid))
        done = ok(control, "upgrade", timeout=60)
        assert "generation 1" in done
        assert status(control)["master"]["generation"] == 1
        assert set(childrenOf(process.pid)) == workers
        servesAsNobody(process, log, err, port)
        mode = control.stat()
        assert mode.st_uid == nobodyIds()[0] and stat.S_IMODE(mode.st_mode) == 0o600
    finally:
        killTree(process)
