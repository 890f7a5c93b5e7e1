"""
C{--reload-on-change} (contract §7): a change to the app's files reloads the
workers within a second; a change that breaks the app leaves the old
workers serving.
"""

from __future__ import annotations

import os
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import pytest

from twisted_cluster.worker.watch import ChangeWatcher

from .support import Cluster, Load, freePort, get, waitFor

TAC = """\
import os

from twisted.application import internet, service
from twisted.web import resource, server

import greeting


class Greet(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        return f"{greeting.TEXT} {os.getpid()}\\n".encode()


application = service.Application("greet")
internet.TCPServer(
    int(os.environ["PORT"]), server.Site(Greet()), interface="127.0.0.1"
).setServiceParent(application)
"""


class _Reactor:
    """
    What the watcher needs of a reactor: its watching thread calls in
    through C{callFromThread}, here run at once and recorded.
    """

    def __init__(self) -> None:
        self.triggers: list[object] = []

    def callFromThread(self, f: Callable[..., object], *args: object) -> None:
        f(*args)

    def addSystemEventTrigger(self, *args: object) -> None:
        self.triggers.append(args)


def _watcher(tmp_path: Path) -> tuple[ChangeWatcher, list[str], list[bool], Path, Path]:
    given, code, installed = (tmp_path / n for n in ("app.tac", "mod.py", "lib.py"))
    for path in (given, code, installed):
        path.write_text("x = 1\n")
    modules = {
        "mod": types.ModuleType("mod"),
        "lib": types.ModuleType("lib"),
        "builtin": sys,
    }
    modules["mod"].__file__ = str(code)
    modules["lib"].__file__ = str(installed)
    changes: list[str] = []
    watching = [True]
    watcher = ChangeWatcher(
        _Reactor(),
        [str(given)],
        lambda: watching[0],
        changes.append,
        modules=modules,
        installation=(str(installed),),
    )
    return watcher, changes, watching, given, code


def test_watchedFiles(tmp_path: Path) -> None:
    """
    The files watched are those given and the imported modules' outside the
    installation.
    """
    watcher, _, _, given, code = _watcher(tmp_path)
    assert watcher.watched() == {str(given), str(code)}


@pytest.mark.timeout(30)
def test_watcherTellsOfChanges(tmp_path: Path) -> None:
    """
    A changed watched file is told, once per burst of writes; editors' swap
    and backup files, C{__pycache__} and files not watched are not; after
    C{stop} the thread ends.
    """
    watcher, changes, _, given, code = _watcher(tmp_path)
    watcher.start()
    try:
        waitFor(watcher.ready.is_set, what="the watch")
        for n in range(3):  # one save, in three writes
            code.write_text(f"x = {n}\n")
        waitFor(lambda: changes == [str(code)], what="the change")
        (tmp_path / ".mod.py.swp").write_text("swap")
        (tmp_path / "mod.py~").write_text("backup")
        (tmp_path / "lib.py").write_text("x = 2\n")
        (tmp_path / "__pycache__").mkdir()
        (tmp_path / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"pyc")
        os.unlink(given)
        waitFor(lambda: len(changes) == 2, what="the second change")
        assert changes == [str(code), str(given)]
    finally:
        watcher.stop()
    assert watcher.thread is not None
    waitFor(lambda: not watcher.thread.is_alive(), what="the thread to end")


def test_notToldWhileNotWatching(tmp_path: Path) -> None:
    """
    A change heard while C{watching()} is false (a worker not in slot 1) is
    not told.
    """
    watcher, changes, watching, _, code = _watcher(tmp_path)
    watching[0] = False
    watcher._changed(str(code))
    assert changes == []
    watching[0] = True
    watcher._changed(str(code))
    assert changes == [str(code)]


def greetings(port: int, text: str, count: int = 2) -> set[int]:
    """
    Ask until C{count} different workers answer C{text}; their pids.
    """
    seen: set[int] = set()

    def enough() -> bool:
        try:
            said, pid = get(port, timeout=5).split()
        except OSError:
            return False  # not listening yet: waitFor's deadline bounds this
        if said == text:
            seen.add(int(pid))
        return len(seen) >= count

    waitFor(enough, what=f"{count} workers saying {text}")
    return seen


@pytest.mark.timeout(90)
def test_reloadOnChange(tmp_path: Path, cluster: Callable[..., Cluster]) -> None:
    app = tmp_path / "greet.tac"
    app.write_text(TAC)
    module = tmp_path / "greeting.py"
    module.write_text("TEXT = 'hello'\n")
    port = freePort()
    c = cluster(app, env={"PORT": str(port)}, args=["--reload-on-change"])
    first = greetings(port, "hello")
    with Load(port) as load:
        changed = time.monotonic()
        module.write_text("TEXT = 'bonjour'\n")
        waitFor(lambda: "Reloading" in c.log(), what="the reload to begin")
        assert time.monotonic() - changed < 2.0
        second = greetings(port, "bonjour")
        assert not first & second
        waitFor(lambda: c.log().count("Reload done") == 1, what="the reload")
    # Every worker replaced, and no request lost meanwhile.
    assert load.answers and not load.failures, load.failures[:3]

    # A change that breaks the app: the old workers go on serving.
    module.write_text("TEXT = (\n")
    waitFor(lambda: "Reload aborted" in c.log(), what="the reload to fail")
    assert greetings(port, "bonjour") == second
    assert set(c.workerPids()) == second

    # Mended, it reloads again.
    module.write_text("TEXT = 'hallo'\n")
    greetings(port, "hallo")
