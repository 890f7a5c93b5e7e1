"""
C{twistd cluster}: the command-line shell over L{twisted_cluster.master}.

    twistd -n cluster --app server.tac --workers 4
"""

from __future__ import annotations

import atexit
import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from .master.master import Master
from .master.supervisor import ClusterService


def usableCPUs() -> int:
    """
    How many CPUs this process may run on.
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def positiveInt(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"must be at least 1, not {number}")
    return number


positiveInt.coerceDoc = "A whole number, at least 1."  # type: ignore[attr-defined]


class Options(usage.Options):
    synopsis = "--app server.tac [--workers N]"
    longdesc = (
        "Run an unchanged Twisted application (.tac) on N worker processes that "
        "share its listening ports. The master binds every address the app "
        "listens on and hands the socket to each worker; it replaces workers "
        "that die."
    )
    optParameters = [
        ["app", "a", None, "The .tac file each worker runs (as twistd -y would)."],
        [
            "workers",
            "w",
            None,
            "How many workers [default: the CPUs this process may use].",
            positiveInt,
        ],
        [
            "master-hook",
            None,
            None,
            "package.module:function, called in the master with the cluster "
            "module (to handle worker events and messages).",
        ],
    ]

    def postOptions(self) -> None:
        if not self["app"]:
            raise usage.UsageError("--app is required: the .tac file to run")
        self["app"] = os.path.abspath(self["app"])
        if self["workers"] is None:
            self["workers"] = usableCPUs()
        if self["master-hook"]:
            self["master-hook"] = loadHook(self["master-hook"])


def loadHook(spec: str) -> Callable[[Any], object]:
    """
    Import the function C{package.module:function} names.

    @raise usage.UsageError: saying why, if it cannot.
    """
    moduleName, _, name = spec.partition(":")
    if not moduleName or not name:
        raise usage.UsageError(
            f"--master-hook {spec!r}: expected package.module:function"
        )
    sys.path.insert(0, os.getcwd())
    try:
        hook = getattr(importlib.import_module(moduleName), name)
    except Exception as e:
        raise usage.UsageError(
            f"--master-hook {spec!r}: {type(e).__name__}: {e}"
        ) from None
    if not callable(hook):
        raise usage.UsageError(f"--master-hook {spec!r}: not a function")
    return hook


class _ExitStatus:
    """
    twistd has no way to exit non-zero after its reactor stops, so a fatal
    error sets the status the interpreter exits with, once everything
    twistd does on the way out (its pid file, its log) is done.
    """

    def __init__(self) -> None:
        self.code = 0
        atexit.register(self._exit)

    def _exit(self) -> None:
        if self.code:
            for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
                try:
                    if stream is not None:
                        stream.flush()
                except (OSError, ValueError):
                    pass
            os._exit(self.code)


def makeService(options: Options, reactor: Any = None) -> IService:
    """
    A L{ClusterService} for the options, on the master of C{cluster}.
    """
    if reactor is None:
        from twisted.internet import reactor
    from . import cluster

    master: Master = cluster.theMaster()
    master.setupMaster(
        exec="",
        execArgv=["-m", "twisted_cluster.worker"],
        args=["--app", options["app"]],
        silent=True,
    )
    if options["master-hook"] is not None:
        options["master-hook"](cluster)
    status = _ExitStatus()

    def fatal(reason: str) -> None:
        stream = sys.__stderr__
        if stream is not None:
            stream.write(f"twisted-cluster: {reason}\n")
            stream.flush()
        status.code = 1
        if reactor.running:
            reactor.stop()
        else:
            reactor.callWhenRunning(reactor.stop)

    service: IService = ClusterService(
        master, options["workers"], reactor, onFatal=fatal
    )
    return service
