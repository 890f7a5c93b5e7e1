"""
Chaos under load: clients on fresh and keep-alive connections, a driver
that kills, stops, reloads and scales a cluster at random, and the
attribution of every failed connection to what the driver did.

A failure is allowed only if the worker that had accepted its connection
was SIGKILLed or SIGSTOPped by the driver before the failure (a stopped
worker is then killed by the cluster: its watchdog, or the graceful timeout
of a retiring one).  Everything else is a defect: a refused connection, a
failure on a worker that was only retired (reload, scale-down) or never
touched, and a failure that no worker had accepted (unattributed).

Workers record each connection they accept, and how it ended, in
CONN_DIR/conns-<pid> (tests/apps/chaos.tac): a failed connection is traced
to its worker by its client port (and, as ports are reused, by time).  The
one gap: a worker killed or stopped between its accept() and the record;
such a failure (a reset or empty reply, no record, a worker signalled within
L{ACCEPT_WINDOW} after the connection began, breaking as that worker died)
is put down to that worker, and listed as inferred.

Used by tests/test_chaos.py and benchmarks/soak.py (put the repository's
root on sys.path and import C{tests.chaos}).
"""

from __future__ import annotations

import http.client
import os
import random
import re
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .support import APPS, Cluster, childrenOf, freePort, get, processExists, waitFor

APP = APPS / "chaos.tac"
CLIENT_TIMEOUT = 15.0
"""Seconds a client waits on a socket: more than --timeout + killGrace (5 s),
so that what a stopped worker held is failed by its death, not by us."""

# An accept is recorded after the client's connect() began, give or take this.
_SLACK = 0.01


def chaosArgs(scheduling: str, spares: int = 1) -> list[str]:
    """
    The cluster options chaos runs with.  A stopped worker is found hung
    after 2 s, one stopped while it starts after 8 s; restarts back off to
    at most 1 s, so that a slot that keeps dying is not left unserved for
    longer than a client waits (the default 30 s is a policy for a crashing
    app, not what is under test here).
    """
    return [
        "--scheduling",
        scheduling,
        "--spares",
        str(spares),
        "--graceful-timeout",
        "10",
        "--timeout",
        "2",
        "--boot-timeout",
        "8",
        "--restart-delay",
        "0.1",
        "--max-restart-delay",
        "1",
    ]


def startChaosCluster(
    start: Callable[..., Cluster],
    tmp: Path,
    scheduling: str,
    workers: int = 2,
    spares: int = 1,
) -> tuple[Cluster, int, Path]:
    """
    Start tests/apps/chaos.tac with C{start} (the tests' C{cluster} fixture,
    or L{Cluster} and its C{start}); wait until C{workers} workers serve.
    Return the cluster, its port and the directory of connection records.
    """
    port = freePort()
    connDir = tmp / "conns"
    connDir.mkdir(exist_ok=True)
    c = start(
        APP,
        workers=workers,
        env={"PORT": str(port), "CONN_DIR": str(connDir)},
        args=chaosArgs(scheduling, spares),
    )
    waitFor(
        lambda: len(servingPids(port, 40)) >= workers,
        timeout=30,
        what=f"{workers} workers serving",
    )
    return c, port, connDir


def servingPids(port: int, tries: int = 40) -> set[int]:
    """
    The pids that answer C{tries} new connections.
    """
    pids = set()
    for _ in range(tries):
        try:
            pids.add(int(get(port, timeout=2).split()[1]))
        except (OSError, ValueError, IndexError):
            pass
    return pids


# The clients


@dataclass
class Failure:
    """
    A request that failed.

    @ivar kind: refused, reset, empty reply, timeout, bad status, bad reply.
    @ivar client: C{fresh} or C{keep-alive}.
    @ivar port: the client's local port, if it got one.
    @ivar pid: the worker that had answered on this keep-alive connection.
    @ivar started: when the connection's connect() began.
    @ivar time: when the failure was seen.
    @ivar nextUse: when the client port was next used for a connection.
    """

    kind: str
    client: str
    port: int | None
    pid: int | None
    started: float
    time: float
    detail: str
    nextUse: float | None = None


