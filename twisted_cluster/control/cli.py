"""
C{twisted-cluster}: see and steer a running cluster through its control
socket.

    twisted-cluster [--control PATH] status [--json] [--watch]
    twisted-cluster [--control PATH] reload
    twisted-cluster [--control PATH] scale N|+N|-N
    twisted-cluster [--control PATH] stop [--now]
    twisted-cluster [--control PATH] send ID|all JSON
    twisted-cluster [--control PATH] upgrade

Exit status: 0 when done; 1 with one line saying why when the cluster is
not there, may not be used, or refused or failed the command; 2 for bad
arguments.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from .paths import defaultControlPath

PROG = "twisted-cluster"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: {message} (see {PROG} --help)\n")


def _scaleCount(text: str) -> tuple[int, bool]:
    if not re.fullmatch(r"[+-]?\d{1,6}", text):
        raise argparse.ArgumentTypeError(f"scale takes N, +N or -N, not {text!r}")
    return int(text), text[0] in "+-"


def _workerId(text: str) -> int:
    if text == "all":
        return 0
    if not re.fullmatch(r"\d{1,9}", text) or int(text) == 0:
        raise argparse.ArgumentTypeError(f"a worker id or 'all', not {text!r}")
    return int(text)


def _json(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e}): {text!r}") from None


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="See and steer a running twisted-cluster.")
    p.add_argument(
        "--control",
        metavar="PATH",
        help="the master's control socket (default: ./twistd.ctl)",
    )
    commands = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status = commands.add_parser("status", help="a row per worker, the master's")
    status.add_argument("--json", action="store_true", help="as one JSON document")
    status.add_argument("--watch", action="store_true", help="refresh every second")
    commands.add_parser("reload", help="replace every worker, as SIGHUP does")
    scale = commands.add_parser("scale", help="run N workers, or N more or fewer")
    scale.add_argument("count", type=_scaleCount, metavar="N|+N|-N")
    stop = commands.add_parser("stop", help="stop the cluster, as SIGTERM does")
    stop.add_argument("--now", action="store_true", help="at once, as SIGQUIT")
    send = commands.add_parser("send", help="send workers a message")
    send.add_argument("worker", type=_workerId, metavar="ID|all")
    send.add_argument("message", type=_json, metavar="JSON")
    commands.add_parser(
        "upgrade", help="replace the master's code in place, as SIGUSR2 does"
    )
    return p


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise Failed(f"no cluster is running at {path}") from None
    except OSError as e:
        sock.close()
        raise Failed(f"cannot open {path}: {e.strerror or e}") from None
    return sock


class Failed(Exception):
    """
    What to say, on one line, before exiting 1.
    """


def main(argv: Sequence[str] | None = None) -> NoReturn:
    options = parser().parse_args(argv)
    path = options.control or defaultControlPath(None)
    try:
        sock = _connect(path)
        code = _run(options, sock, path)
    except Failed as e:
        sys.stderr.write(f"{PROG}: {e}\n")
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


def _run(options: argparse.Namespace, sock: socket.socket, path: str) -> int:
    # Twisted only now: a bad argument or a missing cluster answers at once.
    from ..master.lean import withoutTLS

    with withoutTLS():
        from twisted.internet import reactor

        from .client import Client

    client = Client(reactor, sock, out=sys.stdout)
    return client.run(_action(options, client, path))


def _action(options: argparse.Namespace, client: Any, path: str) -> Callable[[], Any]:
    command = options.command
    if command == "upgrade":
        return lambda: client.upgrade(path)
    if command == "status":
        return lambda: client.status(asJSON=options.json, watch=options.watch)
    if command == "reload":
        return client.reload
    if command == "scale":
        count, relative = options.count
        return lambda: client.scale(count, relative)
    if command == "stop":
        return lambda: client.stop(now=options.now)
    return lambda: client.send(options.worker, options.message)
