"""
The workers' keeper during an upgrade in place: should the master's new
image die before it supervises (a release that fails where the check could
not see), the workers must not go with it.

Just before the exec, the master forks a keeper that holds the master's end
of every worker's lifeline and channel (a worker leaves when either closes)
and drains their output pipes.  The new image tells the keeper it has taken
over, and the keeper exits.  If instead the master process dies first, the
keeper says so in one line and holds on, the workers serving on, until it is
sent SIGTERM (or SIGINT): then it lets go and the workers stop as after
their master's end.
"""

from __future__ import annotations

import os
import select
import signal
from collections.abc import Sequence

TOOK_OVER = b"1"
"""What the new image writes to the keeper once it supervises."""


def keepWorkers(
    held: Sequence[int], pipes: Sequence[int], logPath: str | None
) -> tuple[int, int]:
    """
    Fork a keeper holding the descriptors C{held} and draining C{pipes};
    its pid, and the descriptor the new image writes L{TOOK_OVER} to.
    """
    confirmRead, confirmWrite = os.pipe()
    master = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child; its effects are tested)
        try:
            _keep(master, confirmRead, set(held), list(pipes), logPath)
        finally:
            os._exit(0)
    os.close(confirmRead)
    return pid, confirmWrite


def tookOver(confirm: int) -> None:
    """
    In the new image: tell the keeper this image supervises now.
    """
    try:
        os.write(confirm, TOOK_OVER)
    except OSError:
        pass  # It died: nothing holds the workers but this image, as usual.
    finally:
        os.close(confirm)


def _keep(
    master: int, confirm: int, held: set[int], pipes: list[int], logPath: str | None
) -> None:
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        # The master's handlers need its reactor, which this copy never runs.
        signal.signal(number, signal.SIG_DFL)
    keep = held | set(pipes) | {confirm, 2}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass
    watching = [confirm, *pipes]
    while True:
        readable, _, _ = select.select(watching, [], [])
        for fd in readable:
            data = os.read(fd, 65536)
            if fd != confirm:
                if not data:
                    watching.remove(fd)
                continue
            if data.startswith(TOOK_OVER):
                return
            watching.remove(fd)
            _say(
                f"twisted-cluster: the master (pid {master}) died while "
                f"upgrading in place; its workers serve on, held by pid "
                f"{os.getpid()}: send that pid SIGTERM to stop them, then start "
                "the cluster again",
                logPath,
            )


def _say(line: str, logPath: str | None) -> None:
    try:
        os.write(2, (line + "\n").encode())
    except OSError:
        pass
    if logPath is not None:
        try:
            with open(logPath, "a") as log:
                log.write(line + "\n")
        except OSError:
            pass
