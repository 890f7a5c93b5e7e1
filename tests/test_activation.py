"""
systemd's socket activation: a socket passed to the master as descriptor
3 (C{LISTEN_FDS=1}, C{LISTEN_PID} the master's) is the cluster's shared
socket for its address; every worker serves through exactly that socket.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from twisted_cluster.master.activation import activatedSockets, requestsOf
from twisted_cluster.request import ListenRequest

from .support import TWISTD, childrenOf, get, killTree, waitFor

APPS = Path(__file__).parent / "apps"


def test_onlyForThisProcess() -> None:
    environ = {"LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "web"}
    assert activatedSockets(environ, pid=os.getpid()) == []
    assert environ == {}  # the workers inherit none of it either way


def test_requestsOfAWildcardSocket() -> None:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        port = sock.getsockname()[1]
        assert requestsOf(sock) == [
            ListenRequest("tcp", interface="0.0.0.0", port=port),
            ListenRequest("tcp", interface="", port=port),
        ]
    with socket.socket(type=socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        assert requestsOf(sock)[0].kind == "udp"


def _inode(pid: int | str, fd: int) -> str:
    return os.readlink(f"/proc/{pid}/fd/{fd}")


def _listening(port: int) -> int:
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A" and int(local.split(":")[1], 16) == port:
                    count += 1
    return count


@pytest.mark.timeout(60)
@pytest.mark.parametrize("app", ["web.tac", "systemd.tac"])
def test_workersServeTheActivatedSocket(tmp_path: Path, app: str) -> None:
    """
    Whether the app listens on the activated address (web.tac's
    C{listenTCP(PORT)}) or with a C{systemd:} endpoint, every worker serves
    through the socket passed, and the master binds none of its own.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(50)
    port = sock.getsockname()[1]
    version = tmp_path / "version.txt"
    version.write_text("v1")
    fd = sock.fileno()
    # As systemd does: the socket at descriptor 3, LISTEN_PID the pid that
    # runs the master (exec keeps it).
    script = (
        "import os, sys; "
        f"os.dup2({fd}, 3); os.close({fd}); "
        "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1'); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    argv = [TWISTD, "-n", "--pidfile=", f"--logfile={tmp_path / 'log'}"]
    argv += ["cluster", "--app", str(APPS / app), "-w", "2", "--spares", "0"]
    master = subprocess.Popen(
        [sys.executable, "-c", script, *argv],
        cwd=tmp_path,
        env={**os.environ, "PORT": str(port), "VERSION_FILE": str(version)},
        pass_fds=(fd,),
        start_new_session=True,
    )
    try:
        mine = _inode("self", fd)
        pids: set[int] = set()

        def bothServe() -> bool:
            pids.add(int(get(port, timeout=5).split()[1]))
            return len(pids) == 2

        waitFor(bothServe, what="both workers to serve")
        assert set(childrenOf(master.pid)) == pids
        for pid in pids:
            assert mine in _sockets(pid)
        # No socket of its own: the one passed is the only one listening.
        assert _listening(port) == 1
        assert "(activated)" in (tmp_path / "log").read_text()

        # Upgraded in place, the master still shares the socket passed, and
        # a replacement the new image forks serves through it too.
        from .test_control import ok

        ok(tmp_path / "twistd.ctl", "upgrade", timeout=60)
        assert mine in _sockets(master.pid)
        os.kill(min(pids), signal.SIGKILL)
        fresh: set[int] = set()

        def replacementServes() -> bool:
            fresh.add(int(get(port, timeout=5).split()[1]))
            return bool(fresh - pids)

        waitFor(replacementServes, what="the replacement to serve")
        (replacement,) = fresh - pids
        assert mine in _sockets(replacement)
        assert _listening(port) == 1
    finally:
        killTree(master)
        sock.close()


def _sockets(pid: int) -> list[str]:
    """
    The sockets process C{pid} holds, by inode.
    """
    return [
        _inode(pid, int(n))
        for n in os.listdir(f"/proc/{pid}/fd")
        if _inode(pid, int(n)).startswith("socket:")
    ]
