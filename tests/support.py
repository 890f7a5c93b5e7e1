"""
Running real clusters in tests: start one, talk to it, and kill every
process it made when the test ends, even if the test failed.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

HERE = Path(__file__).parent
APPS = HERE / "apps"
ROOT = HERE.parent
TWISTD = str(Path(sys.executable).parent / "twistd")

T = TypeVar("T")


class Timeout(AssertionError):
    pass


def waitFor(
    check: Callable[[], T],
    timeout: float = 15.0,
    interval: float = 0.02,
    what: str = "",
) -> T:
    """
    Call C{check} until it returns something true, or fail after C{timeout}.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout}s waiting for {what or check}")
        time.sleep(interval)


def processExists(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _processes(zombies: bool = False) -> Iterator[tuple[int, list[str]]]:
    """
    Every live process (with C{zombies}, every exited and unreaped one
    instead): its pid and the fields of /proc/PID/stat after its name
    (state, ppid, pgrp, ...).
    """
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if (fields[0] == "Z") == zombies:
            yield int(entry), fields


def zombiesOf(pid: int) -> list[int]:
    """
    The children of C{pid} that have exited and not been reaped.
    """
    return [
        child for child, fields in _processes(zombies=True) if int(fields[1]) == pid
    ]


def openDescriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def residentKB(pid: int) -> int:
    """
    The resident set of process C{pid}, in kB (0 if it is gone).
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def childrenOf(pid: int) -> list[int]:
    """
    The live processes whose parent is C{pid}.
    """
    return [child for child, fields in _processes() if int(fields[1]) == pid]


def processGroup(pgid: int) -> list[int]:
    """
    The live processes of process group C{pgid}.
    """
    return [member for member, fields in _processes() if int(fields[2]) == pgid]


def killTree(process: subprocess.Popen[bytes]) -> None:
    """
    SIGKILL a process, its process group and its children (workers have
    process groups of their own), and reap it.
    """
    children = childrenOf(process.pid)
    for kill, target in [(os.killpg, process.pid)] + [(os.kill, c) for c in children]:
        try:
            kill(target, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()
    waitFor(lambda: not any(map(processExists, children)), timeout=10)


def listeningSocket() -> socket.socket:
    """
    A non-blocking TCP socket listening on a free port of 127.0.0.1.
    """
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(16)
    listening.setblocking(False)
    return listening


def freePort(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """
    A C{twistd -n cluster} process of its own process group, with its log and
    standard error in files.  C{app} is the C{.tac} (C{None}: none), C{plugin}
    a twistd plugin and its arguments, given after the others; C{workers}
    C{None} gives no C{--workers}; C{twistd}, twistd's own options (by
    default C{-n --pidfile=}; the log file is always given).
    """

    def __init__(
        self,
        tmp: Path,
        app: str | Path | None,
        workers: int | None = 2,
        env: Mapping[str, str] | None = None,
        args: list[str] | None = None,
        passFds: tuple[int, ...] = (),
        plugin: list[str] | None = None,
        twistd: list[str] | None = None,
    ) -> None:
        self.tmp = tmp
        self.passFds = passFds
        self.logPath = tmp / "cluster.log"
        self.errPath = tmp / "cluster.err"
        if twistd is None:
            twistd = ["-n", "--pidfile="]
        argv = [TWISTD, *twistd, f"--logfile={self.logPath}", "cluster"]
        args = list(args or [])
        if "--spares" not in args:
            # Most tests count worker processes; the spare tests ask for one.
            args += ["--spares", "0"]
        argv += [] if app is None else ["--app", str(app)]
        argv += [] if workers is None else ["--workers", str(workers)]
        argv += [*args, *(plugin or [])]
        self.argv = argv
        self.env = {**os.environ, **(env or {})}
        self.env.pop("TWISTED_CLUSTER_WORKER_ID", None)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Cluster:
        with open(self.errPath, "wb") as err:
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.tmp,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
                pass_fds=self.passFds,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def workerPids(self) -> list[int]:
        return childrenOf(self.pid)

    def log(self) -> str:
        """
        The whole log, including what twistd has rotated away (every 1 MB).
        """
        rotated = sorted(
            self.tmp.glob(self.logPath.name + ".*"),
            key=lambda p: int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0,
            reverse=True,
        )
        parts = [p.read_text() for p in [*rotated, self.logPath] if p.exists()]
        return "".join(parts)

    def stderr(self) -> str:
        return self.errPath.read_text() if self.errPath.exists() else ""

    def wait(self, timeout: float = 15.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def signal(self, number: int) -> None:
        assert self.process is not None
        self.process.send_signal(number)

    def kill(self) -> None:
        """
        Kill the master and everything in its process group.
        """
        if self.process is None:
            return
        workers = self.workerPids()
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(10)
        waitFor(
            lambda: not processGroup(self.pid) and not any(map(processExists, workers)),
            timeout=10,
            what="the cluster's processes to die",
        )


def ask(connect: Callable[[], socket.socket]) -> str:
    """
    Read a greeting from a new connection until the server closes it.
    """
    with connect() as s:
        s.settimeout(5)
        chunks = []
        while chunk := s.recv(1024):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def tcp(port: int) -> Callable[[], socket.socket]:
    return lambda: socket.create_connection(("127.0.0.1", port), timeout=5)


def unix(path: str) -> Callable[[], socket.socket]:
    def connect() -> socket.socket:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(path)
        return s

    return connect


def tls(port: int) -> Callable[[], socket.socket]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE

    def connect() -> socket.socket:
        return context.wrap_socket(tcp(port)())

    return connect


def udp(port: int) -> Callable[[], socket.socket]:
    """
    A "connection" that sends one datagram from a new socket and reads the
    answer (wrapped so that L{ask} works on it).
    """

    class Exchange(socket.socket):
        answered = False

        def recv(self, size: int, flags: int = 0) -> bytes:
            if self.answered:
                return b""
            self.answered = True
            return super().recv(size, flags)

    def connect() -> socket.socket:
        s = Exchange(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        s.send(b"who?")
        return s

    return connect


def firstWord(answer: str) -> str:
    return answer.split()[0]


def workersAnswering(
    connect: Callable[[], socket.socket],
    count: int,
    timeout: float = 15.0,
    who: Callable[[str], str] = firstWord,
) -> dict[str, int]:
    """
    Make new connections until C{count} different workers have answered
    (a worker still starting may not yet listen); return how many answers
    each worker id gave.
    """
    seen: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            answer = ask(connect)
        except OSError:
            time.sleep(0.02)  # nobody listens yet; the deadline bounds this
            continue
        if answer:
            workerId = who(answer)
            seen[workerId] = seen.get(workerId, 0) + 1
            if len(seen) >= count:
                return seen
    raise AssertionError(f"only workers {sorted(seen)} answered in {timeout}s")


def get(port: int, path: str = "/", timeout: float = 10.0) -> str:
    """
    One HTTP/1.0 request on a new connection; the body.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    head, _, body = data.decode().partition("\r\n\r\n")
    if not head.startswith("HTTP/1.0 200") and not head.startswith("HTTP/1.1 200"):
        raise OSError(f"bad answer: {head.splitlines()[:1]}")
    return body


