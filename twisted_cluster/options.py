"""
The command line of C{twistd cluster}: its options, checked and converted,
and the plugin or C{.tac} it runs (L{twisted_cluster.tap} builds the
cluster from them).
"""

from __future__ import annotations

import getopt
import importlib
import importlib.util
import math
import os
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from twisted.python import usage

from .config import readConfig
from .cpus import usableCPUs
from .envfile import WorkerEnvironment, parseAssignment
from .limits import MAX_MESSAGE_SIZE
from .logformat import FORMATS, JSON, TEXT
from .master.listeners import parseBind
from .master.logs import chooseJSON
from .master.scheduling import SCHEDULING

if TYPE_CHECKING:
    pass


def quantity(
    convert: Callable[[str], float], minimum: float, unit: str, above: bool = False
) -> Callable[[str], Any]:
    """
    An option's coercer: a finite number of C{unit} (C{convert} reads it),
    at least C{minimum} (more than it, with C{above}).
    """
    bound = f"{'more than' if above else 'at least'} {minimum:g}"
    what = f"{unit}, {bound}"

    def coerce(value: str) -> float:
        try:
            number = convert(value)
        except ValueError:
            raise ValueError(f"must be {unit}, not {value!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"must be {what}, not {value!r}")
        if not (number > minimum if above else number >= minimum):
            raise ValueError(f"must be {bound}, not {value}")
        return number

    coerce.coerceDoc = what[0].upper() + what[1:] + "."  # type: ignore[attr-defined]
    return coerce


positiveInt = quantity(int, 1, "a whole number")
nonNegativeInt = quantity(int, 0, "a whole number")
seconds = quantity(float, 0, "seconds")
megabytes = quantity(float, 0, "megabytes", above=True)
nonNegativeMegabytes = quantity(float, 0, "megabytes")

MEGABYTE = 1024 * 1024


def _named(parameters: list[list[Any]]) -> list[list[Any]]:
    # twistd says "Parameter type enforcement failed" and not which option.
    def naming(option: str, coerce: Callable[[str], Any]) -> Callable[[str], Any]:
        def named(value: str) -> Any:
            try:
                return coerce(value)
            except ValueError as e:
                raise ValueError(f"--{option}: {e}") from None

        named.coerceDoc = getattr(coerce, "coerceDoc", "")  # type: ignore[attr-defined]
        return named

    return [
        [*p[:4], naming(p[0], p[4]), *p[5:]] if len(p) > 4 else p for p in parameters
    ]


class Options(usage.Options):
    synopsis = (
        "[options] --app server.tac\n"
        "   or: twistd [twistd options] cluster [options] PLUGIN [plugin options]"
    )
    longdesc = (
        "Run an unchanged Twisted application on N worker processes that share "
        "its listening ports: a .tac (--app), or any twistd plugin, as "
        "'twistd PLUGIN [plugin options]' would run it (twistd cluster -w 4 web "
        "--listen tcp:8080 --path /srv/www). The master binds every address the "
        "app listens on and hands the socket to each worker; it replaces "
        "workers that die."
    )
    optFlags = [
        [
            "reload-on-change",
            None,
            "Reload the workers (rolling, as SIGHUP) within a second of a change "
            "to the app's files: the .tac and the modules workers imported from "
            "outside Python's installation. For development.",
        ]
    ]
    optParameters = _named(
        [
            [
                "app",
                "a",
                None,
                "The .tac file each worker runs (as twistd -y would); or name a "
                "plugin after the options instead.",
            ],
            [
                "config",
                None,
                None,
                "A TOML file of options by their long names (workers = 4, plugin = "
                '["web", "--listen", "tcp:8080"]); the command line wins.',
            ],
            [
                "env-file",
                None,
                None,
                "A .env file (NAME=VALUE lines) of variables every worker gets; "
                "read again at each reload.",
            ],
            [
                "workers",
                "w",
                None,
                "How many workers [default: the CPUs this process may use].",
                positiveInt,
            ],
            [
                "graceful-timeout",
                None,
                30.0,
                "Seconds a stopping worker gets to finish its requests before it is "
                "killed.",
                seconds,
            ],
            [
                "timeout",
                "t",
                30.0,
                "Seconds a worker's reactor may go without answering a heartbeat "
                "before the worker is killed and replaced (0: never).",
                seconds,
            ],
            [
                "boot-timeout",
                None,
                60.0,
                "Seconds a new worker's app may take to start before the worker "
                "is killed (0: never).",
                seconds,
            ],
            [
                "max-age",
                None,
                0.0,
                "Recycle each worker (gracefully, after starting its replacement) "
                "after about this many seconds (0: never).",
                seconds,
            ],
            [
                "max-memory",
                None,
                0.0,
                "Recycle a worker whose resident set exceeds this many megabytes "
                "(0: no limit).",
                nonNegativeMegabytes,
            ],
            [
                "spares",
                None,
                1,
                "Warm spare workers: loaded and waiting, each replaces a dead worker "
                "(or adds one) in moments.",
                nonNegativeInt,
            ],
            [
                "scheduling",
                None,
                "reuseport",
                "How connections reach workers: reuseport (a socket per worker, "
                "balanced by the kernel; Linux), roundrobin (the master hands each "
                "to the least busy worker), sticky (as roundrobin, but a client "
                "address keeps going to one worker while it lives) or shared "
                "(one socket).",
            ],
            [
                "control",
                None,
                None,
                "The control socket twisted-cluster talks to, owner-only [default: "
                "twistd.ctl beside the pid file]; none: no control socket.",
            ],
            [
                "health",
                None,
                None,
                "Serve GET /health on this endpoint (e.g. tcp:8081:interface=0.0.0.0): "
                "200 while workers serve, 503 while starting, draining or stopping.",
            ],
            [
                "shutdown-delay",
                None,
                0.0,
                "Seconds a graceful stop keeps serving, with /health at 503, before "
                "the workers stop accepting (load balancers stop routing here first).",
                seconds,
            ],
            [
                "metrics",
                None,
                None,
                "Serve Prometheus metrics at /metrics on this endpoint (e.g. "
                "tcp:9100:interface=127.0.0.1): the cluster's, and the workers' own "
                "prometheus_client metrics with a worker_slot label.",
            ],
            [
                "reload-batch",
                None,
                1,
                "Workers a SIGHUP reload replaces at a time.",
                positiveInt,
            ],
            [
                "restart-delay",
                None,
                0.1,
                "Seconds before restarting a worker that crashed soon after starting; "
                "doubles with each such crash in a row.",
                seconds,
            ],
            ["max-restart-delay", None, 30.0, "The longest restart delay.", seconds],
            [
                "stable-after",
                None,
                10.0,
                "Seconds up after which a worker's crash is replaced at once and the "
                "restart delay starts again.",
                seconds,
            ],
            [
                "max-boot-failures",
                None,
                5,
                "Replacements in a row that may fail to start before the master "
                "gives up.",
                positiveInt,
            ],
            [
                "max-message-size",
                None,
                MAX_MESSAGE_SIZE / MEGABYTE,
                "The largest message either way, in megabytes of JSON; a worker "
                "that sends more is cut off and replaced.",
                megabytes,
            ],
            [
                "log-format",
                None,
                TEXT,
                "The log's format: text (twistd's) or json (one JSON object per "
                "line, master and workers alike, each worker's id and slot in "
                "its events).",
            ],
            [
                "master-hook",
                None,
                None,
                "package.module:function, called in the master with the cluster "
                "module (to handle worker events and messages).",
            ],
        ]
    )

    #: The options a configuration file may give many times (as a list).
    repeatable = ("bind", "env")

    def __init__(self) -> None:
        super().__init__()
        self["bind"] = []
        self["env"] = {}
        # The plugin and its arguments, as given after the cluster's options.
        self["plugin"] = None
        self["plugin-args"] = []

    @property
    def subCommands(self) -> Iterator[tuple[str, None, Callable[[], Any], str]]:
        # As twistd's own ServerOptions: every IServiceMaker but this one.
        from twisted.application.service import IServiceMaker
        from twisted.plugin import getPlugins

        for plugin in sorted(getPlugins(IServiceMaker), key=lambda p: p.tapname):
            if plugin.tapname != "cluster":
                yield (plugin.tapname, None, pluginOptions(plugin), plugin.description)

    def opt_env(self, assignment: str) -> None:
        try:
            name, value = parseAssignment(assignment)
        except ValueError as e:
            raise usage.UsageError(f"--env: {e}") from None
        self["env"][name] = value

    opt_env.__doc__ = (
        "NAME=VALUE: a variable every worker gets (over --env-file's); repeatable."
    )

    def opt_bind(self, endpoint: str) -> None:
        try:
            self["bind"].append(parseBind(endpoint))
        except ValueError as e:
            raise usage.UsageError(str(e)) from None

    # One line: usage.Options would keep a docstring's indentation.
    opt_bind.__doc__ = (
        "Bind this address (tcp:80, ssl:443:interface=10.0.0.1, udp:53, "
        "unix:/run/app.sock) before twistd drops privileges (--uid/--gid), for "
        "the app to listen on; repeatable."
    )

    def parseOptions(self, options: list[str] | None = None) -> None:
        # A mistake gets one line, not twistd's whole usage text above it.
        argv = sys.argv[1:] if options is None else list(options)
        if len(argv) > 1 and argv[-2] == "--_shell-completion":
            return super().parseOptions(argv)
        try:
            ours, plugin = self._split(argv)
            super().parseOptions(self._fromConfig(ours, plugin) + ours)
            if self["plugin"] is not None:
                self._parsePlugin()
        except usage.UsageError as e:
            why = str(e).removeprefix("Parameter type enforcement failed: ")
            raise SystemExit(f"twistd cluster: {why} (see --help)") from None
        except _PluginError as e:
            name = self["plugin"]
            raise SystemExit(
                f"twistd cluster {name}: {e} (see twistd cluster {name} --help)"
            ) from None

    def getSynopsis(self) -> str:
        # A plugin's usage begins with ours: one form, not both.
        if self.subCommand is None:
            return str(super().getSynopsis())
        parent = self.parent
        if parent is None or parent.subCommand is None:
            return "twistd cluster [options]"
        return f"{parent.getSynopsis()} {parent.subCommand} [options]"

    def _split(self, argv: list[str]) -> tuple[list[str], list[str]]:
        """
        The cluster's own arguments, and the plugin's: its name and options
        (as usage.Options finds a sub-command, at the first argument that is
        not an option).
        """
        try:
            _, rest = getopt.getopt(argv, self.shortOpt, self.longOpt)
        except getopt.error as e:
            raise usage.UsageError(str(e)) from None
        return argv[: len(argv) - len(rest)], rest

    def _fromConfig(self, ours: list[str], plugin: list[str]) -> list[str]:
        """
        The arguments C{--config} adds before the command line's own; sets
        the plugin: the command line's, else the file's (if no C{--app}).
        """
        opts, _ = getopt.getopt(ours, self.shortOpt, self.longOpt)
        paths = [value for name, value in opts if name == "--config"]
        given = {name for name, _ in opts}
        if paths:
            flags = [name for name in self.longOpt if not name.endswith("=")]
            parameters = [n[:-1] for n in self.longOpt if n.endswith("=")]
            try:
                found = readConfig(
                    paths[-1],
                    [n for n in parameters if n != "config"],
                    [n for n in flags if n not in ("help", "version")],
                    self.repeatable,
                    self._check,
                )
            except ValueError as e:
                raise usage.UsageError(str(e)) from None
            if not plugin and not given & {"--app", "-a"}:
                plugin = found.plugin
                arguments = found.arguments + found.app
            else:
                arguments = found.arguments
        else:
            arguments = []
        if plugin:
            self["plugin"], self["plugin-args"] = plugin[0], plugin[1:]
        return arguments

    def _check(self, name: str, value: str) -> None:
        # A file's wrong value is named by the file and its key.
        for parameter in self.optParameters:
            if parameter[0] == name and len(parameter) > 4:
                try:
                    parameter[4](value)
                except ValueError as e:
                    raise ValueError(str(e).removeprefix(f"--{name}: ")) from None

    def _parsePlugin(self) -> None:
        """
        Parse the plugin's options with its own C{Options}, as twistd would:
        the master checks them; the workers parse them again and build the
        service.
        """
        name = self["plugin"]
        parsers = {command: parser for command, _, parser, _ in self.subCommands}
        if name not in parsers:
            raise usage.UsageError(f"no twistd plugin named {name!r}")
        self.subCommand = name
        self.subOptions = parsers[name]()
        self.subOptions.parent = self
        try:
            self.subOptions.parseOptions(self["plugin-args"])
        except usage.UsageError as e:
            raise _PluginError(str(e)) from None

    def postOptions(self) -> None:
        if self["app"] and self["plugin"] is not None:
            raise usage.UsageError(
                f"--app {self['app']} and plugin {self['plugin']!r}: give one of them"
            )
        if not self["app"] and self["plugin"] is None:
            raise usage.UsageError(
                "--app is required: the .tac file to run (or name a twistd plugin)"
            )
        if self["reload-on-change"] and importlib.util.find_spec("watchfiles") is None:
            raise usage.UsageError(
                "--reload-on-change needs watchfiles: "
                "pip install 'twisted-cluster[reload]'"
            )
        if self["workers"] is None:
            self["workers"] = usableCPUs()
        if self["scheduling"] not in SCHEDULING:
            choices = ", ".join(SCHEDULING)
            raise usage.UsageError(f"--scheduling must be one of {choices}")
        if self["log-format"] not in FORMATS:
            choices = ", ".join(FORMATS)
            raise usage.UsageError(
                f"--log-format must be one of {choices}, not {self['log-format']!r}"
            )
        if self["log-format"] == JSON:
            try:
                chooseJSON(getattr(self, "parent", None))
            except ValueError as e:
                raise usage.UsageError(str(e)) from None
        if self["master-hook"]:
            self["master-hook"] = loadHook(self["master-hook"])
        if self["app"]:
            self["app"] = checkApp(self["app"])
        if self["env-file"] is not None:
            self["env-file"] = os.path.abspath(self["env-file"])
        environment = WorkerEnvironment(self["env"], self["env-file"])
        try:
            environment.read()
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        self["environment"] = environment


class _PluginError(Exception):
    """
    The plugin rejected its options; the message is its own.
    """


def pluginOptions(plugin: Any) -> Callable[[], Any]:
    # Its options attribute may import modules: resolved only when needed.
    return lambda: plugin.options()


def checkApp(path: str) -> str:
    """
    The absolute path of the C{.tac} file C{path}, which must be a file this
    process can read.

    @raise usage.UsageError: saying why it cannot be the app.
    """
    app = os.path.abspath(path)
    if os.path.isdir(app):
        raise usage.UsageError(f"--app {path}: is a directory, not a .tac file")
    try:
        with open(app, "rb"):
            pass
    except FileNotFoundError:
        raise usage.UsageError(f"cannot load {path}: no such file") from None
    except OSError as e:
        raise usage.UsageError(f"--app {path}: {e.strerror or e}") from None
    return app


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
