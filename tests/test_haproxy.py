"""
Several hosts behind a real HAProxy (Debian's C{haproxy}; C{make test}
installs it as root where it is missing): two clusters, on 127.0.0.2 and
127.0.0.3, each with C{--health} and C{--shutdown-delay}, and HAProxy on
127.0.0.1 checking C{GET /health} on each, with retries and redispatch (the
settings of C{examples/haproxy/haproxy.cfg}).  Clients send requests
through it without pause while one host is stopped (SIGTERM), started
again, and each host reloaded in turn (SIGHUP): no request may fail in any
phase.  It runs with HAProxy's default server-side keep-alive and with
C{option http-server-close}, and once more with nothing retried, so that no
HAProxy retry hides a request the cluster failed: the health checks and the
shutdown delay alone then keep every request whole (without the delay, 4 of
a stop's requests failed there; with retries and no delay, none did).
Each phase's counts are printed (C{pytest -s}):
C{PHASE steady (keep-alive): 4418 requests, 0 failed in 1.0s (...)}.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .support import APPS, Cluster, waitFor

HOSTS = ("127.0.0.2", "127.0.0.3")
SHUTDOWN_DELAY = 2.0
CLIENTS = 4
MIN_REQUESTS = 300
"""Requests each phase sees at least, so that it is real traffic."""


def haproxyCommand() -> str | None:
    """
    HAProxy's path: Debian puts it in /usr/sbin, which a user's PATH may lack.
    """
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    return shutil.which("haproxy", path=path)


HAPROXY = haproxyCommand()

pytestmark = pytest.mark.skipif(
    HAPROXY is None,
    reason="haproxy is not installed (make test installs it when run as root: "
    "apt-get install haproxy)",
)


def freePortOnAll() -> int:
    """
    A TCP port free on every address, so on each of the test's hosts.
    """
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


MODES = {
    "keep-alive": "",
    "http-server-close": "option http-server-close",
    # Nothing retried: the health checks and the cluster's draining alone.
    "keep-alive-no-retries": "retries 0\n    no option redispatch\n    retry-on none",
}
"""HAProxy's connection modes, and what each adds to its defaults."""


def configuration(port: int, appPort: int, healthPort: int, mode: str) -> str:
    """
    HAProxy on 127.0.0.1:C{port} in front of both hosts, as
    C{examples/haproxy/haproxy.cfg} but with the test's ports, and C{mode}
    (one of L{MODES}) at the end of its defaults.
    """
    servers = "\n".join(
        f"    server {name} {host}:{appPort} check port {healthPort}"
        for name, host in zip("ab", HOSTS, strict=True)
    )
    return f"""\
global
    maxconn 512
    nbthread 1

defaults
    mode http
    timeout connect 2s
    timeout client 15s
    timeout server 15s
    retries 3
    option redispatch 1
    retry-on all-retryable-errors
    {MODES[mode]}

frontend front
    bind 127.0.0.1:{port}
    default_backend hosts

backend hosts
    balance roundrobin
    http-request disable-l7-retry unless METH_GET
    option httpchk GET /health
    http-check expect status 200
    default-server inter 200ms fall 1 rise 1
{servers}
"""


