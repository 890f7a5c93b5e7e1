"""
C{--config FILE}: the cluster's options in a TOML file, by their long names.

    workers = 4
    graceful-timeout = 10
    bind = ["tcp:80"]
    env = { GREETING = "hello" }
    plugin = ["web", "--listen", "tcp:8080", "--path", "/srv/www"]

The file becomes command-line arguments put before the real ones, so that the
command line wins (and passes the very same checks); C{app} or C{plugin}
counts only when the command line names neither.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

#: The keys that are not options: the command line's sub-command.
PLUGIN = "plugin"


@dataclass
class FileOptions:
    """
    What a configuration file says.

    @ivar arguments: its options, as command-line arguments.
    @ivar app: its C{app}, as arguments (C{["--app", path]}), or empty.
    @ivar plugin: its C{plugin}: the name and the plugin's arguments, or empty.
    """

    arguments: list[str] = field(default_factory=list)
    app: list[str] = field(default_factory=list)
    plugin: list[str] = field(default_factory=list)


def readConfig(
    path: str,
    parameters: Collection[str],
    flags: Collection[str],
    repeatable: Collection[str],
    check: Callable[[str, str], object] = lambda key, value: None,
) -> FileOptions:
    """
    Read the configuration file at C{path}.

    @param parameters: the long names of the options that take a value.
    @param flags: the long names of the options that take none.
    @param repeatable: those of C{parameters} that may be given many times
        (a list in the file; C{env} may be a table too).
    @param check: called with each option's name and value, raises
        C{ValueError} for a wrong value.
    @raise ValueError: in one line, naming the file and the key at fault.
    """
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except OSError as e:
        raise ValueError(f"--config {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"--config {path}: not valid TOML: {e}") from None
    found = FileOptions()
    for key, value in document.items():
        try:
            if key == PLUGIN:
                found.plugin = _plugin(value)
            elif key == "app":
                found.app = ["--app", _scalar(value)]
            elif key in flags:
                found.arguments += _flag(key, value)
            elif key in parameters:
                arguments = _parameter(key, value, key in repeatable)
                for given in arguments[1::2]:
                    check(key, given)
                found.arguments += arguments
            else:
                raise ValueError("unknown key (the keys are the long option names)")
        except ValueError as e:
            raise ValueError(f"--config {path}: {key}: {e}") from None
    return found


def _scalar(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a string or a number, not {_kind(value)}")
    return str(value)


def _flag(key: str, value: Any) -> list[str]:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, not {_kind(value)}")
    return [f"--{key}"] if value else []


def _parameter(key: str, value: Any, repeatable: bool) -> list[str]:
    if not repeatable:
        return [f"--{key}", _scalar(value)]
    if isinstance(value, dict):
        # env = { NAME = "value" }
        value = [f"{name}={_scalar(v)}" for name, v in value.items()]
    elif not isinstance(value, list):
        value = [value]
    return [part for item in value for part in (f"--{key}", _scalar(item))]


def _plugin(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not (
        isinstance(value, list) and value and all(isinstance(v, str) for v in value)
    ):
        raise ValueError(
            'expected a list of strings, the plugin and its options: ["web", '
            '"--listen", "tcp:8080"]'
        )
    return list(value)


def _kind(value: Any) -> str:
    names = {bool: "a boolean", list: "a list", dict: "a table"}
    return names.get(type(value), type(value).__name__)
