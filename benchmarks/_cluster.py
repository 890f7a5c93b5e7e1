"""
What the benchmarks share: a free port, and a `twistd cluster` of the
example app in a process group of its own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TWISTD = str(Path(sys.executable).parent / "twistd")
APP = ROOT / "examples" / "server.tac"


def answers(port: int, timeout: float = 20.0) -> None:
    """
    Return once something accepts connections on C{port} (at most
    C{timeout} seconds).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing answered on port {port} in {timeout:g}s")


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def exampleCluster(
    port: int,
    workers: int,
    logDir: str,
    stopTimeout: float = 40.0,
    args: tuple[str, ...] = (),
    app: Path = APP,
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """
    Run C{app} (examples/server.tac) on C{workers} workers serving C{port};
    stop it (SIGTERM, then SIGKILL to its group) on the way out.
    """
    master = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", f"--logfile={logDir}/log", "cluster"]
        + ["--app", str(app), "-w", str(workers), *args],
        env={**os.environ, **(env or {}), "PORT": str(port)},
        cwd=logDir,
        start_new_session=True,
    )
    try:
        yield master
    finally:
        master.send_signal(signal.SIGTERM)
        try:
            master.wait(stopTimeout)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(master.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        master.wait()
