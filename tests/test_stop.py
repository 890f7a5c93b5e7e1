"""
No reset on stop: clients opening connections in a tight loop while the
cluster stops gracefully see their requests answered or, once it has
stopped accepting, their connections refused; never a reset, never an
empty reply.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from .support import processExists, waitFor, webCluster


class Hammer:
    """
    Clients that open a connection, send one request and read the answer,
    in a loop, counting what happens, until told to stop (bounded by a
    deadline).
    """

    def __init__(self, port: int, clients: int = 4, deadline: float = 30.0) -> None:
        self.port = port
        self.seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._deadline = time.monotonic() + deadline
        self._threads = [threading.Thread(target=self._run) for _ in range(clients)]
        for thread in self._threads:
            thread.start()

    def _count(self, what: str) -> None:
        with self._lock:
            self.seen[what] += 1

    def _run(self) -> None:
        while not self._done.is_set() and time.monotonic() < self._deadline:
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            except ConnectionRefusedError:
                self._count("refused")
                time.sleep(0.01)  # bounds the loop while nobody listens
                continue
            except OSError as e:
                self._count(f"connect {type(e).__name__}")
                continue
            try:
                sock.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
            except ConnectionResetError:
                self._count("reset")
                continue
            except OSError as e:
                self._count(type(e).__name__)
                continue
            finally:
                sock.close()
            if data.startswith(b"HTTP/1.0 200") or data.startswith(b"HTTP/1.1 200"):
                self._count("ok")
            elif not data:
                self._count("empty")
            else:
                self._count("bad")

    def stop(self) -> None:
        self._done.set()
        for thread in self._threads:
            thread.join(10)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("scheduling", ["reuseport", "shared", "roundrobin"])
def test_noResetOnStop(cluster, tmp_path: Path, scheduling: str) -> None:
    c, port = webCluster(cluster, tmp_path, args=["--scheduling", scheduling])
    hammer = Hammer(port)
    try:
        waitFor(lambda: hammer.seen["ok"] >= 200, timeout=30, what="answers")
        c.signal(signal.SIGTERM)
        assert c.wait(timeout=30) == 0
        assert not processExists(c.pid)
        mark = hammer.seen["refused"]
        waitFor(lambda: hammer.seen["refused"] >= mark + 20, what="refusals")
    finally:
        hammer.stop()
    seen = dict(hammer.seen)
    assert set(seen) == {"ok", "refused"}, seen


@pytest.mark.timeout(30)
def test_stopQueueingDropsOnlyNewHandshakes() -> None:
    """
    Once a listening socket stops queueing, a new client's SYN goes
    unanswered, while a connection queued before is accepted and talks.
    """
    from twisted_cluster.master.listeners import stopQueueing

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        address = listener.getsockname()
        queued = socket.create_connection(address, timeout=5)
        assert stopQueueing(listener)
        late = socket.socket()
        late.settimeout(0.5)
        with pytest.raises(TimeoutError):
            late.connect(address)
        late.close()
        served, _ = listener.accept()
        with served, queued:
            queued.sendall(b"ping")
            assert served.recv(4) == b"ping"
            served.sendall(b"pong")
            assert queued.recv(4) == b"pong"
