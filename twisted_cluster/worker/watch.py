"""
C{--reload-on-change}: a worker watches the app's files, and asks its master
for a rolling reload (C{SIGHUP}, as C{kill -HUP} would) when one changes.

The files are the C{.tac} and the Python modules the worker has imported
from outside the interpreter's installation (not the standard library, not
what is installed in the venv): the app's own code.  C{watchfiles} (inotify
on Linux) watches their directories from a thread of its own, debounced,
ignoring what editors and Python write beside them (swap files, backups,
C{__pycache__}); the reactor hears of a change through C{callFromThread}.
Only one worker asks (the one in slot 1): every worker sees the same change.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import Any

from twisted.logger import Logger

_log = Logger(namespace="twisted_cluster.worker.watch")


def _installation() -> tuple[str, ...]:
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    return tuple(os.path.join(os.path.realpath(p), "") for p in prefixes)


class ChangeWatcher:
    """
    Calls C{onChange(path)} in the reactor when one of the watched files
    changes, while C{watching()} says so.

    @ivar debounce: milliseconds of quiet a burst of changes (an editor's
        save, a checkout) must end with before it counts, once.
    """

    debounce = 300

    def __init__(
        self,
        reactor: Any,
        files: Iterable[str],
        watching: Callable[[], bool],
        onChange: Callable[[str], object],
        modules: Mapping[str, ModuleType | None] = sys.modules,
        installation: tuple[str, ...] | None = None,
    ) -> None:
        self._reactor = reactor
        self._files = [os.path.realpath(f) for f in files]
        self._watching = watching
        self._onChange = onChange
        self._modules = modules
        self._installation = _installation() if installation is None else installation
        self._stopping = threading.Event()
        self.thread: threading.Thread | None = None
        # Set once the files are watched: a change from then on is seen.
        self.ready = threading.Event()

    def watched(self) -> set[str]:
        """
        The files watched: those given, and the imported modules' files
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

    def start(self) -> None:
        """
        Watch the files imported by now, until the reactor stops.
        """
        files = self.watched()
        directories = sorted({os.path.dirname(path) for path in files})
        self.thread = threading.Thread(
            target=self._watch,
            args=(directories, files),
            name="twisted-cluster: watching the app's files",
            daemon=True,
        )
        self.thread.start()
        self._reactor.addSystemEventTrigger("before", "shutdown", self.stop)

    def stop(self) -> None:
        self._stopping.set()

    def _watch(self, directories: list[str], files: set[str]) -> None:
        # In the watching thread: it touches nothing of the reactor's but
        # callFromThread.
        import watchfiles

        for changes in watchfiles.watch(
            *directories,
            recursive=False,
            debounce=self.debounce,
            stop_event=self._stopping,
            raise_interrupt=False,
            # An empty set now and then says the watch is in place.
            rust_timeout=200,
            yield_on_timeout=True,
        ):
            self.ready.set()
            changed = sorted(
                path for _, path in changes if os.path.realpath(path) in files
            )
            if changed:
                self._reactor.callFromThread(self._changed, changed[0])

    def _changed(self, path: str) -> None:
        if self._watching():
            self._onChange(path)


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