@dataclass
class Clients:
    """
    C{CLIENTS} threads sending requests through HAProxy on keep-alive
    connections (a new one after a failure or C{Connection: close}), each
    answer and failure counted under the phase in which its request began.
    """

    port: int
    phase: str = "steady"
    answers: dict[str, list[str]] = field(default_factory=dict)
    began: dict[str, float] = field(default_factory=dict)
    failures: dict[str, list[str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for _ in range(CLIENTS):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(20)

    def enter(self, phase: str) -> None:
        with self._lock:
            self.phase = phase
            self.began[phase] = time.monotonic()
            self.answers.setdefault(phase, [])
            self.failures.setdefault(phase, [])

    def count(self, phase: str) -> int:
        with self._lock:
            return len(self.answers[phase]) + len(self.failures[phase])

    def hosts(self, phase: str) -> dict[str, int]:
        """
        How many answers each host gave in C{phase}.
        """
        with self._lock:
            answers = list(self.answers[phase])
        counts: dict[str, int] = {}
        for answer in answers:
            counts[answer.split()[0]] = counts.get(answer.split()[0], 0) + 1
        return counts

    def pids(self, phase: str, address: str) -> set[int]:
        """
        The workers of the host at C{address} that answered in C{phase}.
        """
        with self._lock:
            answers = [a.split() for a in self.answers[phase]]
        return {int(pid) for host, _, pid in answers if host == address}

    def _run(self) -> None:
        connection: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            if connection is None:
                connection = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=15
                )
            phase = self.phase
            try:
                connection.request("GET", "/")
                response = connection.getresponse()
                body = response.read().decode()
                if response.status != 200:
                    raise OSError(f"status {response.status}: {body[:80]!r}")
            except (OSError, http.client.HTTPException) as e:
                with self._lock:
                    self.failures[phase].append(repr(e))
                connection.close()
                connection = None
                continue
            with self._lock:
                self.answers[phase].append(body)
            if response.getheader("Connection", "").lower() == "close":
                connection.close()
                connection = None
        if connection is not None:
            connection.close()


@pytest.fixture
def processes() -> Iterator[list[Cluster | subprocess.Popen[bytes]]]:
    """
    Every cluster and HAProxy the test starts, killed when it ends.
    """
    started: list[Cluster | subprocess.Popen[bytes]] = []
    yield started
    for p in reversed(started):
        if isinstance(p, Cluster):
            p.kill()
        else:
            p.kill()
            p.wait(10)


def host(tmp: Path, name: str, address: str, appPort: int, healthPort: int) -> Cluster:
    directory = tmp / name
    directory.mkdir(exist_ok=True)
    return Cluster(
        directory,
        APPS / "host.tac",
        workers=2,
        env={"HOST": address, "PORT": str(appPort)},
        args=[
            "--health",
            f"tcp:{healthPort}:interface={address}",
            "--shutdown-delay",
            str(SHUTDOWN_DELAY),
        ],
    )


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", list(MODES))
def test_noRequestFailsBehindHAProxy(
    mode: str, tmp_path: Path, processes: list[Cluster | subprocess.Popen[bytes]]
) -> None:
    assert HAPROXY is not None
    began = time.monotonic()
    appPort, healthPort, port = freePortOnAll(), freePortOnAll(), freePortOnAll()
    a = host(tmp_path, "a", HOSTS[0], appPort, healthPort)
    b = host(tmp_path, "b", HOSTS[1], appPort, healthPort)
    for c in (a, b):
        processes.append(c.start())
    config = tmp_path / "haproxy.cfg"
    config.write_text(configuration(port, appPort, healthPort, mode))
    with open(tmp_path / "haproxy.out", "wb") as out:
        proxy = subprocess.Popen(
            [HAPROXY, "-f", str(config), "-db"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    processes.append(proxy)

    clients = Clients(port)
    clients.enter("warm-up")
    # Both hosts up and seen healthy by HAProxy before counting.
    clients.start()
    waitFor(
        lambda: (
            clients.hosts("warm-up").keys() == set(HOSTS) or proxy.poll() is not None
        ),
        timeout=30,
        what="both hosts to answer through haproxy",
    )
    assert proxy.poll() is None, (tmp_path / "haproxy.out").read_text()

    def phase(name: str) -> None:
        clients.enter(name)

    def enough(name: str) -> bool:
        return clients.count(name) >= MIN_REQUESTS

    def reload(c: Cluster, address: str, name: str) -> None:
        """
        SIGHUP C{c}, wait for its reload to end, then for its new workers'
        answers to reach the clients.
        """
        old, reloads = set(c.workerPids()), c.log().count("Reload done")
        phase(name)
        c.signal(signal.SIGHUP)
        waitFor(lambda: c.log().count("Reload done") > reloads, timeout=30, what=name)
        fresh = set(c.workerPids()) - old
        assert fresh, "no new worker"
        waitFor(
            lambda: clients.pids(name, address) & fresh and enough(name),
            timeout=20,
            what=f"the new workers' answers in {name}",
        )

    try:
        phase("steady")
        # A second of both hosts' answers.
        waitFor(
            lambda: (
                enough("steady")
                and time.monotonic() - clients.began["steady"] >= 1.0
                and min(clients.hosts("steady").values()) >= MIN_REQUESTS // 4
            ),
            timeout=20,
            what="steady traffic from both hosts",
        )

        phase("stop A")
        a.signal(signal.SIGTERM)
        assert a.wait(timeout=30) == 0
        waitFor(lambda: enough("stop A"), timeout=20, what="traffic after A's stop")

        phase("A back")
        a.start()
        waitFor(
            lambda: HOSTS[0] in clients.hosts("A back") and enough("A back"),
            timeout=30,
            what="A's answers through haproxy again",
        )

        reload(a, HOSTS[0], "reload A")
        reload(b, HOSTS[1], "reload B")
        phase("end")
    finally:
        clients.stop()

    phases = ["steady", "stop A", "A back", "reload A", "reload B"]
    for name, after in zip(phases, [*phases[1:], "end"], strict=True):
        seconds = clients.began[after] - clients.began[name]
        hosts = ", ".join(f"{h}: {n}" for h, n in sorted(clients.hosts(name).items()))
        print(
            f"PHASE {name} ({mode}): {clients.count(name)} requests, "
            f"{len(clients.failures[name])} failed in {seconds:.1f}s ({hosts})"
        )
    print(f"haproxy test ({mode}) took {time.monotonic() - began:.1f}s")
    failed = {
        name: clients.failures[name][:5] for name in phases if clients.failures[name]
    }
    assert not failed, failed
