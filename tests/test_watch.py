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
from twisted.internet.task import Clock

from twisted_cluster.worker.watch import ChangeWatcher

from .support import Cluster, freePort, get, waitFor

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


def test_watcher(tmp_path: Path) -> None:
    """
    A changed file, given or a module's, is told once while watching; one
    changed while not watching is only remembered; the installation's
    modules are not watched.
    """
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
    clock = Clock()
    changes: list[str] = []
    watching = [True]
    watcher = ChangeWatcher(
        clock,
        [str(given)],
        lambda: watching[0],
        changes.append,
        modules=modules,
        installation=(str(installed),),
    )
    watcher.start()
    assert watcher.watched() == {str(given), str(code)}
    code.write_text("x = 22\n")
    clock.advance(watcher.interval)
    assert changes == [str(code)]
    clock.advance(watcher.interval)
    assert changes == [str(code)]
    watching[0] = False
    given.write_text("y = 2\n")
    clock.advance(watcher.interval)
    watching[0] = True
    clock.advance(watcher.interval)
    assert changes == [str(code)]
    os.unlink(given)
    clock.advance(watcher.interval)
    assert changes == [str(code), str(given)]
    watcher.stop()


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
    changed = time.monotonic()
    module.write_text("TEXT = 'bonjour'\n")
    waitFor(lambda: "Reloading" in c.log(), what="the reload to begin")
    assert time.monotonic() - changed < 2.0
    second = greetings(port, "bonjour")
    assert not first & second
    waitFor(lambda: c.log().count("Reload done") == 1, what="the reload")

    # A change that breaks the app: the old workers go on serving.
    module.write_text("TEXT = (\n")
    waitFor(lambda: "Reload aborted" in c.log(), what="the reload to fail")
    assert greetings(port, "bonjour") == second
    assert set(c.workerPids()) == second

    # Mended, it reloads again.
    module.write_text("TEXT = 'hallo'\n")
    greetings(port, "hallo")