class Load:
    """
    A steady stream of requests from a thread, one connection each, counting
    answers by worker pid and failures, until stopped.
    """

    def __init__(self, port: int) -> None:
        import threading

        self.port = port
        self.answers: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.answers.append(get(self.port))
            except OSError as e:
                self.failures.append(repr(e))

    def pids(self, since: int = 0) -> set[int]:
        return {int(a.split()[1]) for a in self.answers[since:]}


def udpWorkersAnswering(port: int, count: int, timeout: float = 15.0) -> dict[str, int]:
    """
    Like L{workersAnswering} for UDP, in bursts of datagrams from many
    sockets at once: one at a time, the worker that answered last is the
    first awake for the next and may take them all.
    """
    seen: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sockets = []
        for _ in range(32):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(2)
            s.connect(("127.0.0.1", port))
            s.send(b"who?")
            sockets.append(s)
        for s in sockets:
            try:
                workerId = s.recv(1024).decode().split()[0]
                seen[workerId] = seen.get(workerId, 0) + 1
            except ConnectionRefusedError:
                time.sleep(0.02)  # nobody listens yet; the deadline bounds this
            except OSError:
                pass
            finally:
                s.close()
        if len(seen) >= count:
            return seen
    raise AssertionError(f"only workers {sorted(seen)} answered in {timeout}s")


class KeepAlive:
    """
    Clients on HTTP/1.1 keep-alive connections, each in a thread, sending one
    request after another (reconnecting when the server says
    C{Connection: close}) until stopped.  Each failure is kept with the pid
    of the worker that had served that connection (C{None}: it failed before
    any answer on it).

    @ivar answers: how many requests were answered.
    @ivar closes: how many times the server asked to close.
    """

    def __init__(self, port: int, clients: int = 4, path: str = "/") -> None:
        import threading

        self.port = port
        self.path = path
        self.answers = 0
        self.closes = 0
        self.failures: list[tuple[int | None, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, daemon=True) for _ in range(clients)
        ]

    def __enter__(self) -> KeepAlive:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)

    def _run(self) -> None:
        import http.client

        conn: http.client.HTTPConnection | None = None
        pid: int | None = None
        while not self._stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                pid = None
            try:
                conn.request("GET", self.path)
                response = conn.getresponse()
                body = response.read().decode()
                if response.status != 200:
                    raise OSError(f"status {response.status}")
            except (OSError, http.client.HTTPException) as e:
                with self._lock:
                    self.failures.append((pid, repr(e)))
                conn.close()
                conn = None
                continue
            pid = int(body.split()[1])
            with self._lock:
                self.answers += 1
            if response.getheader("Connection", "").lower() == "close":
                with self._lock:
                    self.closes += 1
                conn.close()
                conn = None
        if conn is not None:
            conn.close()


WEB = HERE / "apps" / "web.tac"


def webCluster(
    cluster: Callable[..., Cluster],
    tmp: Path,
    workers: int = 2,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    **kw: Any,
) -> tuple[Cluster, int]:
    """
    Start a cluster of tests/apps/web.tac, version "v1", with the C{cluster}
    fixture (C{kw} for L{Cluster}'s other arguments); the cluster and its
    port.
    """
    port = freePort()
    version = tmp / "version.txt"
    version.write_text("v1")
    started = cluster(
        WEB,
        workers=workers,
        env={"PORT": str(port), "VERSION_FILE": str(version), **(env or {})},
        args=list(args),
        **kw,
    )
    return started, port