def classify(e: BaseException) -> str:
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    if isinstance(e, http.client.RemoteDisconnected):
        return "empty reply"
    if isinstance(e, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "reset"
    if isinstance(e, TimeoutError):
        return "timeout"
    if isinstance(e, _BadStatus):
        return "bad status"
    if isinstance(e, _Empty):
        return "empty reply"
    return "bad reply"


class _BadStatus(Exception):
    pass


class _Empty(Exception):
    pass


class _BadReply(Exception):
    pass


class Clients:
    """
    C{fresh} threads sending one HTTP/1.0 request per connection and
    C{keepAlive} threads sending HTTP/1.1 requests one after another on a
    connection (a new one when the server says C{Connection: close} or the
    connection failed), each until C{until} (a C{time.monotonic()} value).

    @ivar answers: answered requests, by the pid that answered.
    @ivar failures: every L{Failure}.
    @ivar closes: how many times a server asked a keep-alive client to close.
    """

    def __init__(
        self,
        port: int,
        until: float,
        fresh: int = 2,
        keepAlive: int = 2,
        timeout: float = CLIENT_TIMEOUT,
    ) -> None:
        self.port = port
        self.until = until
        self.timeout = timeout
        self.answers: Counter[int] = Counter()
        self.failures: list[Failure] = []
        self.closes = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._waitingReuse: dict[int, list[Failure]] = {}
        self._threads = [
            threading.Thread(target=self._fresh, daemon=True) for _ in range(fresh)
        ] + [
            threading.Thread(target=self._keepAlive, daemon=True)
            for _ in range(keepAlive)
        ]

    def start(self) -> Clients:
        for t in self._threads:
            t.start()
        return self

    def join(self) -> None:
        """
        Wait for every client to end (each ends by C{until}, plus at most one
        request's timeout).
        """
        for t in self._threads:
            t.join(max(0.0, self.until - time.monotonic()) + 2 * self.timeout + 5)
        alive = [t for t in self._threads if t.is_alive()]
        assert not alive, f"{len(alive)} clients did not end"

    @property
    def requests(self) -> int:
        return sum(self.answers.values()) + len(self.failures)

    def _connected(self, localPort: int, started: float) -> None:
        with self._lock:
            self.connections += 1
            for failure in self._waitingReuse.pop(localPort, []):
                failure.nextUse = started

    def _failed(self, failure: Failure) -> None:
        with self._lock:
            self.failures.append(failure)
            if failure.port is not None:
                self._waitingReuse.setdefault(failure.port, []).append(failure)

    def _answered(self, pid: int) -> None:
        with self._lock:
            self.answers[pid] += 1

    def _fresh(self) -> None:
        request = b"GET / HTTP/1.0\r\nHost: x\r\n\r\n"
        while time.monotonic() < self.until:
            localPort = None
            started = time.monotonic()
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.settimeout(self.timeout)
                try:
                    s.connect(("127.0.0.1", self.port))
                finally:
                    localPort = _localPort(s)
                    if localPort is not None:
                        self._connected(localPort, started)
                s.sendall(request)
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
                pid = _parse(data)
            except Exception as e:
                self._failed(
                    Failure(
                        classify(e),
                        "fresh",
                        localPort,
                        None,
                        started,
                        time.monotonic(),
                        repr(e),
                    )
                )
            else:
                self._answered(pid)
            finally:
                s.close()

    def _keepAlive(self) -> None:
        while time.monotonic() < self.until:
            started = time.monotonic()
            conn = http.client.HTTPConnection(
                "127.0.0.1", self.port, timeout=self.timeout
            )
            localPort = None
            pid: int | None = None
            try:
                try:
                    conn.connect()
                finally:
                    if conn.sock is not None:
                        localPort = _localPort(conn.sock)
                        if localPort is not None:
                            self._connected(localPort, started)
                while time.monotonic() < self.until:
                    conn.request("GET", "/")
                    response = conn.getresponse()
                    body = response.read()
                    if response.status != 200:
                        raise _BadStatus(f"status {response.status}")
                    pid = _pidOf(body)
                    self._answered(pid)
                    if response.getheader("Connection", "").lower() == "close":
                        with self._lock:
                            self.closes += 1
                        break
            except Exception as e:
                self._failed(
                    Failure(
                        classify(e),
                        "keep-alive",
                        localPort,
                        pid,
                        started,
                        time.monotonic(),
                        repr(e),
                    )
                )
            finally:
                conn.close()


def _localPort(s: socket.socket) -> int | None:
    try:
        port = int(s.getsockname()[1])
    except OSError:
        return None
    return port or None


def _pidOf(body: bytes) -> int:
    try:
        return int(body.split()[1])
    except (IndexError, ValueError):
        raise _BadReply(f"body {body[:80]!r}")


def _parse(data: bytes) -> int:
    """
    The pid that answered an HTTP/1.0 response read to its end.
    """
    if not data:
        raise _Empty("no reply")
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise _BadReply(f"incomplete head {data[:80]!r}")
    status = head.split(b"\r\n", 1)[0]
    if not status.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")):
        raise _BadStatus(status.decode(errors="replace"))
    return _pidOf(body)


# The cluster's log


@dataclass
class WorkerSeen:
    """
    What the log has said of one worker.
    """

    id: int
    pid: int
    listening: bool = False
    spare: bool = False
    retired: str | None = None
    hung: bool = False
    dead: str | None = None
    deadAt: float | None = None  # the log's time of the death, whole seconds

    def describe(self) -> str:
        if self.dead is not None:
            state = f"dead: {self.dead}"
        elif self.retired is not None:
            state = f"retiring ({self.retired})"
        elif self.listening:
            state = "listening"
        elif self.spare:
            state = "a spare taken for a slot, not listening yet"
        else:
            state = "online, not listening (a spare, or starting)"
        return f"worker {self.id}, {state}" + (", found hung" if self.hung else "")


class LogWatch:
    """
    What the master's lines in the cluster's log say about workers, reloads
    and scaling.

    Each poll reads the whole log again: the master's twistd log file is
    not opened for appending, so its lines can land over what workers
    appended since its previous line, where a reader that follows the end
    of the file has already been.
    """

    ONLINE = re.compile(r"Worker (\d+) \(pid (\d+)\) is online")
    LISTENING = re.compile(r"Worker (\d+) is listening on")
    TAKEN = re.compile(r"Spare worker (\d+) takes slot")
    RETIRING = re.compile(r"Retiring worker (\d+) \(([^)]*)\)")
    HUNG = re.compile(r"Worker (\d+) \(pid (\d+)\) has not answered heartbeats")
    DEAD = re.compile(r"Worker (\d+) \(pid (\d+)\) is dead: (.*)")

    PHRASES = {
        "reloads started": "Reloading: replacing",
        "reloads done": "Reload done",
        "reloads aborted": "Reload aborted",
        "not reloading": "Not reloading",
        "scaled up": "Scaling up to",
        "scaled down": "Scaling down to",
        "spares taken": "takes slot",
        "spares died unused": "died unused",
        "spares off": "going on without spares",
        "flapping": "Workers are flapping",
        "hung": "has not answered heartbeats",
        "killed at graceful timeout": "did not stop in",
        "dropped by the round-robin master": "one was dropped",
        "fatal": "Stopping the cluster",
    }

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._size = -1
        self.counts: Counter[str] = Counter()
        self.workers: dict[int, WorkerSeen] = {}  # by id
        self.byPid: dict[int, WorkerSeen] = {}

    def poll(self) -> None:
        text = self.cluster.log()
        if len(text) == self._size:
            return
        self._size = len(text)
        self.counts = Counter()
        self.workers, self.byPid = {}, {}
        for line in text.splitlines():
            if "Traceback (most recent call last)" in line:
                self.counts["tracebacks"] += 1
            if "[twisted_cluster.master." in line:
                self._line(line)

    def _line(self, line: str) -> None:
        for name, phrase in self.PHRASES.items():
            if phrase in line:
                self.counts[name] += 1
        if m := self.ONLINE.search(line):
            new = WorkerSeen(int(m[1]), int(m[2]))
            self.workers[new.id] = self.byPid[new.pid] = new
            return
        for pattern in (self.LISTENING, self.TAKEN, self.RETIRING, self.HUNG):
            if (m := pattern.search(line)) and (seen := self.workers.get(int(m[1]))):
                if pattern is self.LISTENING:
                    seen.listening = True
                elif pattern is self.TAKEN:
                    seen.spare = True
                elif pattern is self.RETIRING:
                    seen.retired = m[2]
                else:
                    seen.hung = True
                return
        if (m := self.DEAD.search(line)) and (dead := self.workers.get(int(m[1]))):
            dead.dead = m[3].strip()
            dead.deadAt = _logTime(line)

    @property
    def reloading(self) -> bool:
        c = self.counts
        return c["reloads started"] > c["reloads done"] + c["reloads aborted"]

    @property
    def retired(self) -> dict[int, str]:
        """
        The pids retired (reload, scale-down), and why.
        """
        return {w.pid: w.retired for w in self.workers.values() if w.retired}

    def describe(self, pid: int) -> str:
        seen = self.byPid.get(pid)
        return seen.describe() if seen else "not online (starting)"


def _logTime(line: str) -> float | None:
    """
    The time (epoch seconds) of a twistd log line, to the second.
    """
    try:
        return datetime.strptime(line[:24], "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return None


# The driver


@dataclass
class Action:
    time: float
    name: str
    pid: int | None = None
    target: str = ""  # what the log said of the pid then


class Driver:
    """
    Every C{interval} seconds (seeded random), one of: SIGKILL or SIGSTOP a
    random worker, SIGHUP (a reload; not while one is under way), SIGTTIN
    or SIGTTOU the master, keeping the wanted count of workers within
    C{minWorkers}..C{maxWorkers}.  A stopped worker is never continued.

    C{targets} is C{"any"}: every child of the master (serving, retiring,
    starting, spare), or C{"listening"}: only workers the log says listen
    (to look past what hits starting workers).
    """

    WEIGHTS = {"kill": 3, "stop": 2, "hup": 2, "ttin": 2, "ttou": 2}

    def __init__(
        self,
        cluster: Cluster,
        log: LogWatch,
        until: float,
        seed: int,
        workers: int,
        minWorkers: int = 1,
        maxWorkers: int = 4,
        interval: tuple[float, float] = (0.3, 0.7),
        targets: str = "any",
    ) -> None:
        assert targets in ("any", "listening"), targets
        self.cluster = cluster
        self.log = log
        self.until = until
        self.random = random.Random(seed)
        self.count = workers
        self.minWorkers = minWorkers
        self.maxWorkers = maxWorkers
        self.interval = interval
        self.targets = targets
        self.actions: list[Action] = []
        self.killed: dict[int, float] = {}
        self.stopped: dict[int, float] = {}
        self.hups = 0
        self.hupsSkipped = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Driver:
        self._thread.start()
        return self

    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self) -> None:
        self._thread.join(max(0.0, self.until - time.monotonic()) + 10)
        assert not self._thread.is_alive(), "the chaos driver did not end"
        if self.error is not None:
            raise self.error

    def countOf(self, name: str) -> int:
        return sum(1 for a in self.actions if a.name == name)

    def _run(self) -> None:
        try:
            while True:
                pause = self.random.uniform(*self.interval)
                if time.monotonic() + pause >= self.until:
                    return
                time.sleep(pause)  # the pace of the chaos, not a wait
                self.log.poll()
                self._act(self._choose())
        except BaseException as e:  # reported by join()
            self.error = e

    def _choose(self) -> str:
        names = list(self.WEIGHTS)
        if self.count >= self.maxWorkers:
            names.remove("ttin")
        if self.count <= self.minWorkers:
            names.remove("ttou")
        return self.random.choices(names, [self.WEIGHTS[n] for n in names])[0]

    def _victims(self) -> list[int]:
        pids = [p for p in childrenOf(self.cluster.pid) if p not in self.stopped]
        if self.targets == "listening":
            pids = [
                p
                for p in pids
                if (seen := self.log.byPid.get(p)) and seen.listening and not seen.dead
            ]
        return sorted(pids)

    def _act(self, name: str) -> None:
        if self.cluster.process is None or self.cluster.process.poll() is not None:
            return
        if name in ("kill", "stop"):
            victims = self._victims()
            if not victims:
                return
            pid = self.random.choice(victims)
            number = signal.SIGKILL if name == "kill" else signal.SIGSTOP
            target = self.log.describe(pid)
            now = time.monotonic()
            (self.killed if name == "kill" else self.stopped)[pid] = now
            self.actions.append(Action(now, name, pid, target))
            try:
                os.kill(pid, number)
            except ProcessLookupError:
                pass
            return
        if name == "hup":
            pending = self.hups > (
                self.log.counts["reloads started"] + self.log.counts["not reloading"]
            )
            if pending or self.log.reloading:
                self.hupsSkipped += 1
                return
            self.hups += 1
        elif name == "ttin":
            self.count += 1
        elif name == "ttou":
            self.count -= 1
        signals = {"hup": signal.SIGHUP, "ttin": signal.SIGTTIN, "ttou": signal.SIGTTOU}
        self.actions.append(Action(time.monotonic(), name))
        self.cluster.signal(signals[name])


# Attribution


@dataclass
class Records:
    """
    What the workers recorded (tests/apps/chaos.tac): by client port, each
    accept as (time, pid), and each close as (time, pid, bytes received,
    requests answered), in time order.
    """

    accepts: dict[int, list[tuple[float, int]]]
    closes: dict[int, list[tuple[float, int, int, int]]]

    def closeOf(self, port: int, pid: int, accepted: float) -> str:
        """
        How the worker saw the connection it accepted then end.
        """
        for t, who, received, answered in self.closes.get(port, []):
            if who == pid and t >= accepted:
                return (
                    f"pid {pid} saw it close {t - accepted:.2f}s after the accept, "
                    f"having received {received} bytes and answered {answered}"
                )
        return f"pid {pid} recorded no close"


def readRecords(connDir: Path) -> Records:
    records = Records({}, {})
    for path in connDir.glob("conns-*"):
        for line in path.read_text().splitlines():
            parts = line.split()  # one os.write each: never cut
            port, pid, t = int(parts[0]), int(parts[1]), float(parts[2])
            if len(parts) == 3:
                records.accepts.setdefault(port, []).append((t, pid))
            elif len(parts) == 6 and parts[3] == "lost":
                close = (t, pid, int(parts[4]), int(parts[5]))
                records.closes.setdefault(port, []).append(close)
    for accepts in records.accepts.values():
        accepts.sort()
    for closes in records.closes.values():
        closes.sort()
    return records


@dataclass
class Verdict:
    """
    A failure, the workers that had accepted its connection, and why it is
    allowed or a defect: C{killed}, C{stopped} (allowed), C{refused},
    C{retired}, C{untouched}, C{unattributed} (defects).
    """

    failure: Failure
    pids: list[int]
    why: str
    late: bool = False  # accepted only after the client had given up
    seen: list[str] = field(default_factory=list)  # how the workers saw it
    inferred: bool = False  # the accepting pid is inferred, not recorded

    @property
    def allowed(self) -> bool:
        return self.why in ("killed", "stopped")

    def describe(self, start: float) -> str:
        f = self.failure
        late = ", only after the client gave up" if self.late else ""
        seen = "".join(f"; {s}" for s in self.seen)
        return (
            f"{self.why}: {f.client} {f.kind} at +{f.time - start:.2f}s "
            f"(connected at +{f.started - start:.2f}s, client port {f.port}, "
            f"accepted by {self.pids or 'no worker'}{late}{seen}): {f.detail}"
        )


def attribute(
    failures: Iterable[Failure],
    records: Records,
    driver: Driver,
    log: LogWatch,
    clock: float,
) -> list[Verdict]:
    """
    The verdict on each failure.  C{clock} is C{time.time() -
    time.monotonic()}, to place the log's lines on the clients' clock.
    """
    verdicts = []
    retired = log.retired
    for f in failures:
        if f.kind == "refused":
            verdicts.append(Verdict(f, [], "refused"))
            continue
        pids: list[int] = []
        seen: list[str] = []
        late = False
        if f.port is not None:
            end = f.nextUse if f.nextUse is not None else float("inf")
            for t, pid in records.accepts.get(f.port, []):
                if f.started - _SLACK <= t < end:
                    pids.append(pid)
                    seen.append(records.closeOf(f.port, pid, t))
                    late = late or t > f.time
        if f.pid is not None and f.pid not in pids:
            pids.append(f.pid)
        if not pids:
            verdicts.append(_unrecorded(f, driver, log, clock))
            continue
        why = "untouched"
        for pid in pids:
            stopped, killed = driver.stopped.get(pid), driver.killed.get(pid)
            if stopped is not None and stopped <= f.time:
                why = "stopped"
                break
            if killed is not None and killed <= f.time:
                why = "killed"
                break
            if pid in retired:
                why = "retired"
        seen += [f"pid {p} was retired ({retired[p]})" for p in pids if p in retired]
        verdicts.append(Verdict(f, pids, why, late, seen))
    return verdicts


ACCEPT_WINDOW = 0.05
"""Seconds after a connection began within which a worker that accepted it
may be stopped or killed before its record is written (the accept and the
record are one Python call apart)."""


def _unrecorded(f: Failure, driver: Driver, log: LogWatch, clock: float) -> Verdict:
    """
    A failure no worker recorded: unattributed, unless a worker was killed
    or stopped within L{ACCEPT_WINDOW} after the connection began and the
    connection broke (reset, empty reply) as that worker died: then that
    worker had accepted it and had not yet written its record.
    """
    if f.kind in ("reset", "empty reply"):
        for a in driver.actions:
            if a.pid is None or a.time < f.started - _SLACK:
                continue
            if a.time > f.started + ACCEPT_WINDOW:
                break
            seen = log.byPid.get(a.pid)
            if a.name == "kill" and (seen is None or seen.deadAt is None):
                died = a.time  # dies at once: the log may not have named it
            elif seen is not None and seen.deadAt is not None:
                died = seen.deadAt - clock  # a whole second, rounded down
            else:
                continue
            if died - 0.5 <= f.time <= died + 1.5:
                why = "killed" if a.name == "kill" else "stopped"
                note = (
                    f"unrecorded: pid {a.pid} was {why} "
                    f"{(a.time - f.started) * 1000:.0f} ms after the connection "
                    f"began and the connection broke as it died"
                )
                return Verdict(f, [a.pid], why, seen=[note], inferred=True)
    return Verdict(f, [], "unattributed")


# A whole run


@dataclass
class ChaosResult:
    scheduling: str
    seed: int
    seconds: float
    clients: Clients
    driver: Driver
    log: LogWatch
    verdicts: list[Verdict]
    start: float
    notes: list[str] = field(default_factory=list)

    @property
    def defects(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.allowed]

    def byWhy(self) -> Counter[str]:
        return Counter(v.why for v in self.verdicts)

    def problems(self) -> list[str]:
        """
        Every defect found, one line each.
        """
        return [v.describe(self.start) for v in self.defects] + self.notes

    def stoppedAlive(self) -> list[int]:
        return sorted(p for p in self.driver.stopped if processExists(p))

    def timeline(self) -> list[str]:
        """
        The driver's kills and stops, with what the log said of each target
        then and now.
        """
        self.log.poll()
        return [
            f"+{a.time - self.start:.2f}s {a.name} pid {a.pid} ({a.target}; "
            f"now {self.log.describe(a.pid)}"
            f"{', alive' if processExists(a.pid) else ''})"
            for a in self.driver.actions
            if a.pid is not None
        ]

    def summary(self, timeline: bool = True) -> str:
        c, d, counts = self.clients, self.driver, self.log.counts
        kinds = Counter(v.failure.kind for v in self.verdicts)
        allowedKinds = Counter(v.failure.kind for v in self.verdicts if v.allowed)
        stoppedHung = sum(
            1 for p in d.stopped if (w := self.log.byPid.get(p)) and w.hung
        )
        lines = [
            f"chaos --scheduling {self.scheduling}, seed {self.seed}, "
            f"{self.seconds:.0f}s of chaos (targets: {d.targets})",
            f"  requests {c.requests}: answered {sum(c.answers.values())} by "
            f"{len(c.answers)} workers, failed {len(c.failures)} "
            f"({c.connections} connections; {c.closes} keep-alive closes)",
            f"  failed by cause: {dict(sorted(kinds.items()))}",
            f"  allowed (killed or stopped): {dict(sorted(allowedKinds.items()))}",
            f"  verdicts: {dict(sorted(self.byWhy().items()))}",
            f"  refused {kinds['refused']}",
            f"  kills {d.countOf('kill')}, stops {d.countOf('stop')} (found hung "
            f"{stoppedHung}, still alive {len(self.stoppedAlive())})",
            f"  SIGHUP sent {d.hups} (skipped {d.hupsSkipped}): reloads started "
            f"{counts['reloads started']}, done {counts['reloads done']}, aborted "
            f"{counts['reloads aborted']}, 'Not reloading' {counts['not reloading']}",
            f"  scale events: SIGTTIN {d.countOf('ttin')} (scaled up "
            f"{counts['scaled up']}), SIGTTOU {d.countOf('ttou')} (scaled down "
            f"{counts['scaled down']}); wanted at the end {d.count}",
            "  log: "
            + ", ".join(
                f"{name} {counts[name]}"
                for name in [*LogWatch.PHRASES, "tracebacks"][6:]
            ),
        ]
        hungUntouched = [
            w.pid
            for w in self.log.workers.values()
            if w.hung and w.pid not in d.stopped
        ]
        if hungUntouched:
            lines.append(f"  found hung, never stopped: pids {hungUntouched}")
        lines += [
            f"  INFERRED {v.describe(self.start)}" for v in self.verdicts if v.inferred
        ]
        lines += [f"  DEFECT {line}" for line in self.problems()]
        if timeline:
            lines += [f"  {line}" for line in self.timeline()]
        return "\n".join(lines)


def runChaos(
    cluster: Cluster,
    port: int,
    connDir: Path,
    scheduling: str,
    seconds: float,
    seed: int,
    workers: int,
    fresh: int = 2,
    keepAlive: int = 2,
    tail: float = 3.0,
    targets: str = "any",
    recovery: float = 15.0,
    progress: Callable[[str], None] | None = None,
    every: float = 60.0,
) -> ChaosResult:
    """
    Run the clients for C{seconds} + C{tail} and the driver for C{seconds},
    wait for every client to end and (up to C{recovery} seconds) for the
    cluster to recover, and attribute every failure.  With C{progress}, say
    how it goes every C{every} seconds.
    """
    log = LogWatch(cluster)
    log.poll()
    start = time.monotonic()
    clock = time.time() - start
    clients = Clients(port, start + seconds + tail, fresh, keepAlive).start()
    driver = Driver(
        cluster, log, start + seconds, seed, workers, targets=targets
    ).start()
    if progress is not None:
        while driver.running():
            driver._thread.join(every)
            progress(
                f"+{time.monotonic() - start:.0f}s: "
                f"{sum(clients.answers.values())} answered, "
                f"{len(clients.failures)} failed, {len(driver.actions)} actions"
            )
    driver.join()
    clients.join()
    result = ChaosResult(scheduling, seed, seconds, clients, driver, log, [], start)
    _recover(cluster, port, result, recovery)
    log.poll()
    result.verdicts = attribute(
        clients.failures, readRecords(connDir), driver, log, clock
    )
    return result


def _recover(cluster: Cluster, port: int, result: ChaosResult, timeout: float) -> None:
    """
    After the chaos: every stopped worker is killed by the cluster (the
    watchdog's --timeout and kill grace are long past), the master runs, and
    the port is served.  What is not so goes in C{result.notes}.  (Only
    then are connections counted: one a stopped worker held may be handed
    to another worker when it dies.)
    """
    try:
        waitFor(
            lambda: not result.stoppedAlive(),
            timeout=timeout,
            what="the stopped workers to be killed",
        )
    except AssertionError:
        result.log.poll()
        for pid in result.stoppedAlive():
            result.notes.append(
                f"stopped at +{result.driver.stopped[pid] - result.start:.2f}s, "
                f"never killed: pid {pid} (then {_targetOf(result.driver, pid)}; "
                f"now {result.log.describe(pid)})"
            )
    if cluster.process is None or cluster.process.poll() is not None:
        result.notes.append("the master has exited")
        return
    try:
        waitFor(lambda: servingPids(port, 5), timeout=timeout, what="an answer")
    except AssertionError:
        result.notes.append(f"nobody serves port {port} {timeout}s after the chaos")


def _targetOf(driver: Driver, pid: int) -> str:
    return next((a.target for a in driver.actions if a.pid == pid), "?")
