"""
C{--reload-on-change}: a worker watches the app's files, and asks its master
for a rolling reload (C{SIGHUP}, as C{kill -HUP} would) when one changes.

The files are the C{.tac} and the Python modules the worker has imported
from outside the interpreter's installation (not the standard library, not
what is installed in the venv): the app's own code.  Twisted has no file
watcher and inotify would need a dependency, so they are polled: a
C{stat} each per L{ChangeWatcher.interval}, a few hundred files at most.
Only one worker asks (the one in slot 1): every worker sees the same change.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import Any

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

_log = Logger(namespace="twisted_cluster.worker.watch")

#: What a file looks like, to see that it changed: its mtime and size, or
#: None when it is gone.
Look = tuple[int, int] | None


def _installation() -> tuple[str, ...]:
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    return tuple(os.path.join(os.path.realpath(p), "") for p in prefixes)


def _look(path: str) -> Look:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_mtime_ns, found.st_size


class ChangeWatcher:
    """
    Calls C{onChange(path)} when one of the watched files changes, while
    C{watching()} says so (a change seen otherwise is only remembered).

    @ivar interval: seconds between two looks at the files.
    """

    interval = 0.5

    def __init__(
        self,
        clock: Any,
        files: Iterable[str],
        watching: Callable[[], bool],
        onChange: Callable[[str], object],
        modules: Mapping[str, ModuleType | None] = sys.modules,
        installation: tuple[str, ...] | None = None,
    ) -> None:
        self._files = [os.path.realpath(f) for f in files]
        self._watching = watching
        self._onChange = onChange
        self._modules = modules
        self._installation = _installation() if installation is None else installation
        self._seen: dict[str, Look] = {}
        self._loop = LoopingCall(self.check)
        self._loop.clock = clock

    def start(self) -> None:
        # The first look, at once, is what later ones are compared with.
        self._loop.start(self.interval, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def watched(self) -> set[str]:
        """
        The files watched now: those given, and the imported modules' files
        outside the installation.
        """
        paths = set(self._files)
        for module in list(self._modules.values()):
            path = getattr(module, "__file__", None)
            if not isinstance(path, str):
                continue
            path = os.path.realpath(path)
            if not path.startswith(self._installation):
                paths.add(path)
        return paths

    def check(self) -> None:
        changed = []
        for path in self.watched():
            look = _look(path)
            if path in self._seen and self._seen[path] != look:
                changed.append(path)
            self._seen[path] = look
        if changed and self._watching():
            self._onChange(sorted(changed)[0])


def askForReload(master: int) -> Callable[[str], None]:
    """
    What to do on a change: have the master (process C{master}, this
    worker's parent) reload its workers, as C{kill -HUP} would.
    """

    def ask(path: str) -> None:
        if os.getppid() != master:
            return  # The master is gone: its pid is no longer ours to signal.
        _log.info("{path} changed: asking the master for a reload", path=path)
        os.kill(master, signal.SIGHUP)

    return ask
