"""
Run a C{.tac} in a worker the way C{twistd -y} runs it in one process: load
its C{application}, log, start its services, run the reactor, and stop the
services on the way out.  Its log goes to the master, as JSON on stdout.
Or run a twistd plugin as C{twistd PLUGIN [options]} would: its C{Options}
parse the arguments, its C{makeService} builds the service.

    python -m twisted_cluster.worker --app server.tac
    python -m twisted_cluster.worker --plugin web -- --listen tcp:8080 --path .
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import sys
from typing import Any, NoReturn

from twisted.application import service
from twisted.logger import (
    ILogObserver,
    LegacyLogObserverWrapper,
    Logger,
    globalLogBeginner,
    globalLogPublisher,
)
from twisted.python import log as legacyLog
from twisted.python.components import Componentized
from twisted.python.failure import Failure

from ..logformat import FORMATS, TEXT
from ..titles import setTitle, workerTitle
from . import thisWorker
from .logging import RELAY, workerObserver

_log = Logger(namespace="twisted_cluster.worker")


class BootError(Exception):
    """
    The app could not be started; the message says why, in one line.
    """


def loadApplication(path: str) -> Componentized:
    """
    Load the C{application} of the C{.tac} at C{path}, as C{twistd -y} does.

    @raise BootError: if there is no such file, it does not run, or it
        defines no C{application}.
    """
    if not os.path.isfile(path):
        raise BootError(f"cannot load {path}: no such file")
    try:
        application: Componentized = service.loadApplication(path, "python")
    except KeyError as e:
        if e.args == ("application",):
            raise BootError(f"cannot load {path}: it defines no 'application'") from e
        raise BootError(f"cannot load {path}: {_oneLine(e)}") from e
    except BaseException as e:
        raise BootError(f"cannot load {path}: {_oneLine(e)}") from e
    if service.IService(application, None) is None:
        raise BootError(
            f"cannot load {path}: 'application' is not a twisted Application"
        )
    return application


def pluginApplication(name: str, arguments: list[str]) -> Componentized:
    """
    An application running the service of the twistd plugin C{name} for
    C{arguments}, built as twistd builds it (C{twistd name *arguments}).

    @raise BootError: if there is no such plugin, it rejects the arguments,
        or building its service fails.
    """
    from twisted.plugin import getPlugins

    makers = [m for m in getPlugins(service.IServiceMaker) if m.tapname == name]
    if not makers:
        raise BootError(f"cannot run plugin {name!r}: no twistd plugin of that name")
    maker = makers[0]
    try:
        options = maker.options()
        options.parseOptions(arguments)
        built = maker.makeService(options)
    except SystemExit as e:
        raise BootError(f"cannot run plugin {name!r}: it exited ({e.code})") from e
    except BaseException as e:
        raise BootError(f"cannot run plugin {name!r}: {_oneLine(e)}") from e
    application = service.Application(maker.tapname)
    built.setServiceParent(application)
    return application


def startApplication(application: Componentized, reactor: Any) -> None:
    """
    Start the application's services and have them stop with the reactor.

    @raise BootError: if a service fails to start.
    """
    services = service.IService(application)
    try:
        services.privilegedStartService()
        services.startService()
    except BaseException as e:
        raise BootError(f"cannot start the application: {_oneLine(e)}") from e
    reactor.addSystemEventTrigger("before", "shutdown", services.stopService)


def _appObserver(application: Componentized) -> ILogObserver | None:
    observer = application.getComponent(ILogObserver, None)
    if observer is None:
        legacy = application.getComponent(legacyLog.ILogObserver, None)
        if legacy is not None:
            observer = LegacyLogObserverWrapper(legacy)
    return observer


def _oneLine(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def main(argv: list[str] | None = None) -> NoReturn:
    parser = argparse.ArgumentParser(prog="python -m twisted_cluster.worker")
    app = parser.add_mutually_exclusive_group(required=True)
    app.add_argument("--app", help="the .tac file to run")
    app.add_argument("--plugin", help="the twistd plugin to run")
    parser.add_argument(
        "--watch",
        action="store_true",
        help="in slot 1, ask the master for a reload when the app's files change",
    )
    parser.add_argument(
        "arguments", nargs="*", help="the plugin's arguments (after --)"
    )
    parser.add_argument(
        "--log-to",
        default=RELAY,
        help="where the log goes: relay (to the master), stdout, or a file's path",
    )
    parser.add_argument(
        "--log-format",
        default=TEXT,
        choices=FORMATS,
        help="the log's format: text (twistd's) or json (one object per line)",
    )
    options = parser.parse_args(argv)
    name = options.app or options.plugin

    from twisted.internet import reactor

    # A hung worker is sent SIGABRT first: this dumps where it is stuck.
    faulthandler.enable()
    worker = thisWorker(reactor)

    def retitle(_: object = None) -> None:
        setTitle(workerTitle(worker.id, worker.slot, name, worker.standby))

    retitle()
    ours = workerObserver(
        options.log_to, worker.id, reactor, options.log_format, lambda: worker.slot
    )
    globalLogBeginner.beginLoggingTo([ours], redirectStandardIO=True)
    # As twistd does, so a .tac can import modules beside it.
    sys.path.insert(0, os.path.abspath(os.getcwd()))
    status = [0]

    def failed(e: BootError) -> None:
        cause = e.__cause__ or e
        # As text: an exception's value does not survive the trip as JSON.
        _log.error(
            "Worker {id}: {reason}\n{traceback}",
            id=worker.id,
            reason=str(e),
            traceback=Failure(cause, type(cause), cause.__traceback__).getTraceback(),
        )
        worker.bootFailed(str(e))
        status[0] = 1

    def start(application: Componentized) -> None:
        try:
            startApplication(application, reactor)
        except BootError as e:
            failed(e)
            reactor.stop()
        else:
            worker.ready()

    try:
        # Built now, started later: a spare waits with its app loaded.
        if options.plugin is not None:
            application = pluginApplication(options.plugin, options.arguments)
        else:
            application = loadApplication(options.app)
        theirs = _appObserver(application)
        if theirs is not None:
            globalLogPublisher.addObserver(theirs)
            globalLogPublisher.removeObserver(ours)
    except BootError as e:
        failed(e)
        sys.exit(status[0])
    if options.watch:
        from .watch import ChangeWatcher, askForReload

        ChangeWatcher(
            reactor,
            [] if options.app is None else [options.app],
            lambda: worker.slot == 1,
            askForReload(os.getppid()),
        ).start()
    if worker.standby:
        # A spare: all loaded, it starts the moment the master says so.
        worker.whenStarted().addCallback(retitle).addCallback(
            lambda _: start(application)
        )
    else:
        start(application)
        if status[0]:
            sys.exit(status[0])
    reactor.run()
    sys.exit(status[0])
